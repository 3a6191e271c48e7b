// `server.workers: 2`: the real CLI as a primary and two worker processes on one port. Every request here opens
// its own connection (node:cluster hands each connection to the next worker), and each log line names its worker,
// so the tests see both workers serve. Limits use the memory store: the counters are the primary's, so a limit
// holds exactly across workers. Then the admin API and /metrics (the whole gateway from whichever worker), SIGHUP
// and admin reloads (validated once by the primary), a worker killed with SIGKILL (replaced, its usage spool
// delivered, nothing lost; its replacement redoes no drain a reload undid), SIGTERM (every worker drains, then the
// primary exits 0), and kill -9 of the primary (the workers exit at once, each saying why).
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { type MockUpstream, promptTokensFor, startMockUpstream } from '@llmproxy/mock-upstream'
import type { ReloadHistory } from '@llmproxy/server'
import { type GatewayChild, logLines, spawnGateway, workerPid, workersReady } from './gateway-process.js'
import { pollUntil, sleep } from './http-helpers.js'
import { metricValue, UsageReceiver } from './usage-helpers.js'

const RUN = randomBytes(4).toString('hex')
const SECRET = `e2e-workers-${RUN}`
const ADMIN = `admin-token-${RUN}-0000`
const RPM = 20
const QUOTA = 1000
const KEYS = {
  plain: 'sk-e2e-workers-plain-000000000000',
  rpm: 'sk-e2e-workers-rpm-00000000000000',
  quota: 'sk-e2e-workers-quota-000000000000',
  concurrency: 'sk-e2e-workers-conc-0000000000000',
}

const dir = mkdtempSync(join(tmpdir(), 'llmproxy-e2e-workers-'))
const configFile = join(dir, 'gateway.json')
const receiver = new UsageReceiver(SECRET)
const stops: (() => Promise<void>)[] = []
let mockA: MockUpstream
let mockB: MockUpstream
let gw: GatewayChild

function config(
  extra: { aliases?: string[]; broken?: boolean; upstreams?: { name: string; url: string }[] } = {},
): Record<string, unknown> {
  const upstreams = extra.upstreams ?? [
    { name: 'mock-a', url: mockA.url },
    { name: 'mock-b', url: mockB.url },
  ]
  return {
    server: { host: '127.0.0.1', port: 0, logLevel: 'info', shutdownGraceMs: 10_000, workers: 2 },
    upstreams: upstreams.map((u) => ({ ...u, protocol: 'openai' })),
    models: [{ name: 'gpt-test', aliases: extra.aliases ?? [], upstreams: upstreams.map((u) => u.name), upstreamModel: 'mock-model' }],
    retry: { attempts: 1 },
    healthChecks: { enabled: false },
    passiveHealth: { failuresToEject: 1_000_000 },
    auth: {
      keys: [
        { id: 'plain', key: KEYS.plain },
        { id: 'rpm', key: KEYS.rpm, rateLimit: { rpm: RPM } },
        { id: 'quota', key: KEYS.quota, quota: { tokens: QUOTA, per: 'day' } },
        { id: 'concurrency', key: KEYS.concurrency, rateLimit: { concurrency: 2 } },
      ],
    },
    // No rateLimit section: the keys' limits turn on the memory store, whose counters the primary holds.
    usage: {
      webhook: { url: receiver.url, secret: SECRET, timeoutMs: 5000 },
      spoolDir: join(dir, 'spool'),
      batch: { maxRecords: 20, maxWaitMs: 50 },
      retry: { baseMs: 50, maxMs: 300 },
    },
    admin: { token: ADMIN },
    ...(extra.broken === true ? { timeouts: { connectMs: 'soon' } } : {}),
  }
}

function writeConfig(extra: Parameters<typeof config>[0] = {}): void {
  writeFileSync(configFile, JSON.stringify(config(extra), null, 2))
}

before(async () => {
  mockA = await startMockUpstream({ defaults: { tokens: 5 } })
  mockB = await startMockUpstream({ defaults: { tokens: 5 } })
  await receiver.listen()
  writeConfig()
  gw = await spawnGateway(configFile, (stop) => stops.push(stop))
  await workersReady(gw, 2, 60_000)
})

after(async () => {
  await Promise.allSettled(stops.map((stop) => stop()))
  await Promise.allSettled([mockA?.close(), mockB?.close(), receiver.close()])
  rmSync(dir, { recursive: true, force: true })
})

// ---------------------------------------------------------------------------------------------------------------
// Requests, each on a connection of its own (so that successive requests reach alternate workers)

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  text: string
}

let sequence = 0
const newRequestId = (): string => `workers-${RUN}-${++sequence}`

function send(method: string, path: string, body: string | null, headers: Record<string, string>): Promise<Answer> {
  const url = new URL(path, gw.url)
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      { method, agent: false, headers: { ...(body === null ? {} : { 'content-type': 'application/json' }), ...headers } },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          text += chunk
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(body ?? undefined)
  })
}

const CHAT = JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'Count to three, please.' }] })
const PROMPT_TOKENS = promptTokensFor(JSON.parse(CHAT))

function chat(key: string, requestId: string, options: { body?: string; behavior?: Record<string, unknown> } = {}): Promise<Answer> {
  const headers: Record<string, string> = { authorization: `Bearer ${key}`, 'x-request-id': requestId }
  if (options.behavior !== undefined) headers['x-mock-behavior'] = JSON.stringify(options.behavior)
  return send('POST', '/v1/chat/completions', options.body ?? CHAT, headers)
}

const admin = (method: string, path: string): Promise<Answer> => send(method, `/admin${path}`, null, { authorization: `Bearer ${ADMIN}` })

function errorCode(answer: Answer): unknown {
  return (JSON.parse(answer.text) as { error?: { code?: unknown } }).error?.code
}

/** Which worker logged each request id. */
function servedBy(requestIds: readonly string[]): Set<unknown> {
  const ids = new Set(requestIds)
  return new Set(
    logLines(gw)
      .filter((l) => l.msg === 'request' && ids.has(String(l.reqId)))
      .map((l) => l.worker),
  )
}

/** Until both workers logged some of these requests (a log line may arrive just after its response). */
async function servedByBoth(requestIds: readonly string[]): Promise<void> {
  await pollUntil(
    async () => servedBy(requestIds).size,
    (workers) => workers === 2,
    'request lines of both workers',
  )
}

const chatCount = (): number => [mockA, mockB].reduce((n, m) => n + m.requests.filter((r) => r.path === '/v1/chat/completions').length, 0)

// ---------------------------------------------------------------------------------------------------------------

test('a per-key rpm holds exactly across the two workers (counters in the primary)', async () => {
  const ids = Array.from({ length: 2 * RPM }, newRequestId)
  const answers = await Promise.all(ids.map((id) => chat(KEYS.rpm, id)))
  const ok = answers.filter((a) => a.status === 200)
  const limited = answers.filter((a) => a.status === 429)
  assert.equal(ok.length, RPM, `statuses: ${answers.map((a) => a.status).join(',')}`)
  assert.equal(limited.length, RPM)
  for (const a of limited) {
    assert.equal(errorCode(a), 'llmproxy_rate_limited')
    assert.equal(a.headers['x-ratelimit-limit-requests'], `${RPM}`)
    assert.equal(a.headers['x-ratelimit-remaining-requests'], '0')
  }
  await servedByBoth(ids)
  // The window is shared: one more request on each worker is refused too.
  const more = await Promise.all([chat(KEYS.rpm, newRequestId()), chat(KEYS.rpm, newRequestId())])
  assert.deepEqual(
    more.map((a) => a.status),
    [429, 429],
  )
})

test('a token quota holds exactly across workers, and /admin/keys reports what both spent', async () => {
  const early = await chat(KEYS.quota, newRequestId(), { behavior: { tokens: 10 } })
  assert.equal(early.status, 200, early.text)
  const exhausting = await chat(KEYS.quota, newRequestId(), { behavior: { tokens: QUOTA } })
  assert.equal(exhausting.status, 200, exhausting.text)
  const spent = 2 * PROMPT_TOKENS + 10 + QUOTA
  // The usage records settle the reservations just after the answers.
  const quotaOf = async (): Promise<unknown> => {
    const keys = JSON.parse((await admin('GET', '/keys')).text) as { id: string; usage: { quota: { used: number } | null } | null }[]
    return keys.find((k) => k.id === 'quota')?.usage?.quota?.used
  }
  await pollUntil(quotaOf, (used) => used === spent, `quota used ${spent} in /admin/keys`)
  const tiny = JSON.stringify({ model: 'gpt-test', max_tokens: 1, messages: [{ role: 'user', content: 'Hi' }] })
  const ids = Array.from({ length: 6 }, newRequestId)
  const refused = await Promise.all(ids.map((id) => chat(KEYS.quota, id, { body: tiny })))
  for (const a of refused) {
    assert.equal(a.status, 429, a.text)
    assert.equal(errorCode(a), 'quota_exceeded')
  }
  await servedByBoth(ids)
  // Every worker reads the same counter.
  for (let i = 0; i < 4; i++) assert.equal(await quotaOf(), spent)
})

test('a per-key concurrency limit holds across workers, and the slots come back', async () => {
  const slow = { ttftMs: 1500, tokens: 2 }
  const ids = Array.from({ length: 6 }, newRequestId)
  const answers = await Promise.all(ids.map((id) => chat(KEYS.concurrency, id, { behavior: slow })))
  const statuses = answers.map((a) => a.status).sort()
  assert.deepEqual(statuses, [200, 200, 429, 429, 429, 429], answers.map((a) => a.text).join('\n'))
  for (const a of answers.filter((x) => x.status === 429)) assert.equal(errorCode(a), 'llmproxy_concurrency_limit')
  await servedByBoth(ids)
  // The releases reach the primary's counters a moment after the answers end (a message each): both slots come back.
  await pollUntil(
    async () => (await Promise.all([chat(KEYS.concurrency, newRequestId()), chat(KEYS.concurrency, newRequestId())])).map((a) => a.status),
    (statuses) => statuses.every((status) => status === 200),
    'both slots back',
    5000,
  )
})

test('/metrics and the admin API describe the whole gateway, whichever worker answers', async () => {
  const ids = Array.from({ length: 8 }, newRequestId)
  for (const a of await Promise.all(ids.map((id) => chat(KEYS.plain, id)))) assert.equal(a.status, 200, a.text)
  const served = chatCount()
  const scrape = async (): Promise<string> => (await send('GET', '/metrics', null, {})).text
  const total = (text: string): number =>
    [...text.matchAll(/^llmproxy_requests_total\{[^}]*status="200"[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0)
  // A request is counted when its usage record is out, just after its answer.
  await pollUntil(
    async () => total(await scrape()),
    (n) => n === served,
    `${served} requests in /metrics`,
  )
  // Consecutive scrapes reach alternate workers: each one reports every worker's requests.
  for (let i = 0; i < 4; i++) {
    const text = await scrape()
    assert.equal(total(text), served, `scrape ${i}: ${total(text)} requests, the upstreams served ${served}`)
    assert.equal(metricValue(text, 'llmproxy_workers'), 2)
    assert.equal(metricValue(text, 'llmproxy_worker_restarts_total'), 0)
    // A state gauge is the share of workers that see it so.
    assert.match(text, /^llmproxy_upstream_up\{upstream="mock-a"\} 1$/m)
  }

  const upstreams = JSON.parse((await admin('GET', '/upstreams')).text) as { name: string; state: string; workers: unknown[] }[]
  assert.deepEqual(
    upstreams.map((u) => [u.name, u.state, u.workers.length]),
    [
      ['mock-a', 'healthy', 2],
      ['mock-b', 'healthy', 2],
    ],
  )
  const usage = JSON.parse((await admin('GET', '/usage')).text) as { enabled: boolean; workers: { worker: number }[] }
  assert.equal(usage.enabled, true)
  assert.deepEqual(usage.workers.map((w) => w.worker).sort(), [1, 2])

  // A drain through one worker applies to both: nothing reaches mock-a any more.
  const drained = await admin('POST', '/upstreams/mock-a/drain')
  assert.equal(drained.status, 200, drained.text)
  assert.equal((JSON.parse(drained.text) as { state: string }).state, 'draining')
  const before = mockA.requests.length
  const afterDrain = Array.from({ length: 6 }, newRequestId)
  for (const a of await Promise.all(afterDrain.map((id) => chat(KEYS.plain, id)))) assert.equal(a.status, 200, a.text)
  assert.equal(mockA.requests.length, before, 'a drained upstream got requests')
  await servedByBoth(afterDrain)
  assert.equal((await admin('POST', '/upstreams/nope/drain')).status, 404)
  assert.equal((await admin('POST', '/upstreams/mock-a/enable')).status, 200)
})

test('SIGHUP and POST /admin/reload: the primary validates once, every worker applies', async () => {
  const primaryLines = (msg: string): number => logLines(gw).filter((l) => l.role === 'primary' && l.msg === msg).length
  const reloadedBefore = primaryLines('config reloaded')
  writeConfig({ aliases: ['gpt-reloaded'] })
  gw.child.kill('SIGHUP')
  await pollUntil(
    async () => primaryLines('config reloaded'),
    (n) => n === reloadedBefore + 1,
    'the primary to log "config reloaded"',
  )
  const body = JSON.stringify({ model: 'gpt-reloaded', messages: [{ role: 'user', content: 'Hi' }] })
  const ids = Array.from({ length: 6 }, newRequestId)
  for (const a of await Promise.all(ids.map((id) => chat(KEYS.plain, id, { body })))) assert.equal(a.status, 200, a.text)
  await servedByBoth(ids)

  // An invalid file: one failure logged by the primary, nothing changes anywhere.
  const failedBefore = primaryLines('config reload failed: nothing changed')
  writeConfig({ aliases: ['gpt-reloaded'], broken: true })
  gw.child.kill('SIGHUP')
  await pollUntil(
    async () => primaryLines('config reload failed: nothing changed'),
    (n) => n === failedBefore + 1,
    'the primary to log the failed reload',
  )
  // What the operator who sent the signal reads back from a worker: the primary's last reload and its counter.
  const history = JSON.parse((await admin('GET', '/reload')).text) as ReloadHistory
  assert.equal(history.last?.reloaded, false, JSON.stringify(history))
  assert.equal(history.last?.problems[0]?.path, '/timeouts/connectMs', JSON.stringify(history))
  const scraped = (await send('GET', '/metrics', null, {})).text
  assert.equal(metricValue(scraped, 'llmproxy_config_reloads_total', 'outcome="applied"'), 1)
  assert.equal(metricValue(scraped, 'llmproxy_config_reloads_total', 'outcome="failed"'), 1)
  const refused = await admin('POST', '/reload')
  assert.equal(refused.status, 400, refused.text)
  assert.match(refused.text, /\/timeouts\/connectMs/)
  for (const a of await Promise.all([1, 2, 3, 4].map(() => chat(KEYS.plain, newRequestId(), { body })))) assert.equal(a.status, 200)

  // Through the admin API (served by a worker, done by the primary).
  writeConfig()
  const reloaded = await admin('POST', '/reload')
  assert.equal(reloaded.status, 200, reloaded.text)
  assert.deepEqual((JSON.parse(reloaded.text) as { applied: string[] }).applied, ['models'])
  for (const a of await Promise.all([1, 2, 3, 4].map(() => chat(KEYS.plain, newRequestId(), { body })))) {
    assert.equal(a.status, 404, a.text)
  }
  assert.equal(logLines(gw).filter((l) => l.msg === 'config reload failed: nothing changed' && l.role !== 'primary').length, 0)
})

test('a worker killed with SIGKILL is replaced; its concurrency slots come back; every usage record arrives, once', async () => {
  const queued = async (): Promise<unknown> => (JSON.parse((await admin('GET', '/usage')).text) as { queueDepth: number }).queueDepth
  await pollUntil(queued, (n) => n === 0, 'every earlier record delivered')
  // The receiver is down: records wait in the workers' spools.
  await receiver.close()
  // Two slow requests of the key with concurrency 2 hold its two slots; the admin API says which worker holds each.
  const slow = { ttftMs: 8000, tokens: 2 }
  const held = [1, 2].map(() => chat(KEYS.concurrency, newRequestId(), { behavior: slow }).catch(() => null))
  const holders = await pollUntil(
    async () => {
      const upstreams = JSON.parse((await admin('GET', '/upstreams')).text) as { workers: { worker: number; inFlight: number }[] }[]
      const byWorker = new Map<number, number>()
      for (const w of upstreams.flatMap((u) => u.workers)) byWorker.set(w.worker, (byWorker.get(w.worker) ?? 0) + w.inFlight)
      return [...byWorker].filter(([, n]) => n > 0)
    },
    (list) => list.reduce((sum, [, n]) => sum + n, 0) === 2,
    'both slow requests in flight',
  )
  const [victim, victimHeld] = holders[0] as [number, number]
  const ids = Array.from({ length: 30 }, newRequestId)
  for (const a of await Promise.all(ids.map((id) => chat(KEYS.plain, id)))) assert.equal(a.status, 200, a.text)
  await servedByBoth(ids)
  // Each answer ended after its record was spooled: the records of all 30 survive the kill.
  await pollUntil(queued, (n) => n === ids.length, `the ${ids.length} records in the spools`)
  // What Prometheus saw last before the kill: the gateway's totals must not go down after it.
  const requestsTotal = (text: string): number =>
    [...text.matchAll(/^llmproxy_requests_total\{[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0)
  const beforeKill = requestsTotal((await send('GET', '/metrics', null, {})).text)
  assert.ok(beforeKill >= ids.length, `${beforeKill} requests in /metrics before the kill`)
  // What an operator read last before the kill: the gateway's usage totals must not go down after it.
  const deliveredBeforeKill = (JSON.parse((await admin('GET', '/usage')).text) as { delivered: number }).delivered
  assert.ok(deliveredBeforeKill > 0, 'records delivered before the kill')
  const killed = workerPid(gw, victim)
  process.kill(killed, 'SIGKILL')
  const [replacement] = await pollUntil(
    async () => logLines(gw).filter((l) => l.msg === 'replacement worker ready' && l.worker === victim),
    (lines) => lines.length === 1,
    `the replacement of worker ${victim} to be ready`,
    60_000,
  )
  const exit = logLines(gw).find((l) => l.msg === 'worker exited unexpectedly; starting a replacement')
  assert.equal(exit?.worker, victim)
  assert.equal(exit?.workerPid, killed)
  assert.equal(exit?.signal, 'SIGKILL')
  // (The primary's line names the new process: the worker's own "Server listening" line may come after it.)
  assert.equal(typeof replacement?.workerPid, 'number')
  assert.notEqual(replacement?.workerPid, killed)
  // The killed worker's requests broke, the other worker's finished; the slots the dead worker held were given back.
  const heldAnswers = await Promise.all(held)
  assert.equal(heldAnswers.filter((a) => a === null).length, victimHeld)
  assert.equal(heldAnswers.filter((a) => a?.status === 200).length, 2 - victimHeld)
  const again = await Promise.all([chat(KEYS.concurrency, newRequestId()), chat(KEYS.concurrency, newRequestId())])
  assert.deepEqual(
    again.map((a) => a.status),
    [200, 200],
  )

  // The port kept serving, and the replacement serves.
  const afterKill = Array.from({ length: 6 }, newRequestId)
  for (const a of await Promise.all(afterKill.map((id) => chat(KEYS.plain, id)))) assert.equal(a.status, 200, a.text)
  await servedByBoth(afterKill)
  const metrics = (await send('GET', '/metrics', null, {})).text
  assert.equal(metricValue(metrics, 'llmproxy_worker_restarts_total'), 1)
  const deliveredAfterKill = (JSON.parse((await admin('GET', '/usage')).text) as { delivered: number }).delivered
  assert.ok(
    deliveredAfterKill >= deliveredBeforeKill,
    `/admin/usage delivered ${deliveredAfterKill} after the kill, ${deliveredBeforeKill} before`,
  )
  // The killed worker's counts, as last scraped, stay in the totals (no false counter reset).
  const afterReplacement = requestsTotal(metrics)
  assert.ok(afterReplacement >= beforeKill + afterKill.length, `${afterReplacement} requests after the kill, ${beforeKill} before`)

  await receiver.listen(receiver.port)
  const expected = [...ids, ...afterKill]
  await pollUntil(
    async () => expected.filter((id) => ![...receiver.records.values()].some((r) => r.requestId === id)),
    (missing) => missing.length === 0,
    "a usage record for every request (the killed worker's from its spool, delivered by its replacement)",
    30_000,
  )
  // The kill happened while no delivery was in flight (the receiver was down): nothing came twice.
  assert.deepEqual(receiver.duplicateIds(), [])
  assert.deepEqual(receiver.problems, [])
  assert.equal(receiver.badSignatures, 0)
})

test('a drain a reload undid (its upstream removed, or moved to another url) stays undone on a replacement worker', async () => {
  const states = async (): Promise<[string, string[]][]> => {
    const upstreams = JSON.parse((await admin('GET', '/upstreams')).text) as { name: string; workers: { state: string }[] }[]
    return upstreams.map((u) => [u.name, u.workers.map((w) => w.state)])
  }
  const reload = async (): Promise<void> => {
    const reloaded = await admin('POST', '/reload')
    assert.equal(reloaded.status, 200, reloaded.text)
  }
  for (const name of ['mock-a', 'mock-b']) assert.equal((await admin('POST', `/upstreams/${name}/drain`)).status, 200)
  // mock-a moves to another url and mock-b goes; then mock-b comes back: each is a fresh upstream, drained nowhere.
  writeConfig({ upstreams: [{ name: 'mock-a', url: mockB.url }] })
  await reload()
  writeConfig({
    upstreams: [
      { name: 'mock-a', url: mockB.url },
      { name: 'mock-b', url: mockB.url },
    ],
  })
  await reload()
  const undrained: [string, string[]][] = [
    ['mock-a', ['healthy', 'healthy']],
    ['mock-b', ['healthy', 'healthy']],
  ]
  assert.deepEqual(await states(), undrained)

  const victim = 1
  const replacements = (): number => logLines(gw).filter((l) => l.msg === 'replacement worker ready' && l.worker === victim).length
  const before = replacements()
  process.kill(workerPid(gw, victim), 'SIGKILL')
  await pollUntil(
    async () => replacements(),
    (n) => n === before + 1,
    `the replacement of worker ${victim} to be ready`,
    60_000,
  )
  // The primary sends a replacement the drains in force as it logs it ready, ahead of whatever it asks it later.
  assert.deepEqual(await states(), undrained)

  writeConfig()
  await reload()
})

test('SIGTERM to the whole process group (systemd): every worker drains (in-flight streams finish, /readyz 503), then the primary exits 0', async () => {
  const streamBody = JSON.stringify({ model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'Hi' }] })
  const url = new URL('/v1/chat/completions', gw.url)
  let firstChunk: () => void = () => {}
  const started = new Promise<void>((resolve) => {
    firstChunk = resolve
  })
  const stream = new Promise<Answer>((resolve, reject) => {
    const req = httpRequest(
      url,
      {
        method: 'POST',
        agent: false,
        headers: {
          'content-type': 'application/json',
          authorization: `Bearer ${KEYS.plain}`,
          'x-mock-behavior': JSON.stringify({ ttftMs: 100, gapMs: 250, tokens: 8 }),
        },
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          text += chunk
          firstChunk()
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(streamBody)
  })
  await started
  const exited = new Promise<number | null>((resolve) => gw.child.once('exit', (code) => resolve(code)))
  // As systemd's default KillMode sends it: to the primary and to every worker; each worker then gets a second one
  // from the primary, which must not cut its draining.
  const workers = readFileSync(`/proc/${gw.child.pid}/task/${gw.child.pid}/children`, 'utf8').trim().split(/\s+/).map(Number)
  assert.equal(workers.length, 2, 'two workers')
  gw.child.kill('SIGTERM')
  for (const pid of workers) process.kill(pid, 'SIGTERM')
  await sleep(300)
  // Both workers still listen and say they are going away (two connections: one per worker).
  const probes = await Promise.all([send('GET', '/readyz', null, {}), send('GET', '/readyz', null, {})])
  for (const p of probes) {
    assert.equal(p.status, 503)
    assert.deepEqual(JSON.parse(p.text), { status: 'shutting down' })
  }
  const answer = await stream
  assert.equal(answer.status, 200)
  assert.match(answer.text, /data: \[DONE\]\n\n$/)
  assert.equal(await exited, 0)
  const lines = logLines(gw)
  assert.ok(lines.some((l) => l.role === 'primary' && l.msg === 'stopped'))
  assert.equal(lines.filter((l) => l.msg === 'worker exited unexpectedly; starting a replacement').length, 2, 'only the SIGKILLed ones')
  // No secret in any process' log.
  for (const key of [...Object.values(KEYS), ADMIN, SECRET]) assert.ok(!gw.output().includes(key), 'a secret appeared in the log')
})

test('kill -9 of the primary: node:cluster ends every worker at once (no drain), and each logs why at error', async () => {
  const gateway = await spawnGateway(configFile, (stop) => stops.push(stop))
  await workersReady(gateway, 2, 60_000)
  const pid = gateway.child.pid as number
  const workers = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number)
  const running = (): number[] =>
    workers.filter((worker) => {
      try {
        process.kill(worker, 0)
        return true
      } catch {
        return false
      }
    })
  try {
    gateway.child.kill('SIGKILL')
    await pollUntil(
      async () => running().length,
      (n) => n === 0,
      'both workers to exit',
      10_000,
    )
    const said = logLines(gateway).filter((l) => l.level === 50 && String(l.msg).startsWith('the primary is gone'))
    assert.deepEqual(said.map((l) => l.worker).sort(), [1, 2], gateway.output())
  } finally {
    for (const worker of running()) process.kill(worker, 'SIGKILL')
  }
})
