/**
 * Per-request cost of @llmproxy/metrics.
 *
 *   node --conditions=llmproxy-source --import tsx packages/metrics/bench/per-request.ts [--quick]
 *
 * 1. Listeners: core's onUsage / onAttempt listeners called directly through `app.llm.emitUsage` /
 *    `app.llm.emitAttempt`, 200,000 requests with a rotating set of realistic records (3 models,
 *    2 upstreams, statuses 200/429/502/0, some failovers, estimates and aborts). One "request" is one
 *    usage record plus its attempts (1, or 2 for a failover).
 * 2. HTTP: `app.inject` POSTs through a trivial route, with no metrics plugin (baseline), @llmproxy/core
 *    alone (which the plugin registers), an empty onResponse hook (what fastify itself spends on having
 *    one: response listeners, the hook runner), the plugin with routeMetrics off, with routeMetrics on, and (reference) fastify-metrics' own route histogram.
 *    Measured in process CPU time (not wall time); rounds are interleaved and the best round of each
 *    variant is reported, which filters out most noise from other processes on a shared machine.
 *    inject costs ~100 µs, so differences below ~2 µs are within noise.
 *
 * Prints ns of CPU time per request. Not a test: run it by hand; it takes ~20 s (--quick: ~5 s).
 */
import { type Attempt, llmCore, type UsageRecord } from '@llmproxy/core'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import fastifyMetrics from 'fastify-metrics'
import { Registry } from 'prom-client'
import { llmMetrics } from '../src/index.js'
import { routeMetricsHooks } from '../src/route-metrics.js'

const quick = process.argv.includes('--quick')
const LISTENER_REQUESTS = quick ? 50_000 : 200_000
const INJECT_ROUNDS = quick ? 3 : 12
const INJECTS_PER_ROUND = quick ? 500 : 1_500

interface Work {
  record: UsageRecord
  attempts: Attempt[]
}

/** A rotating set of realistic requests: mostly 200s, some failovers, errors, estimates and aborts. */
function workload(): Work[] {
  const models = ['qwen-7b', 'llama-3.1-8b', 'mistral-small']
  const upstreams = ['vllm-a', 'vllm-b']
  const out: Work[] = []
  let n = 0
  for (const model of models) {
    for (const upstream of upstreams) {
      for (const kind of ['ok', 'ok', 'ok', 'ok', 'failover', 'estimated', 'status502', 'ratelimited', 'aborted', 'no-response']) {
        n++
        const ok: Attempt = { upstream, upstreamModel: model, result: 'ok', status: 200, durationMs: 200 + n * 17, ttftMs: 40 + n }
        const failed: Attempt = { upstream: upstreams[(n + 1) % 2] as string, upstreamModel: model, result: 'connect_error', durationMs: 3 }
        const record: UsageRecord = {
          id: `rec-${n}`,
          timestamp: '2025-01-01T00:00:00.000Z',
          requestId: `req-${n}`,
          keyId: `team-${n % 4}`,
          model,
          upstreamModel: model,
          upstream,
          protocol: 'openai',
          clientApi: 'openai',
          stream: n % 2 === 0,
          status: 200,
          promptTokens: 20 + n,
          completionTokens: 100 + 3 * n,
          totalTokens: 120 + 4 * n,
          estimated: false,
          ttftMs: 40 + n * 3,
          durationMs: 250 + n * 97,
          attempts: 1,
          resumed: false,
          clientAborted: false,
        }
        const attempts: Attempt[] = [ok]
        if (kind === 'failover') {
          record.attempts = 2
          attempts.unshift(failed)
        } else if (kind === 'estimated') {
          record.estimated = true
        } else if (kind === 'status502') {
          record.status = 502
          record.ttftMs = null
          record.completionTokens = 0
          attempts[0] = { ...ok, result: 'status', status: 502 }
        } else if (kind === 'ratelimited') {
          record.status = 429
          record.ttftMs = null
          record.completionTokens = 0
          attempts[0] = { ...ok, result: 'status', status: 429 }
        } else if (kind === 'aborted') {
          record.clientAborted = true
          attempts[0] = { ...ok, result: 'aborted' }
        } else if (kind === 'no-response') {
          record.status = 0
          record.upstream = null
          record.ttftMs = null
          record.promptTokens = 0
          record.completionTokens = 0
          attempts[0] = failed
        }
        out.push({ record, attempts })
      }
    }
  }
  return out
}

async function listenerApp(perKeyLabels: boolean): Promise<{ app: FastifyInstance; request: FastifyRequest }> {
  const app = Fastify()
  await app.register(llmMetrics, { defaultMetrics: false, perKeyLabels })
  let captured: FastifyRequest | null = null
  app.post('/capture', async (request) => {
    captured = request
    return 'ok'
  })
  await app.inject({ method: 'POST', url: '/capture' })
  if (captured === null) throw new Error('no request captured')
  return { app, request: captured }
}

function runListeners(app: FastifyInstance, request: FastifyRequest, work: Work[], n: number): number {
  const start = process.cpuUsage()
  for (let i = 0; i < n; i++) {
    const w = work[i % work.length] as Work
    for (let a = 0; a < w.attempts.length; a++) app.llm.emitAttempt(w.attempts[a] as Attempt, request)
    app.llm.emitUsage(w.record, request)
  }
  const used = process.cpuUsage(start)
  return ((used.user + used.system) * 1000) / n
}

async function benchListeners(perKeyLabels: boolean): Promise<number> {
  const { app, request } = await listenerApp(perKeyLabels)
  const work = workload()
  runListeners(app, request, work, Math.min(20_000, LISTENER_REQUESTS)) // warm-up (JIT)
  // best of 3 runs of LISTENER_REQUESTS each
  let best = Number.POSITIVE_INFINITY
  for (let r = 0; r < 3; r++) best = Math.min(best, runListeners(app, request, work, LISTENER_REQUESTS))
  // sanity: the scrape still renders
  const res = await app.inject('/metrics')
  if (res.statusCode !== 200 || !res.body.includes('llmproxy_requests_total{')) throw new Error('scrape failed')
  await app.close()
  return best
}

type Variant =
  | 'no metrics plugin'
  | 'core only'
  | 'empty onResponse hook'
  | 'routeMetrics off'
  | 'routeMetrics on'
  | 'fastify-metrics route histogram (reference)'

async function injectApp(variant: Variant, logger: boolean): Promise<FastifyInstance> {
  // logger: as in the reference gateway (pino, nothing written at level warn on success)
  const app = Fastify({ logger: logger ? { level: 'warn' } : false })
  if (variant === 'core only') await app.register(llmCore)
  if (variant === 'empty onResponse hook') app.addHook('onResponse', (_request, _reply, done) => done())
  if (variant === 'routeMetrics off') await app.register(llmMetrics, { defaultMetrics: false, routeMetrics: false })
  if (variant === 'routeMetrics on') await app.register(llmMetrics, { defaultMetrics: false, routeMetrics: true })
  if (variant === 'fastify-metrics route histogram (reference)') {
    const registry = new Registry()
    await app.register(fastifyMetrics.default, {
      endpoint: null,
      defaultMetrics: { enabled: false },
      routeMetrics: {
        enabled: { histogram: true, summary: false },
        registeredRoutesOnly: false,
        overrides: { histogram: { registers: [registry] }, summary: { registers: [registry] } },
      },
    })
  }
  app.post('/v1/chat/completions', async () => ({ ok: true }))
  await app.ready()
  return app
}

async function injectRound(app: FastifyInstance, n: number): Promise<number> {
  const payload = '{"model":"qwen-7b","messages":[{"role":"user","content":"hi"}]}'
  const headers = { 'content-type': 'application/json' }
  const start = process.cpuUsage()
  for (let i = 0; i < n; i++) {
    const res = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload, headers })
    if (res.statusCode !== 200) throw new Error(`inject failed: ${res.statusCode}`)
  }
  const used = process.cpuUsage(start)
  return ((used.user + used.system) * 1000) / n
}

async function benchInject(variants: Variant[], logger: boolean): Promise<Map<Variant, number>> {
  const apps = new Map<Variant, FastifyInstance>()
  for (const v of variants) apps.set(v, await injectApp(v, logger))
  const best = new Map<Variant, number>()
  for (const [, app] of apps) await injectRound(app, 500) // warm-up
  for (let r = 0; r < INJECT_ROUNDS; r++) {
    for (const v of variants) {
      const ns = await injectRound(apps.get(v) as FastifyInstance, INJECTS_PER_ROUND)
      best.set(v, Math.min(best.get(v) ?? Number.POSITIVE_INFINITY, ns))
    }
  }
  for (const [, app] of apps) await app.close()
  return best
}

/**
 * The route histogram's onResponse hook body alone, called with the real request / reply of a finished
 * inject, so fastify's own hook machinery is not counted.
 */
async function benchRouteHook(): Promise<number> {
  const app = Fastify()
  const captured: { request: FastifyRequest | null; reply: FastifyReply | null } = { request: null, reply: null }
  app.addHook('onResponse', (request, reply, done) => {
    captured.request = request
    captured.reply = reply
    done()
  })
  app.post('/v1/chat/completions', async () => ({ ok: true }))
  await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: '{}', headers: { 'content-type': 'application/json' } })
  await app.close()
  const { request, reply } = captured
  if (request === null || reply === null) throw new Error('no request captured')
  const { onResponse } = routeMetricsHooks(new Registry())
  const done = (): void => {}
  const run = (n: number): number => {
    const start = process.cpuUsage()
    for (let i = 0; i < n; i++) onResponse(request, reply, done)
    const used = process.cpuUsage(start)
    return ((used.user + used.system) * 1000) / n
  }
  run(20_000)
  let best = Number.POSITIVE_INFINITY
  for (let r = 0; r < 3; r++) best = Math.min(best, run(LISTENER_REQUESTS))
  return best
}

const fmt = (ns: number): string => `${ns.toFixed(0).padStart(7)} ns`

console.log(
  `node ${process.version}, ${LISTENER_REQUESTS} requests per listener run, ${INJECT_ROUNDS}x${INJECTS_PER_ROUND} injects per variant`,
)
console.log(`listeners (emitAttempt + emitUsage), perKeyLabels off: ${fmt(await benchListeners(false))} per request`)
console.log(`listeners (emitAttempt + emitUsage), perKeyLabels on:  ${fmt(await benchListeners(true))} per request`)
console.log(`route histogram onResponse hook body:                 ${fmt(await benchRouteHook())} per request`)
const report = (title: string, results: Map<Variant, number>): void => {
  console.log(title)
  const base = results.get('no metrics plugin') ?? 0
  for (const [v, ns] of results) {
    const delta = v === 'no metrics plugin' ? '' : ` (${ns - base >= 0 ? '+' : ''}${(ns - base).toFixed(0)} ns vs no plugin)`
    console.log(`  inject POST, ${v.padEnd(44)} ${fmt(ns)} per request${delta}`)
  }
}
report(
  'no logger:',
  await benchInject(
    [
      'no metrics plugin',
      'core only',
      'empty onResponse hook',
      'routeMetrics off',
      'routeMetrics on',
      'fastify-metrics route histogram (reference)',
    ],
    false,
  ),
)
report(
  'logger (level warn, as the gateway):',
  await benchInject(['no metrics plugin', 'routeMetrics off', 'routeMetrics on', 'fastify-metrics route histogram (reference)'], true),
)
