// server.workers in one process: the setting and the --workers flag, how the primary combines its workers' views
// (upstreams, usage, metrics), and the spools of former workers. The processes themselves (a primary and its
// workers on one port) are tested end to end in test/e2e/workers.test.ts.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { ConfigError, type UsageRecord } from '@llmproxy/core'
import type { UpstreamSnapshot } from '@llmproxy/upstreams'
import { type UsageStats, usage } from '@llmproxy/usage'
import Fastify, { type FastifyRequest } from 'fastify'
import pino from 'pino'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import { usageRecord, usageStats } from '../../../test/support/usage.js'
import type { Config } from '../src/config.js'
import { buildGateway, parseConfig } from '../src/index.js'
import { ReloadNotAppliedError } from '../src/reload.js'
import {
  aggregateMetrics,
  combineSnapshots,
  combineUsage,
  NO_USAGE_COUNTS,
  RetiredCounts,
  SupervisorMetrics,
} from '../src/workers/aggregate.js'
import type { PrimaryOps, WorkerOps } from '../src/workers/ops.js'
import { applyEverywhere } from '../src/workers/primary.js'
import { type Handlers, Rpc } from '../src/workers/rpc.js'
import { deliverFormerSpools, formerWorkerSpools, workerSpoolDir } from '../src/workers/spools.js'
import { eventually, logSink } from './helpers.js'

const base = (server: string): string => `
server: { ${server} }
upstreams: [{ name: a, url: "http://127.0.0.1:9", protocol: openai }]
models: [{ name: m, upstreams: [a] }]
`

function problemsOf(text: string): { path: string; message: string }[] {
  try {
    parseConfig(text, 'test.yaml', {})
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err))
    return err.problems
  }
  assert.fail('expected a ConfigError')
}

test('server.workers: 1 by default, a count or auto; anything else is refused with its path', async () => {
  assert.equal(parseConfig(base('port: 1'), 't', {}).server.workers, 1)
  assert.equal(parseConfig(base('workers: 4'), 't', {}).server.workers, 4)
  assert.equal(parseConfig(base('workers: auto'), 't', {}).server.workers, 'auto')
  for (const bad of ['0', '-2', '1.5', 'many', '2000']) {
    assert.deepEqual(
      problemsOf(base(`workers: ${bad}`)).map((p) => p.path),
      ['/server/workers'],
      `workers: ${bad}`,
    )
  }
  const { workerCount } = await import('../src/config.js')
  assert.equal(workerCount('auto'), availableParallelism())
  assert.equal(workerCount(3), 3)
})

test('buildGateway runs one process: a config asking for workers is refused, not silently served by one', async () => {
  await assert.rejects(buildGateway(parseConfig(base('workers: 2'), 't', {})), (err: unknown) => {
    assert.ok(err instanceof ConfigError)
    assert.equal(err.problems[0]?.path, '/server/workers')
    assert.match(err.problems[0]?.message ?? '', /llmproxy CLI/)
    return true
  })
})

test('--workers takes a positive integer or auto', () => {
  const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url))
  const run = spawnSync(process.execPath, ['--conditions=llmproxy-source', '--import', 'tsx', cli, '--workers', 'lots'], {
    encoding: 'utf8',
    timeout: 60_000,
  })
  assert.equal(run.status, 1, run.stderr)
  assert.match(run.stderr, /--workers: must be an integer from 1 to 1024, or auto \(got "lots"\)/)
})

test('--port takes 0 to 65535, named as the flag, with a config file and in demo mode', () => {
  const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url))
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-port-flag-'))
  try {
    const file = join(dir, 'c.yaml')
    writeFileSync(file, base('host: 127.0.0.1, port: 0'))
    // With a file the value reached listen() (a RangeError and its stack); in demo mode it was "/server/port".
    for (const [args, port] of [
      [['--config', file, '--port', '80800'], '80800'],
      [['--port', 'abc'], 'abc'],
    ] as const) {
      const run = spawnSync(process.execPath, ['--conditions=llmproxy-source', '--import', 'tsx', cli, ...args], {
        encoding: 'utf8',
        timeout: 60_000,
      })
      assert.equal(run.status, 1, run.stderr)
      assert.equal(run.stderr, `llmproxy: Invalid command line:\n  - --port: must be an integer from 0 to 65535 (got "${port}")\n`)
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('a worker that cannot start stops the gateway: its error printed once, exit 1', async () => {
  const taken = createServer()
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-workers-taken-'))
  try {
    const file = join(dir, 'c.yaml')
    writeFileSync(file, base(`host: 127.0.0.1, port: ${(taken.address() as AddressInfo).port}, workers: 2`))
    const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url))
    const run = spawnSync(process.execPath, ['--conditions=llmproxy-source', '--import', 'tsx', cli, '--config', file], {
      encoding: 'utf8',
      timeout: 120_000,
    })
    assert.equal(run.status, 1, run.stderr)
    const port = (taken.address() as AddressInfo).port
    assert.equal(run.stderr, `llmproxy: Invalid listen address:\n  - /server/port: ${port} is already in use on 127.0.0.1\n`)
  } finally {
    taken.close()
    rmSync(dir, { recursive: true, force: true })
  }
})

test('a quota state file the primary cannot write stops the start, named as in the config file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-workers-quota-'))
  try {
    const file = join(dir, 'c.yaml')
    // sysfs, where no process creates a file (root neither). The primary's refusals named the plugin's path
    // (`Invalid @llmproxy/rate-limit options: /quotaStateFile`), not the file's.
    writeFileSync(
      file,
      `${base('host: 127.0.0.1, port: 0, workers: 2')}auth: { keys: [{ id: k, key: sk-k-0123456789, quota: { tokens: 1000, per: day } }] }
rateLimit: { quotaStateFile: /sys/llmproxy-quota.json }
`,
    )
    const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url))
    const run = spawnSync(process.execPath, ['--conditions=llmproxy-source', '--import', 'tsx', cli, '--config', file], {
      encoding: 'utf8',
      // Had it started, the timeout's SIGTERM stops it: exit 0.
      timeout: 60_000,
    })
    assert.equal(run.status, 1, run.stderr)
    assert.match(
      run.stderr,
      new RegExp(`^llmproxy: Invalid config ${file}:\n {2}- /rateLimit/quotaStateFile: cannot be written: E(ACCES|ROFS|PERM) \\(.*\\)\n$`),
    )
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

const snapshot = (name: string, fields: Partial<UpstreamSnapshot> = {}): UpstreamSnapshot => ({
  name,
  url: `http://${name}`,
  protocol: 'openai',
  state: 'healthy',
  inFlight: 0,
  ewmaTtftMs: null,
  ejections: 0,
  consecutiveFailures: 0,
  recentErrors: 0,
  lastError: null,
  weight: 1,
  maxConcurrency: null,
  heldUntil: null,
  panicPicks: 0,
  ...fields,
})

test('the upstream list of the whole gateway: counts summed, the state most workers see, each worker listed', () => {
  const combined = combineSnapshots([
    { worker: 1, value: [snapshot('a', { inFlight: 2, ewmaTtftMs: 100, ejections: 1, consecutiveFailures: 1 }), snapshot('b')] },
    {
      worker: 2,
      value: [
        snapshot('a', { inFlight: 3, ewmaTtftMs: 300, state: 'ejected', lastError: 'boom', heldUntil: 5 }),
        snapshot('b', { state: 'ejected' }),
      ],
    },
    { worker: 3, value: [snapshot('a', { state: 'ejected', consecutiveFailures: 4, panicPicks: 2 }), snapshot('b')] },
  ])
  const a = combined.find((u) => u.name === 'a')
  assert.deepEqual(
    {
      state: a?.state,
      inFlight: a?.inFlight,
      ewma: a?.ewmaTtftMs,
      ejections: a?.ejections,
      failures: a?.consecutiveFailures,
      lastError: a?.lastError,
      heldUntil: a?.heldUntil,
      panicPicks: a?.panicPicks,
    },
    { state: 'ejected', inFlight: 5, ewma: 200, ejections: 1, failures: 4, lastError: 'boom', heldUntil: 5, panicPicks: 2 },
  )
  assert.deepEqual(a?.workers, [
    { worker: 1, state: 'healthy', inFlight: 2 },
    { worker: 2, state: 'ejected', inFlight: 3 },
    { worker: 3, state: 'ejected', inFlight: 0 },
  ])
  assert.equal(combined.find((u) => u.name === 'b')?.state, 'healthy')
  // A tie goes to the less available state.
  const tie = combineSnapshots([
    { worker: 1, value: [snapshot('a')] },
    { worker: 2, value: [snapshot('a', { state: 'unhealthy' })] },
  ])
  assert.equal(tie[0]?.state, 'unhealthy')
})

test('the usage sink of the whole gateway: summed, the latest delivery, each worker listed; none without a sink', () => {
  const stats = (fields: Partial<UsageStats>) => usageStats({ queueDepth: 1, spoolBytes: 10, delivered: 5, ...fields })
  const combined = combineUsage([
    { worker: 1, value: stats({ lastDeliveryAt: '2026-01-01T00:00:02.000Z' }) },
    { worker: 2, value: stats({ delivered: 7, lastDeliveryAt: '2026-01-01T00:00:01.000Z', lastError: 'HTTP 503' }) },
  ])
  assert.equal(combined.enabled, true)
  if (!combined.enabled) return
  assert.deepEqual(
    [combined.queueDepth, combined.spoolBytes, combined.delivered, combined.lastDeliveryAt, combined.lastError],
    [2, 20, 12, '2026-01-01T00:00:02.000Z', 'HTTP 503'],
  )
  assert.deepEqual(
    combined.workers?.map((w) => [w.worker, w.delivered]),
    [
      [1, 5],
      [2, 7],
    ],
  )
  assert.deepEqual(combineUsage([{ worker: 1, value: null }]), { enabled: false })
})

test("the metrics of the whole gateway: amounts summed, state gauges averaged, the supervisor's own added", async () => {
  const worker = async (requests: number, up: number) => {
    const registry = new Registry()
    const counter = new Counter({ name: 'llmproxy_requests_total', help: 'r', labelNames: ['model'], registers: [registry] })
    counter.inc({ model: 'm' }, requests)
    new Gauge({ name: 'llmproxy_upstream_in_flight', help: 'f', registers: [registry] }).set(requests)
    new Gauge({ name: 'llmproxy_upstream_up', help: 'u', labelNames: ['upstream'], registers: [registry] }).set({ upstream: 'a' }, up)
    return registry.getMetricsAsJSON()
  }
  const supervisor = new SupervisorMetrics('llmproxy_')
  supervisor.set(2)
  supervisor.restarted()
  const text = await aggregateMetrics([await worker(3, 1), await worker(4, 0)], 'llmproxy_', supervisor)
  assert.match(text, /^llmproxy_requests_total\{model="m"\} 7$/m)
  assert.match(text, /^llmproxy_upstream_in_flight 7$/m)
  assert.match(text, /^llmproxy_upstream_up\{upstream="a"\} 0.5$/m)
  assert.match(text, /^llmproxy_workers 2$/m)
  assert.match(text, /^llmproxy_worker_restarts_total 1$/m)
})

test("a gone worker's counters and histograms stay in the totals; its gauges go with it", async () => {
  const worker = async (requests: number) => {
    const registry = new Registry()
    new Counter({ name: 'llmproxy_requests_total', help: 'r', labelNames: ['model'], registers: [registry] }).inc({ model: 'm' }, requests)
    new Gauge({ name: 'llmproxy_upstream_in_flight', help: 'f', registers: [registry] }).set(requests)
    new Histogram({ name: 'llmproxy_ttft_seconds', help: 't', buckets: [1], registers: [registry] }).observe(0.5)
    return registry.getMetricsAsJSON()
  }
  const retired = new RetiredCounts()
  // Seen from the moment a worker is retired, folded or not yet.
  const folded = retired.retire(await worker(5))
  assert.match(
    await aggregateMetrics(retired.views, 'llmproxy_', new SupervisorMetrics('llmproxy_')),
    /^llmproxy_requests_total\{model="m"\} 5$/m,
  )
  await folded
  await retired.retire(await worker(2))
  const text = await aggregateMetrics([await worker(1), ...retired.views], 'llmproxy_', new SupervisorMetrics('llmproxy_'))
  assert.match(text, /^llmproxy_requests_total\{model="m"\} 8$/m)
  assert.match(text, /^llmproxy_ttft_seconds_count 3$/m)
  assert.match(text, /^llmproxy_upstream_in_flight 1$/m)
})

test('worker spools: worker 1 keeps usage.spoolDir, worker k uses worker-k inside it', () => {
  assert.equal(workerSpoolDir('/var/lib/llmproxy/usage', 1), '/var/lib/llmproxy/usage')
  assert.equal(workerSpoolDir('/var/lib/llmproxy/usage', 3), '/var/lib/llmproxy/usage/worker-3')
})

test("the spools of former workers are delivered, then removed, counted in the gateway's usage; the current workers' are left alone", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-former-spools-'))
  const received: UsageRecord[] = []
  let up = false
  const receiver = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      if (!up) return res.writeHead(503).end()
      received.push(...(JSON.parse(Buffer.concat(chunks).toString()) as { records: UsageRecord[] }).records)
      res.writeHead(200).end()
    })
  })
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/usage`
  const usageConfig = {
    webhook: { url, secret: 'former-spools-secret' },
    spoolDir: dir,
    batch: { maxWaitMs: 10 },
    retry: { baseMs: 20, maxMs: 50 },
  }
  const log = pino({ level: 'silent' })
  try {
    // Workers 2 and 3 of an earlier run left records behind (the webhook was down).
    for (const id of [2, 3]) {
      const app = Fastify({ loggerInstance: log })
      await app.register(usage, { ...usageConfig, spoolDir: workerSpoolDir(dir, id), shutdownFlushMs: 0 })
      await app.ready()
      for (let i = 0; i < 3; i++) app.llm.emitUsage(usageRecord({ id: `w${id}-${i}` }), { log } as unknown as FastifyRequest)
      await app.close()
    }
    assert.deepEqual(formerWorkerSpools(dir, 2), [join(dir, 'worker-3')])
    const config = parseConfig(
      JSON.stringify({
        upstreams: [{ name: 'a', url: 'http://127.0.0.1:9', protocol: 'openai' }],
        models: [{ name: 'm', upstreams: ['a'] }],
        usage: usageConfig,
      }),
      't',
      {},
    )
    const former = deliverFormerSpools(config, 2, log)
    const supervisor = new SupervisorMetrics('llmproxy_')
    const exposition = async () => aggregateMetrics(await former.metrics(), 'llmproxy_', supervisor)
    // While the webhook is down, its backlog is in the gateway's usage stats and queue-depth gauge.
    await eventually(() => former.stats()?.queueDepth === 3, 5000, "the former spool's backlog in the stats")
    assert.match(await exposition(), /^llmproxy_usage_queue_depth 3$/m)
    const down = combineUsage([{ worker: 1, value: usageStats({ queueDepth: 2 }) }], NO_USAGE_COUNTS, former.stats())
    assert.equal(down.enabled && down.queueDepth, 5)
    up = true
    await former.done
    assert.deepEqual(received.map((r) => r.id).sort(), ['w3-0', 'w3-1', 'w3-2'])
    // Delivered and removed: what it delivered stays counted, its backlog is gone.
    assert.deepEqual([former.stats()?.queueDepth, former.stats()?.delivered], [0, 3])
    const text = await exposition()
    assert.match(text, /^llmproxy_usage_delivered_total 3$/m)
    assert.doesNotMatch(text, /^llmproxy_usage_queue_depth [1-9]/m)
    assert.equal(existsSync(join(dir, 'worker-3')), false, 'the delivered spool was removed')
    assert.equal(existsSync(join(dir, 'worker-2')), true, 'worker 2 of this run keeps its spool')
    await former.close()
  } finally {
    receiver.close()
    rmSync(dir, { recursive: true, force: true })
  }
})

/**
 * A worker on the other end of an in-memory channel that, like node:cluster's, delivers in order and keeps what it
 * sends to a stopped (SIGSTOP) process until it resumes. `applies` lists each config the worker applied.
 */
function channelWorker(id: number) {
  let stopped = false
  const held: unknown[] = []
  const applies: Config[] = []
  const apply = (config: Config) => {
    applies.push(config)
    return { reloaded: true as const, applied: ['models'], restartRequired: [] }
  }
  const own: Rpc<WorkerOps, PrimaryOps> = new Rpc((message) => rpc.handle(structuredClone(message)), {
    apply,
  } as unknown as Handlers<WorkerOps>)
  const rpc = new Rpc<PrimaryOps, WorkerOps>(
    (message) => {
      if (stopped) held.push(structuredClone(message))
      else own.handle(structuredClone(message))
    },
    {} as Handlers<PrimaryOps>,
  )
  return {
    id,
    rpc,
    applies,
    stop(): void {
      stopped = true
    },
    resume(): void {
      stopped = false
      for (const message of held.splice(0)) own.handle(message)
    },
  }
}

test('a reload one worker does not answer (stopped): it fails as not applied, naming the worker; every worker ends on the config in force', async () => {
  const current = parseConfig(base(''), 't', {})
  const next = parseConfig(base('').replace('models: [', 'models: [{ name: m2, upstreams: [a] }, '), 't', {})
  assert.notDeepEqual(next.models, current.models)
  const workers = [channelWorker(1), channelWorker(2)]
  workers[1]?.stop()
  await assert.rejects(applyEverywhere(workers, next, current, 50), (err: unknown) => {
    // Not the file's fault (it is valid): not a ConfigError, and the message says which worker did not answer.
    assert.ok(err instanceof ReloadNotAppliedError, String(err))
    assert.match(err.message, /worker 2: no answer to "apply" within 50 ms/)
    return true
  })
  assert.deepEqual(
    workers[0]?.applies.map((config) => config.models),
    [next.models, current.models],
  )
  // Resumed, the stopped worker runs the reload still queued to it, then the rollback sent after it.
  workers[1]?.resume()
  await new Promise((resolve) => setImmediate(resolve))
  assert.deepEqual(
    workers[1]?.applies.map((config) => config.models),
    [next.models, current.models],
  )
})

test('POST /admin/reload on a worker: a reload the primary could not apply everywhere is a 500 naming the worker, not an invalid config', async () => {
  const token = 'admin-token-0123456789abcdef-workers'
  const config = parseConfig(`${base('host: 127.0.0.1, port: 0')}\nadmin: { token: "${token}" }`, 't', {})
  const notApplied = 'Not every worker applied the reload (worker 2: no answer to "apply" within 30000 ms).'
  // The primary's end of the channel, and the worker's: the error crosses it as it does between processes.
  let toWorker: Rpc<WorkerOps, PrimaryOps> | null = null
  const primary = new Rpc<PrimaryOps, WorkerOps>((message) => toWorker?.handle(structuredClone(message)), {
    reload: () => {
      throw new ReloadNotAppliedError(notApplied)
    },
  } as unknown as Handlers<PrimaryOps>)
  toWorker = new Rpc<WorkerOps, PrimaryOps>((message) => primary.handle(structuredClone(message)), {} as unknown as Handlers<WorkerOps>)
  const link = toWorker
  const app = await buildGateway(config, {
    logDestination: logSink([]),
    worker: {
      id: 1,
      scope: { upstreams: async () => [], upstream: async () => null, usage: async () => ({ enabled: false }) },
      metrics: async () => '',
      reload: () => link.call('reload', null),
      reloadHistory: () => link.call('reloadHistory', null),
    },
  })
  try {
    const url = await app.listen({ port: 0, host: '127.0.0.1' })
    const res = await fetch(`${url}/admin/reload`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
    const body = (await res.json()) as { reloaded: boolean; error: { code: string; message: string } }
    assert.equal(res.status, 500, JSON.stringify(body))
    assert.equal(body.reloaded, false)
    assert.equal(body.error.code, 'llmproxy_internal_error')
    assert.match(body.error.message, /worker 2: no answer/)
  } finally {
    await app.close()
  }
})
