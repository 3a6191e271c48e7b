import type { EventEmitter } from 'node:events'
import type { FastifyBaseLogger } from 'fastify'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { DELIVERY_BUCKETS } from './options.js'

/**
 * What this package reads from other plugins' decorators at scrape time. Declared here (structurally,
 * only the fields read) so that the package works with or without @llmproxy/upstreams, usage and rate-limit.
 */
export type UpstreamState = 'healthy' | 'unhealthy' | 'ejected' | 'half-open' | 'draining'
export interface UpstreamSnapshotEntry {
  name: string
  state: UpstreamState
  inFlight: number
  ewmaTtftMs: number | null
  ejections: number
  /** Leases given while the upstream's pool was in panic mode (every upstream out of service). */
  panicPicks?: number
}
/** `fastify.upstreams` */
export interface UpstreamsSource {
  snapshot(): readonly UpstreamSnapshotEntry[]
}
export interface UsageStats {
  queueDepth: number
  spoolBytes: number
  delivered: number
  deliveryFailures: number
  dropped: number
  notSpooled: number
}
export interface UsageDeliveryEvent {
  ok: boolean
  records: number
  latencyMs: number
  status?: number
}
/** `fastify.usage` */
export interface UsageSource {
  stats(): UsageStats
  events?: EventEmitter
}
/** `fastify.rateLimits` (`redisHealthy` is null when no Redis is in use: no Redis metrics then) */
export interface RateLimitsSource {
  redisHealthy: boolean | null
  fallbacks: number
}

const UPSTREAM_STATES: readonly UpstreamState[] = ['healthy', 'unhealthy', 'ejected', 'half-open', 'draining']

export function isUpstreamsSource(value: unknown): value is UpstreamsSource {
  return typeof value === 'object' && value !== null && 'snapshot' in value && typeof value.snapshot === 'function'
}

export function isUsageSource(value: unknown): value is UsageSource {
  return typeof value === 'object' && value !== null && 'stats' in value && typeof value.stats === 'function'
}

/** A rate limiter that uses Redis (the only state these metrics describe). */
export function isRateLimitsSource(value: unknown): value is RateLimitsSource {
  return typeof value === 'object' && value !== null && 'redisHealthy' in value && typeof value.redisHealthy === 'boolean'
}

/** A finite, non-negative number, or 0 (a foreign value must never make a scrape throw). */
function count(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : 0
}

/**
 * Calls `read` at most once per scrape: prom-client runs every metric's collect() in one synchronous
 * pass, so the value is kept until the next microtask. A throwing source yields `fallback` (logged).
 */
function perScrape<T>(read: () => T, fallback: T, log: FastifyBaseLogger, source: string): () => T {
  let cached: { value: T } | null = null
  const clear = (): void => {
    cached = null
  }
  return () => {
    if (cached === null) {
      try {
        cached = { value: read() }
      } catch (err) {
        log.warn({ err, source }, 'metrics source failed; its metrics are empty in this scrape')
        cached = { value: fallback }
      }
      queueMicrotask(clear)
    }
    return cached.value
  }
}

export function registerUpstreamMetrics(registry: Registry, prefix: string, source: UpstreamsSource, log: FastifyBaseLogger): void {
  const snapshot = perScrape<readonly UpstreamSnapshotEntry[]>(() => source.snapshot(), [], log, 'upstreams')
  const registers = [registry]
  new Gauge({
    name: `${prefix}upstream_up`,
    help: 'Whether the upstream takes traffic (1 healthy or half-open, 0 otherwise).',
    labelNames: ['upstream'],
    registers,
    collect() {
      this.reset()
      for (const u of snapshot()) this.set({ upstream: u.name }, u.state === 'healthy' || u.state === 'half-open' ? 1 : 0)
    },
  })
  new Gauge({
    name: `${prefix}upstream_state`,
    help: 'Health state of the upstream (1 for the current state, 0 for the others).',
    labelNames: ['upstream', 'state'],
    registers,
    collect() {
      this.reset()
      for (const u of snapshot()) {
        for (const state of UPSTREAM_STATES) this.set({ upstream: u.name, state }, u.state === state ? 1 : 0)
      }
    },
  })
  new Gauge({
    name: `${prefix}upstream_in_flight`,
    help: 'Requests in flight to the upstream.',
    labelNames: ['upstream'],
    registers,
    collect() {
      this.reset()
      for (const u of snapshot()) this.set({ upstream: u.name }, count(u.inFlight))
    },
  })
  new Counter({
    name: `${prefix}upstream_ejections_total`,
    help: 'Times the circuit breaker ejected the upstream.',
    labelNames: ['upstream'],
    registers,
    collect() {
      this.reset()
      for (const u of snapshot()) this.inc({ upstream: u.name }, count(u.ejections))
    },
  })
  new Counter({
    name: `${prefix}upstream_panic_picks_total`,
    help: 'Requests sent to the upstream while its pool was in panic mode (every upstream out of service).',
    labelNames: ['upstream'],
    registers,
    collect() {
      this.reset()
      for (const u of snapshot()) this.inc({ upstream: u.name }, count(u.panicPicks ?? 0))
    },
  })
  new Gauge({
    name: `${prefix}upstream_ttft_ewma_seconds`,
    help: 'Moving average of the upstream time to first token (absent until measured).',
    labelNames: ['upstream'],
    registers,
    collect() {
      this.reset()
      for (const u of snapshot()) {
        if (typeof u.ewmaTtftMs === 'number' && Number.isFinite(u.ewmaTtftMs)) this.set({ upstream: u.name }, u.ewmaTtftMs / 1000)
      }
    },
  })
}

/** Usage sink metrics; returns a function that detaches the delivery listener (call it on close). */
export function registerUsageMetrics(registry: Registry, prefix: string, source: UsageSource, log: FastifyBaseLogger): () => void {
  const stats = perScrape<UsageStats | null>(() => source.stats(), null, log, 'usage')
  const registers = [registry]
  const gauge = (name: string, help: string, read: (s: UsageStats) => unknown): void => {
    new Gauge({
      name: `${prefix}${name}`,
      help,
      registers,
      collect() {
        const s = stats()
        if (s !== null) this.set(count(read(s)))
      },
    })
  }
  const counter = (name: string, help: string, read: (s: UsageStats) => unknown): void => {
    new Counter({
      name: `${prefix}${name}`,
      help,
      registers,
      collect() {
        const s = stats()
        if (s === null) return
        this.reset()
        this.inc(count(read(s)))
      },
    })
  }
  gauge('usage_queue_depth', 'Usage records waiting for delivery.', (s) => s.queueDepth)
  gauge('usage_spool_bytes', 'Bytes of usage records in the on-disk spool.', (s) => s.spoolBytes)
  counter('usage_delivered_total', 'Usage records delivered to the webhook.', (s) => s.delivered)
  counter('usage_delivery_failures_total', 'Failed webhook deliveries.', (s) => s.deliveryFailures)
  counter('usage_dropped_total', 'Usage records dropped (spool full).', (s) => s.dropped)
  counter(
    'usage_not_spooled_total',
    'Usage records never spooled (spool full with whenFull stop-spooling, spool closed, a write error).',
    (s) => s.notSpooled,
  )

  const events = source.events
  if (events === undefined || typeof events.on !== 'function') return () => {}
  const delivery = new Histogram({
    name: `${prefix}usage_delivery_duration_seconds`,
    help: 'Webhook delivery latency, by outcome.',
    labelNames: ['ok'],
    buckets: [...DELIVERY_BUCKETS],
    registers,
  })
  const onDelivery = (event: UsageDeliveryEvent): void => {
    if (typeof event !== 'object' || event === null) return
    delivery.observe({ ok: event.ok === true ? 'true' : 'false' }, count(event.latencyMs) / 1000)
  }
  events.on('delivery', onDelivery)
  return () => {
    events.off('delivery', onDelivery)
  }
}

export function registerRateLimitMetrics(registry: Registry, prefix: string, source: RateLimitsSource): void {
  const registers = [registry]
  new Gauge({
    name: `${prefix}ratelimit_redis_up`,
    help: 'Whether the rate-limit Redis store is reachable (1) or limits fall back to memory (0).',
    registers,
    collect() {
      this.set(source.redisHealthy === true ? 1 : 0)
    },
  })
  new Counter({
    name: `${prefix}ratelimit_redis_fallbacks_total`,
    help: 'Rate-limit decisions taken in memory because Redis was unavailable.',
    registers,
    collect() {
      this.reset()
      this.inc(count(source.fallbacks))
    },
  })
}
