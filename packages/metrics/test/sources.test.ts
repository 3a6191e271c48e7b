import { strict as assert } from 'node:assert'
import { EventEmitter } from 'node:events'
import { test } from 'node:test'
import { ensureCore } from '@llmproxy/core'
import type { FastifyInstance } from 'fastify'
import type { UpstreamSnapshotEntry } from '../src/index.js'
import { buildApp, series, usageStats, value } from './helpers.js'

/**
 * Decorator names as plain strings: the fakes implement only what this package reads, while the real
 * plugins' type augmentations (when compiled together) describe their full APIs.
 */
const UPSTREAMS: string = 'upstreams'
const USAGE: string = 'usage'
const RATE_LIMITS: string = 'rateLimits'

function upstream(name: string, overrides: Partial<UpstreamSnapshotEntry> = {}) {
  return {
    name,
    url: `http://${name}:8000`,
    protocol: 'openai',
    state: 'healthy' as UpstreamSnapshotEntry['state'],
    inFlight: 0,
    ewmaTtftMs: null as number | null,
    ejections: 0,
    consecutiveFailures: 0,
    recentErrors: 0,
    lastError: null,
    weight: 1,
    maxConcurrency: null,
    heldUntil: null,
    ...overrides,
  }
}

test('upstream gauges are read from fastify.upstreams.snapshot() at scrape time, once per scrape', async (t) => {
  let snapshot = [
    upstream('vllm-a', { state: 'healthy', inFlight: 3, ewmaTtftMs: 250, ejections: 2 }),
    upstream('vllm-b', { state: 'half-open', inFlight: 0, ejections: 5, panicPicks: 4 }),
    upstream('vllm-c', { state: 'ejected', inFlight: 1, ewmaTtftMs: 1500 }),
  ]
  let calls = 0
  // registered after the plugin: the decorator is looked up in onReady
  const { app, scrape } = await buildApp(
    {},
    {
      after: (a) =>
        a.decorate(UPSTREAMS, {
          snapshot: () => {
            calls++
            return snapshot
          },
        }),
    },
  )
  t.after(() => app.close())
  assert.equal(calls, 0, 'nothing is read before a scrape')
  let s = await scrape()
  assert.equal(calls, 1)
  assert.equal(value(s, 'llmproxy_upstream_up', { upstream: 'vllm-a' }), 1)
  assert.equal(value(s, 'llmproxy_upstream_up', { upstream: 'vllm-b' }), 1)
  assert.equal(value(s, 'llmproxy_upstream_up', { upstream: 'vllm-c' }), 0)
  assert.equal(value(s, 'llmproxy_upstream_state', { upstream: 'vllm-c', state: 'ejected' }), 1)
  assert.equal(value(s, 'llmproxy_upstream_state', { upstream: 'vllm-c', state: 'healthy' }), 0)
  assert.equal(series(s, 'llmproxy_upstream_state').length, 15)
  assert.equal(
    series(s, 'llmproxy_upstream_state').reduce((sum, x) => sum + x.value, 0),
    3,
  )
  assert.equal(value(s, 'llmproxy_upstream_in_flight', { upstream: 'vllm-a' }), 3)
  assert.equal(value(s, 'llmproxy_upstream_in_flight', { upstream: 'vllm-c' }), 1)
  assert.equal(value(s, 'llmproxy_upstream_ejections_total', { upstream: 'vllm-a' }), 2)
  assert.equal(value(s, 'llmproxy_upstream_ejections_total', { upstream: 'vllm-b' }), 5)
  assert.equal(value(s, 'llmproxy_upstream_panic_picks_total', { upstream: 'vllm-b' }), 4)
  assert.equal(value(s, 'llmproxy_upstream_panic_picks_total', { upstream: 'vllm-a' }), 0)
  assert.equal(value(s, 'llmproxy_upstream_ttft_ewma_seconds', { upstream: 'vllm-a' }), 0.25)
  assert.equal(value(s, 'llmproxy_upstream_ttft_ewma_seconds', { upstream: 'vllm-c' }), 1.5)
  assert.equal(value(s, 'llmproxy_upstream_ttft_ewma_seconds', { upstream: 'vllm-b' }), undefined, 'no EWMA yet: no sample')

  // the next scrape sees the new state; a removed upstream disappears
  snapshot = [upstream('vllm-a', { state: 'unhealthy', inFlight: 0, ewmaTtftMs: 300, ejections: 3 })]
  s = await scrape()
  assert.equal(calls, 2)
  assert.equal(value(s, 'llmproxy_upstream_up', { upstream: 'vllm-a' }), 0)
  assert.equal(value(s, 'llmproxy_upstream_state', { upstream: 'vllm-a', state: 'unhealthy' }), 1)
  assert.equal(value(s, 'llmproxy_upstream_ejections_total', { upstream: 'vllm-a' }), 3)
  assert.equal(value(s, 'llmproxy_upstream_up', { upstream: 'vllm-b' }), undefined)
  assert.equal(series(s, 'llmproxy_upstream_state').length, 5)
})

for (const gatewayFirst of [false, true]) {
  test(`the gateway in a context of its own (examples/existing-app's layout), ${gatewayFirst ? 'registered first' : 'after'}: its decorators are read there`, async (t) => {
    // Fakes of the gateway's plugins: like the real ones, they register core (or join it) in the context they are in.
    const gateway = async (scope: FastifyInstance): Promise<void> => {
      await ensureCore(scope)
      scope.decorate(UPSTREAMS, { snapshot: () => [upstream('vllm-a')] })
      scope.decorate(USAGE, { stats: () => usageStats({ queueDepth: 2 }) })
    }
    const register = (a: FastifyInstance) => void a.register(gateway)
    const { app, scrape } = await buildApp({}, gatewayFirst ? { before: register } : { after: register })
    t.after(() => app.close())
    const s = await scrape()
    assert.equal(value(s, 'llmproxy_upstream_up', { upstream: 'vllm-a' }), 1)
    assert.equal(value(s, 'llmproxy_usage_queue_depth'), 2)
  })
}

test('usage stats and delivery latency come from fastify.usage', async (t) => {
  const events = new EventEmitter()
  let stats = usageStats({ queueDepth: 7, spoolBytes: 4096, delivered: 120, deliveryFailures: 3, dropped: 1, notSpooled: 4 })
  const { app, scrape } = await buildApp({}, { before: (a) => a.decorate(USAGE, { stats: () => stats, events }) })
  t.after(() => app.close())
  events.emit('delivery', { ok: true, records: 10, latencyMs: 40, status: 200 })
  events.emit('delivery', { ok: true, records: 5, latencyMs: 160, status: 200 })
  events.emit('delivery', { ok: false, records: 5, latencyMs: 3000 })
  let s = await scrape()
  assert.equal(value(s, 'llmproxy_usage_queue_depth'), 7)
  assert.equal(value(s, 'llmproxy_usage_spool_bytes'), 4096)
  assert.equal(value(s, 'llmproxy_usage_delivered_total'), 120)
  assert.equal(value(s, 'llmproxy_usage_delivery_failures_total'), 3)
  assert.equal(value(s, 'llmproxy_usage_dropped_total'), 1)
  // Records the default whenFull (stop-spooling) refused: lost too, so counted too.
  assert.equal(value(s, 'llmproxy_usage_not_spooled_total'), 4)
  assert.equal(value(s, 'llmproxy_usage_delivery_duration_seconds_count', { ok: 'true' }), 2)
  assert.equal(value(s, 'llmproxy_usage_delivery_duration_seconds_sum', { ok: 'true' }), 0.2)
  assert.equal(value(s, 'llmproxy_usage_delivery_duration_seconds_bucket', { ok: 'true', le: '0.05' }), 1)
  assert.equal(value(s, 'llmproxy_usage_delivery_duration_seconds_count', { ok: 'false' }), 1)
  assert.equal(value(s, 'llmproxy_usage_delivery_duration_seconds_sum', { ok: 'false' }), 3)

  stats = usageStats({ queueDepth: 0, delivered: 135, deliveryFailures: 3, dropped: 1 })
  s = await scrape()
  assert.equal(value(s, 'llmproxy_usage_queue_depth'), 0)
  assert.equal(value(s, 'llmproxy_usage_delivered_total'), 135)

  assert.equal(events.listenerCount('delivery'), 1)
  await app.close()
  assert.equal(events.listenerCount('delivery'), 0, 'the delivery listener is removed on close')
})

test('usage without an events emitter: stats only, no delivery histogram', async (t) => {
  const { app, scrape } = await buildApp({}, { before: (a) => a.decorate(USAGE, { stats: () => usageStats({ queueDepth: 2 }) }) })
  t.after(() => app.close())
  const s = await scrape()
  assert.equal(value(s, 'llmproxy_usage_queue_depth'), 2)
  assert.equal(series(s, 'llmproxy_usage_delivery_duration_seconds_count').length, 0)
})

test('rate-limit Redis state comes from fastify.rateLimits, read live', async (t) => {
  const rateLimits = { redisHealthy: true, fallbacks: 0 }
  const { app, scrape } = await buildApp({}, { before: (a) => a.decorate(RATE_LIMITS, rateLimits) })
  t.after(() => app.close())
  let s = await scrape()
  assert.equal(value(s, 'llmproxy_ratelimit_redis_up'), 1)
  assert.equal(value(s, 'llmproxy_ratelimit_redis_fallbacks_total'), 0)
  rateLimits.redisHealthy = false
  rateLimits.fallbacks = 42
  s = await scrape()
  assert.equal(value(s, 'llmproxy_ratelimit_redis_up'), 0)
  assert.equal(value(s, 'llmproxy_ratelimit_redis_fallbacks_total'), 42)
})

test('a rate limiter without Redis (redisHealthy null) exports no Redis metrics', async (t) => {
  const { app, scrape } = await buildApp({}, { before: (a) => a.decorate(RATE_LIMITS, { redisHealthy: null, fallbacks: 0 }) })
  t.after(() => app.close())
  const s = await scrape()
  assert.equal(series(s, 'llmproxy_ratelimit_redis_up').length, 0)
  assert.equal(series(s, 'llmproxy_ratelimit_redis_fallbacks_total').length, 0)
})

test('without the decorators, the scrape-time metric families are absent', async (t) => {
  const { app } = await buildApp()
  t.after(() => app.close())
  const res = await app.inject('/metrics')
  assert.equal(res.statusCode, 200)
  for (const name of ['upstream_up', 'upstream_state', 'usage_queue_depth', 'usage_delivered_total', 'ratelimit_redis_up']) {
    assert.equal(res.body.includes(`llmproxy_${name}`), false, name)
  }
})

test('a failing or malformed source never fails the scrape', async (t) => {
  const decorate = (a: FastifyInstance) => {
    a.decorate(UPSTREAMS, {
      snapshot: () => {
        throw new Error('boom')
      },
    })
    a.decorate(USAGE, { stats: () => ({ queueDepth: Number.NaN, spoolBytes: -5, delivered: 'x', deliveryFailures: 2, dropped: 0 }) })
    a.decorate(RATE_LIMITS, { redisHealthy: true, fallbacks: Number.POSITIVE_INFINITY })
  }
  const { app, scrape } = await buildApp({}, { before: decorate })
  t.after(() => app.close())
  const s = await scrape()
  assert.equal(series(s, 'llmproxy_upstream_up').length, 0)
  assert.equal(value(s, 'llmproxy_usage_queue_depth'), 0)
  assert.equal(value(s, 'llmproxy_usage_spool_bytes'), 0)
  assert.equal(value(s, 'llmproxy_usage_delivered_total'), 0)
  assert.equal(value(s, 'llmproxy_usage_delivery_failures_total'), 2)
  assert.equal(value(s, 'llmproxy_ratelimit_redis_fallbacks_total'), 0)
})
