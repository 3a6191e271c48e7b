import { randomBytes } from 'node:crypto'
import { type KeyLimits, type LlmHookRegistry, type LlmProxyError, type Rejection, sendError, type UsageRecord } from '@llmproxy/core'
import { clientApiOf, wireOf } from '@llmproxy/protocols'
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { rateLimitErrors } from './errors.js'
import { type RateLimitOptions, type RateLimitOptionsInput, resolveOptions } from './options.js'
import type { RedisHealth } from './redis-store.js'
import { expectedTokens } from './reservation.js'
import { type Hold, kLimitState, RequestLimitState } from './state.js'
import type { CheckResult, LimitStore, MemoryStore } from './store.js'
import { formatDuration, MINUTE_MS, PeriodClock, type QuotaPer, retryAfterSeconds, WINDOW_GRACE_MS } from './windows.js'

/** A request limiter made by @fastify/rate-limit's `createRateLimit()`. */
export type Limiter = ReturnType<FastifyInstance['createRateLimit']>
type LimiterResult = Awaited<ReturnType<Limiter>>
type Counted = Extract<LimiterResult, { isAllowed: false }>

/** The same limiter on the local store and, with `store: 'redis'`, on Redis. */
export interface LimiterPair {
  local: Limiter
  shared: Limiter | null
}

export interface RequestLimiters {
  globalRps: LimiterPair
  globalRpm: LimiterPair
  keyRps: LimiterPair
  keyRpm: LimiterPair
}

/** The options in force, replaced by `update()` (read by the limiters' `max` callbacks too). */
export interface LiveOptions {
  current: RateLimitOptions
}

export interface SharedBackend {
  store: LimitStore
  health: RedisHealth
  slotTtlMs: number
}

/** What `fastify.rateLimits.usage(keyId)` reports. */
export interface KeyUsage {
  tpm: { limit: number; used: number; resetMs: number } | null
  quota: { limit: number; used: number; remaining: number; period: QuotaPer; resetAt: string } | null
  concurrency: { limit: number; inFlight: number } | null
}

/** The `fastify.rateLimits` decorator (admin API, metrics). */
export interface RateLimits {
  /** Current usage of a key against its limits (`limits`: the key's own; default: the last ones auth gave for it). */
  usage(keyId: string, limits?: KeyLimits | null): Promise<KeyUsage>
  /** False while Redis is unreachable (always false with the memory store). */
  readonly redisHealthy: boolean
  /** Limit operations served by the local store because Redis was unreachable. */
  readonly fallbacks: number
  /** Hot reload: validates the options (throws a ConfigError) and applies `global`, `perKey` and `reserveTokens`; store settings need a restart. */
  update(options: RateLimitOptionsInput): void
}

const QUOTA_GRACE_MS = 24 * 3600_000
/** Key limits remembered for `usage(keyId)` without explicit limits. */
const MAX_REMEMBERED_KEYS = 10_000

const H_LIMIT_REQUESTS = 'x-ratelimit-limit-requests'
const H_REMAINING_REQUESTS = 'x-ratelimit-remaining-requests'
const H_RESET_REQUESTS = 'x-ratelimit-reset-requests'
const H_LIMIT_TOKENS = 'x-ratelimit-limit-tokens'
const H_REMAINING_TOKENS = 'x-ratelimit-remaining-tokens'
const H_RESET_TOKENS = 'x-ratelimit-reset-tokens'

function requestHeaders(result: Counted): Record<string, string> {
  return {
    'retry-after': retryAfterSeconds(result.ttl),
    [H_LIMIT_REQUESTS]: `${result.max}`,
    [H_REMAINING_REQUESTS]: '0',
    [H_RESET_REQUESTS]: formatDuration(result.ttl),
  }
}

export class RateLimitEngine implements RateLimits {
  private readonly live: LiveOptions
  private readonly limiters: RequestLimiters
  private readonly local: MemoryStore
  private readonly shared: SharedBackend | null
  private readonly log: FastifyBaseLogger
  private readonly hooks: LlmHookRegistry
  private readonly clock = new PeriodClock()
  private readonly seen = new Map<string, KeyLimits>()
  /** Makes concurrency slot ids unique across instances sharing Redis (request ids are only unique per process). */
  private readonly instanceId = randomBytes(6).toString('hex')

  constructor(live: LiveOptions, limiters: RequestLimiters, local: MemoryStore, shared: SharedBackend | null, fastify: FastifyInstance) {
    this.live = live
    this.limiters = limiters
    this.local = local
    this.shared = shared
    this.log = fastify.log
    this.hooks = fastify.llm
  }

  get redisHealthy(): boolean {
    return this.shared?.health.healthy === true
  }

  get fallbacks(): number {
    return this.shared === null ? 0 : this.shared.health.fallbacks
  }

  update(input: RateLimitOptionsInput): void {
    const options = resolveOptions(input)
    const before = this.live.current
    if (
      options.store !== before.store ||
      JSON.stringify(options.redis) !== JSON.stringify(before.redis) ||
      options.quotaStateFile !== before.quotaStateFile
    ) {
      this.log.warn('rate-limit: store, redis and quotaStateFile changes take effect after a restart; new limits applied')
    }
    this.live.current = { ...options, store: before.store, redis: before.redis, quotaStateFile: before.quotaStateFile }
  }

  /** onRequest: global and per-key request limits, then the concurrency slot. */
  readonly onRequest = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
    if (request.routeOptions.config.rateLimit === false) return undefined
    const { global, perKey } = this.live.current
    const llm = request.llm
    if (global.rps !== undefined) {
      const result = await this.hit(this.limiters.globalRps, request)
      if (result.isAllowed === false && result.isExceeded) {
        return this.reject(request, reply, 'rate_limit', rateLimitErrors.requests('gateway', result.max, 'second', requestHeaders(result)))
      }
    }
    if (global.rpm !== undefined) {
      const result = await this.hit(this.limiters.globalRpm, request)
      if (result.isAllowed === false && result.isExceeded) {
        return this.reject(request, reply, 'rate_limit', rateLimitErrors.requests('gateway', result.max, 'minute', requestHeaders(result)))
      }
    }

    const own = llm.keyLimits
    const rps = own?.rps ?? perKey.rps
    const rpm = own?.rpm ?? perKey.rpm
    const tpm = own?.tpm ?? perKey.tpm
    const concurrency = own?.concurrency ?? perKey.concurrency
    const quota = own?.quota
    if (rps === undefined && rpm === undefined && tpm === undefined && concurrency === undefined && quota === undefined) return undefined

    const keyId = llm.keyId
    if (keyId !== null && own !== null) this.remember(keyId, own)
    const state = new RequestLimitState(
      keyId === null ? `ip:${request.ip}` : `key:${keyId}`,
      keyId,
      rps,
      rpm,
      tpm,
      concurrency,
      quota,
      this.settle,
    )
    request[kLimitState] = state

    let shown: Counted | null = null
    if (rps !== undefined) {
      const result = await this.hit(this.limiters.keyRps, request)
      if (result.isAllowed === false) {
        if (result.isExceeded)
          return this.reject(request, reply, 'rate_limit', rateLimitErrors.requests('key', rps, 'second', requestHeaders(result)))
        shown = result
      }
    }
    if (rpm !== undefined) {
      const result = await this.hit(this.limiters.keyRpm, request)
      if (result.isAllowed === false) {
        if (result.isExceeded)
          return this.reject(request, reply, 'rate_limit', rateLimitErrors.requests('key', rpm, 'minute', requestHeaders(result)))
        shown = result
      }
    }
    if (shown !== null) {
      reply.header(H_LIMIT_REQUESTS, shown.max)
      reply.header(H_REMAINING_REQUESTS, shown.remaining)
      reply.header(H_RESET_REQUESTS, formatDuration(shown.ttl))
    }

    if (concurrency === undefined && tpm === undefined && quota === undefined) return undefined
    // Fires once whether the response finished or the client went away (Fastify's onResponse and
    // onRequestAbort both miss a client that disconnects after its body was read).
    reply.raw.on('close', state.onClose)
    if (concurrency === undefined) return undefined
    const slotKey = `c:${state.subject}`
    state.slotMember = `${this.instanceId}:${request.id}`
    const ttlMs = this.shared === null ? 0 : this.shared.slotTtlMs
    let store = this.pick()
    let result: CheckResult
    try {
      result = await store.acquire(slotKey, state.slotMember, concurrency, ttlMs)
    } catch (err) {
      store = this.fallBack(err)
      result = await store.acquire(slotKey, state.slotMember, concurrency, ttlMs)
    }
    if (!result.ok) {
      return this.reject(request, reply, 'concurrency', rateLimitErrors.concurrency(concurrency, { 'retry-after': '1' }))
    }
    state.slot = store
    if (state.settled) this.releaseSlot(state)
    return undefined
  }

  /** preHandler (the body is parsed): token reservation against the key's TPM window and quota period. */
  readonly preHandler = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
    const state = request[kLimitState]
    if (state === null || (state.tpm === undefined && state.quota === undefined) || state.settled) return undefined
    const body = request.body
    if (body === null || typeof body !== 'object' || Buffer.isBuffer(body)) return undefined
    const wire = wireOf(clientApiOf(request.url))
    const amount = expectedTokens(wire, body as Record<string, unknown>, request.headers['content-length'], this.live.current.reserveTokens)
    const now = Date.now()

    const tpm = state.tpm
    if (tpm !== undefined) {
      const resetMs = MINUTE_MS - (now % MINUTE_MS)
      const hold = this.tpmHold(state.subject, now)
      const result = await this.reserve(hold, amount, tpm)
      if (!result.ok) {
        const headers = {
          'retry-after': retryAfterSeconds(resetMs),
          [H_LIMIT_TOKENS]: `${tpm}`,
          [H_REMAINING_TOKENS]: `${Math.max(0, tpm - result.value)}`,
          [H_RESET_TOKENS]: formatDuration(resetMs),
        }
        return this.reject(request, reply, 'token_limit', rateLimitErrors.tokens(tpm, amount, result.value, headers))
      }
      if (!this.hold(state, hold, amount, 'tpm')) return undefined
      reply.header(H_LIMIT_TOKENS, tpm)
      reply.header(H_REMAINING_TOKENS, Math.max(0, tpm - result.value))
      reply.header(H_RESET_TOKENS, formatDuration(resetMs))
    }

    const quota = state.quota
    if (quota !== undefined) {
      const period = this.clock.current(quota.per, now)
      const hold = this.quotaHold(state.subject, quota.per, now)
      const result = await this.reserve(hold, amount, quota.tokens)
      if (!result.ok) {
        const headers = { 'retry-after': retryAfterSeconds(period.endsAt - now) }
        return this.reject(request, reply, 'quota', rateLimitErrors.quota(quota.tokens, quota.per, result.value, amount, headers))
      }
      this.hold(state, hold, amount, 'quota')
    }
    return undefined
  }

  /** onUsage: charges the actual tokens and gives back the reservation (exactly once per request). */
  readonly onUsage = (record: UsageRecord, request: FastifyRequest): void => {
    const state = request[kLimitState]
    if (state === null || state.charged) return
    state.charged = true
    const total = record.totalTokens
    // A request without a reservation (its body was not JSON) is charged to the current window and period.
    if (state.tpm !== undefined) this.charge(state.tpmHold ?? this.tpmHold(state.subject, Date.now()), total)
    if (state.quota !== undefined) this.charge(state.quotaHold ?? this.quotaHold(state.subject, state.quota.per, Date.now()), total)
  }

  async usage(keyId: string, limits?: KeyLimits | null): Promise<KeyUsage> {
    const own = limits ?? this.seen.get(keyId) ?? null
    const perKey = this.live.current.perKey
    const subject = `key:${keyId}`
    const now = Date.now()
    const store = this.pick()
    const tpm = own?.tpm ?? perKey.tpm
    const concurrency = own?.concurrency ?? perKey.concurrency
    const quota = own?.quota
    const report: KeyUsage = { tpm: null, quota: null, concurrency: null }
    if (tpm !== undefined) {
      const minute = Math.floor(now / MINUTE_MS)
      report.tpm = { limit: tpm, used: await store.get(`t:${minute}:${subject}`), resetMs: (minute + 1) * MINUTE_MS - now }
    }
    if (quota !== undefined) {
      const period = this.clock.current(quota.per, now)
      const used = await store.get(`q:${period.name}:${subject}`)
      report.quota = {
        limit: quota.tokens,
        used,
        remaining: Math.max(0, quota.tokens - used),
        period: quota.per,
        resetAt: new Date(period.endsAt).toISOString(),
      }
    }
    if (concurrency !== undefined) report.concurrency = { limit: concurrency, inFlight: await store.inFlight(`c:${subject}`) }
    return report
  }

  /** The response is over: give back the slot, and the reservations unless the usage record already reconciled them. */
  private readonly settle = (state: RequestLimitState): void => {
    if (state.settled) return
    state.settled = true
    this.releaseSlot(state)
    if (state.charged) return
    this.giveBack(state.tpmHold)
    this.giveBack(state.quotaHold)
  }

  private hold(state: RequestLimitState, hold: Hold, amount: number, kind: 'tpm' | 'quota'): boolean {
    hold.reserved = amount
    if (kind === 'tpm') state.tpmHold = hold
    else state.quotaHold = hold
    if (!state.settled) return true
    // The client went away while we were reserving.
    this.giveBack(hold)
    return false
  }

  /** A hold on the key's current TPM window (fixed, aligned to the UTC minute). Its store is set when it is used. */
  private tpmHold(subject: string, now: number): Hold {
    const minute = Math.floor(now / MINUTE_MS)
    return { store: this.local, key: `t:${minute}:${subject}`, expireAt: (minute + 1) * MINUTE_MS + WINDOW_GRACE_MS, reserved: 0 }
  }

  /** A hold on the key's current quota period (UTC day or calendar month). */
  private quotaHold(subject: string, per: QuotaPer, now: number): Hold {
    const period = this.clock.current(per, now)
    return { store: this.local, key: `q:${period.name}:${subject}`, expireAt: period.endsAt + QUOTA_GRACE_MS, reserved: 0 }
  }

  /** Charges `total` tokens and gives back what the hold reserved (to the store that holds the reservation). */
  private charge(hold: Hold, total: number): void {
    const store = hold.reserved === 0 ? this.pick() : hold.store
    const delta = total - hold.reserved
    hold.reserved = 0
    if (delta !== 0) store.add(hold.key, delta, hold.expireAt).catch((err: unknown) => this.shared?.health.down(err))
  }

  private giveBack(hold: Hold | null): void {
    if (hold === null || hold.reserved === 0) return
    hold.store.add(hold.key, -hold.reserved, hold.expireAt).catch((err: unknown) => this.shared?.health.down(err))
    hold.reserved = 0
  }

  private releaseSlot(state: RequestLimitState): void {
    const store = state.slot
    if (store === null) return
    state.slot = null
    store.release(`c:${state.subject}`, state.slotMember).catch((err: unknown) => this.shared?.health.down(err))
  }

  private async reserve(hold: Hold, amount: number, limit: number): Promise<CheckResult> {
    let store = this.pick()
    let result: CheckResult
    try {
      result = await store.reserve(hold.key, amount, limit, hold.expireAt)
    } catch (err) {
      store = this.fallBack(err)
      result = await store.reserve(hold.key, amount, limit, hold.expireAt)
    }
    hold.store = store
    return result
  }

  private async hit(pair: LimiterPair, request: FastifyRequest): Promise<LimiterResult> {
    if (pair.shared !== null && this.sharedUsable()) {
      try {
        return await pair.shared(request)
      } catch (err) {
        this.fallBack(err)
      }
    }
    return pair.local(request)
  }

  /** The store for the next operation: Redis while it is healthy, else the local one. */
  private pick(): LimitStore {
    return this.shared !== null && this.sharedUsable() ? this.shared.store : this.local
  }

  /** True when Redis is configured and healthy; counts a fallback when it is configured but down. */
  private sharedUsable(): boolean {
    const shared = this.shared
    if (shared === null) return false
    if (shared.health.healthy) return true
    shared.health.fallbacks++
    return false
  }

  /** A Redis operation failed: mark it down (logged once) and serve this operation locally. */
  private fallBack(err: unknown): LimitStore {
    if (this.shared !== null) {
      this.shared.health.down(err)
      this.shared.health.fallbacks++
    }
    return this.local
  }

  private remember(keyId: string, limits: KeyLimits): void {
    if (this.seen.get(keyId) === limits) return
    if (this.seen.size >= MAX_REMEMBERED_KEYS && !this.seen.has(keyId)) {
      const oldest = this.seen.keys().next()
      if (oldest.done !== true) this.seen.delete(oldest.value)
    }
    this.seen.set(keyId, limits)
  }

  private reject(request: FastifyRequest, reply: FastifyReply, reason: Rejection['reason'], error: LlmProxyError): FastifyReply {
    this.hooks.emitReject({ reason, keyId: request.llm.keyId, statusCode: error.statusCode }, request)
    return sendError(reply, error)
  }
}
