import type { KeyLimits, LlmHookRegistry, LlmProxyError, Rejection, UsageRecord } from '@llmproxy/core'
import { clientApiOf, pathOf, sendError, wireOf } from '@llmproxy/protocols'
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { rateLimitErrors } from './errors.js'
import { markerKey, quotaKey, slotKey, subjectTag, tpmKey, type UniqueIds } from './keys.js'
import { type RateLimitOptions, type RateLimitOptionsInput, resolveOptions } from './options.js'
import type { RedisBackend } from './redis-backend.js'
import type { RequestCount, RequestCounter } from './request-windows.js'
import { expectedTokens, shrinkable } from './reservation.js'
import { type Counter, type Hold, kLimitState, RequestLimitState } from './state.js'
import type { CheckResult, LocalStore } from './store.js'
import { formatDuration, MINUTE_MS, PeriodClock, type QuotaPer, retryAfterSeconds, WINDOW_GRACE_MS } from './windows.js'

/**
 * A request limiter made by @fastify/rate-limit's `createRateLimit()` (on Redis): the part of its answer read here.
 * Spelled out rather than taken from `FastifyInstance['createRateLimit']`, which exists only with @fastify/rate-limit's
 * augmentation of Fastify: the published declarations would not compile in an app that does not import it.
 */
export type Limiter = (
  request: FastifyRequest,
) => Promise<{ isAllowed: true } | { isAllowed: false; max: number; remaining: number; ttl: number; isExceeded: boolean }>

/** One request limit: counted in this process and, with `store: 'redis'`, by @fastify/rate-limit on Redis. */
export interface LimiterPair {
  local: RequestCounter
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
  /** Whether Redis can be used now; null when the store is memory (no Redis in use). */
  readonly redisHealthy: boolean | null
  /** Limit operations served by the local store because Redis was unreachable. */
  readonly fallbacks: number
  /** Hot reload: validates the options (throws a ConfigError) and applies `global`, `perKey` and `reserveTokens`; store settings need a restart. */
  update(options: RateLimitOptionsInput): void
  /** This process' id in the shared store: the prefix of its concurrency slots' ids. */
  readonly instanceId: string
  /**
   * Instances (their `instanceId`s) known to be gone, as a worker that died: their concurrency slots in Redis are
   * dropped when their keys are next counted, not held until `redis.slotTtlMs`. Replaces the previous list.
   */
  forgetInstances(instanceIds: string[]): void
}

const QUOTA_GRACE_MS = 24 * 3600_000
/** The subject of the gateway-wide request limits. */
const GLOBAL_SUBJECT = 'all'
/** Key limits remembered for `usage(keyId)` without explicit limits. */
const MAX_REMEMBERED_KEYS = 10_000

const H_LIMIT_REQUESTS = 'x-ratelimit-limit-requests'
const H_REMAINING_REQUESTS = 'x-ratelimit-remaining-requests'
const H_RESET_REQUESTS = 'x-ratelimit-reset-requests'
const H_LIMIT_TOKENS = 'x-ratelimit-limit-tokens'
const H_REMAINING_TOKENS = 'x-ratelimit-remaining-tokens'
const H_RESET_TOKENS = 'x-ratelimit-reset-tokens'

/**
 * `retry-after` for a request that fits once the window resets; for one that can never fit (it alone needs more
 * than the limit), none, and `x-should-retry: false`, which the OpenAI and Anthropic SDKs obey instead of retrying a
 * 429 that cannot pass.
 */
function whenToRetry(neverFits: boolean, resetMs: number): Record<string, string> {
  return neverFits ? { 'x-should-retry': 'false' } : { 'retry-after': retryAfterSeconds(resetMs) }
}

function requestHeaders(result: RequestCount): Record<string, string> {
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
  private readonly local: LocalStore
  private readonly shared: RedisBackend | null
  private readonly ids: UniqueIds
  private readonly slotTtlMs: number
  private readonly log: FastifyBaseLogger
  private readonly hooks: LlmHookRegistry
  private readonly clock = new PeriodClock()
  private readonly seen = new Map<string, KeyLimits>()
  private goneTimer: NodeJS.Timeout | undefined = undefined

  constructor(
    live: LiveOptions,
    limiters: RequestLimiters,
    local: LocalStore,
    shared: RedisBackend | null,
    ids: UniqueIds,
    fastify: FastifyInstance,
  ) {
    this.live = live
    this.limiters = limiters
    this.local = local
    this.shared = shared
    this.ids = ids
    this.slotTtlMs = live.current.redis?.slotTtlMs ?? 0
    this.log = fastify.log
    this.hooks = fastify.llm
  }

  get redisHealthy(): boolean | null {
    return this.shared === null ? null : this.shared.healthy
  }

  get fallbacks(): number {
    return this.shared === null ? 0 : this.shared.fallbacks
  }

  get instanceId(): string {
    return this.ids.instance
  }

  forgetInstances(instanceIds: string[]): void {
    // The memory store has nothing to forget: a worker's slots there are the primary's, given back when it dies.
    const shared = this.shared
    if (shared === null) return
    shared.store.gone = instanceIds.filter((id) => id !== this.ids.instance)
    // Past slotTtlMs their slots have expired in Redis anyway: stop looking for them (each look reads the set).
    clearTimeout(this.goneTimer)
    this.goneTimer = setTimeout(() => {
      shared.store.gone = []
    }, this.slotTtlMs)
    this.goneTimer.unref()
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

  /**
   * onRequest: per-key and global request limits, then the concurrency slot. The key's own windows are counted first:
   * a key refused by its own limit does not spend the gateway-wide budget of the others. The stores answer
   * synchronously unless Redis is in use, and then nothing here is awaited: an `await` costs a microtask turn even on
   * a value.
   */
  readonly onRequest = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
    if (request.routeOptions.config.rateLimit === false) return undefined
    const { global, perKey } = this.live.current
    const llm = request.llm
    const own = llm.keyLimits
    const rps = own?.rps ?? perKey.rps
    const rpm = own?.rpm ?? perKey.rpm
    const tpm = own?.tpm ?? perKey.tpm
    const concurrency = own?.concurrency ?? perKey.concurrency
    const quota = own?.quota
    const keyed = rps !== undefined || rpm !== undefined || tpm !== undefined || concurrency !== undefined || quota !== undefined

    let state: RequestLimitState | null = null
    let shown: RequestCount | null = null
    if (keyed) {
      const keyId = llm.keyId
      if (keyId !== null && own !== null) this.remember(keyId, own)
      state = new RequestLimitState(
        keyId === null ? `{ip:${request.ip}}` : `{key:${keyId}}`,
        keyId,
        rps,
        rpm,
        tpm,
        concurrency,
        quota,
        this.finish,
        this,
      )
      request[kLimitState] = state
      if (rps !== undefined) {
        let result = this.hit(this.limiters.keyRps, request, state.tag, rps)
        if (result instanceof Promise) result = await result
        if (result.exceeded)
          return this.reject(request, reply, 'rate_limit', rateLimitErrors.requests('key', rps, 'second', requestHeaders(result)))
        shown = result
      }
      if (rpm !== undefined) {
        let result = this.hit(this.limiters.keyRpm, request, state.tag, rpm)
        if (result instanceof Promise) result = await result
        if (result.exceeded)
          return this.reject(request, reply, 'rate_limit', rateLimitErrors.requests('key', rpm, 'minute', requestHeaders(result)))
        shown = result
      }
    }
    if (global.rps !== undefined) {
      let result = this.hit(this.limiters.globalRps, request, GLOBAL_SUBJECT, global.rps)
      if (result instanceof Promise) result = await result
      if (result.exceeded) {
        return this.reject(request, reply, 'rate_limit', rateLimitErrors.requests('gateway', result.max, 'second', requestHeaders(result)))
      }
    }
    if (global.rpm !== undefined) {
      let result = this.hit(this.limiters.globalRpm, request, GLOBAL_SUBJECT, global.rpm)
      if (result instanceof Promise) result = await result
      if (result.exceeded) {
        return this.reject(request, reply, 'rate_limit', rateLimitErrors.requests('gateway', result.max, 'minute', requestHeaders(result)))
      }
    }
    if (state === null) return undefined
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
    state.slotMember = this.ids.next()
    let result = this.acquire(state, concurrency)
    if (result instanceof Promise) result = await result
    if (!result.ok) {
      return this.reject(request, reply, 'concurrency', rateLimitErrors.concurrency(concurrency, { 'retry-after': '1' }))
    }
    if (state.settled) this.releaseSlot(state)
    return undefined
  }

  /** preHandler (the body is parsed): token reservation against the key's TPM window and quota period. */
  readonly preHandler = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
    const state = request[kLimitState]
    if (state === null || (state.tpm === undefined && state.quota === undefined) || state.settled) return undefined
    const body = request.body
    if (body === null || typeof body !== 'object' || Buffer.isBuffer(body)) return undefined
    // The path the client asked for (under any prefix): its API, which route, and for Gemini which action (`:countTokens`).
    const route = pathOf(request.url)
    const wire = wireOf(clientApiOf(route))
    const fields = body as Record<string, unknown>
    const amount = expectedTokens(wire, route, fields, request.headers['content-length'], this.live.current.reserveTokens)
    const now = Date.now()

    const tpm = state.tpm
    if (tpm !== undefined) {
      const resetMs = MINUTE_MS - (now % MINUTE_MS)
      const hold = this.newHold(this.tpmCounter(state.tag, now))
      let result = this.reserve(hold, amount, tpm)
      if (result instanceof Promise) result = await result
      if (!result.ok) {
        const headers = {
          ...whenToRetry(amount > tpm, resetMs),
          [H_LIMIT_TOKENS]: `${tpm}`,
          [H_REMAINING_TOKENS]: `${Math.max(0, tpm - result.value)}`,
          [H_RESET_TOKENS]: formatDuration(resetMs),
        }
        return this.reject(
          request,
          reply,
          'token_limit',
          rateLimitErrors.tokens(tpm, amount, result.value, headers, shrinkable(wire, route, fields)),
        )
      }
      state.tpmHold = hold
      if (state.settled) return this.giveBack(hold) // the client went away while we were reserving
      reply.header(H_LIMIT_TOKENS, tpm)
      reply.header(H_REMAINING_TOKENS, Math.max(0, tpm - result.value))
      reply.header(H_RESET_TOKENS, formatDuration(resetMs))
    }

    const quota = state.quota
    if (quota !== undefined) {
      const period = this.clock.current(quota.per, now)
      const hold = this.newHold(this.quotaCounter(state.tag, quota.per, now))
      let result = this.reserve(hold, amount, quota.tokens)
      if (result instanceof Promise) result = await result
      if (!result.ok) {
        // Never retried by the SDKs: they would sleep until the period ends (hours, days) inside the call. The
        // retry-after still says when the quota resets.
        const headers = { ...whenToRetry(amount > quota.tokens, period.endsAt - now), 'x-should-retry': 'false' }
        return this.reject(
          request,
          reply,
          'quota',
          rateLimitErrors.quota(quota.tokens, quota.per, result.value, amount, headers, shrinkable(wire, route, fields)),
        )
      }
      state.quotaHold = hold
      if (state.settled) return this.giveBack(hold)
    }
    return undefined
  }

  /** onUsage: charges the actual tokens and gives back the reservation (exactly once per request). */
  readonly onUsage = (record: UsageRecord, request: FastifyRequest): void => {
    // A record heard from elsewhere: a request of a context without this plugin (undefined), a record the app emits,
    // or a request another context's rate-limit plugin counts (this registry hears the contexts inside it).
    const state = request[kLimitState] as RequestLimitState | null | undefined
    if (state === null || state === undefined || state.engine !== this || state.charged) return
    state.charged = true
    const total = record.totalTokens
    // A request without a reservation (its body was not JSON) is charged to the current window and period.
    if (state.tpm !== undefined) {
      const hold = state.tpmHold
      if (hold !== null) this.settle(hold, total)
      else this.charge(this.tpmCounter(state.tag, Date.now()), total)
    }
    const quota = state.quota
    if (quota !== undefined) {
      const hold = state.quotaHold
      if (hold !== null) this.settle(hold, total)
      else this.charge(this.quotaCounter(state.tag, quota.per, Date.now()), total)
    }
  }

  async usage(keyId: string, limits?: KeyLimits | null): Promise<KeyUsage> {
    const own = limits ?? this.seen.get(keyId) ?? null
    const perKey = this.live.current.perKey
    const tag = subjectTag(`key:${keyId}`)
    const now = Date.now()
    const store = this.shared?.healthy === true ? this.shared.store : this.local
    const tpm = own?.tpm ?? perKey.tpm
    const concurrency = own?.concurrency ?? perKey.concurrency
    const quota = own?.quota
    const report: KeyUsage = { tpm: null, quota: null, concurrency: null }
    if (tpm !== undefined) {
      const minute = Math.floor(now / MINUTE_MS)
      report.tpm = { limit: tpm, used: await store.get(tpmKey(tag, minute)), resetMs: (minute + 1) * MINUTE_MS - now }
    }
    if (quota !== undefined) {
      const period = this.clock.current(quota.per, now)
      const used = await store.get(quotaKey(tag, period.name))
      report.quota = {
        limit: quota.tokens,
        used,
        remaining: Math.max(0, quota.tokens - used),
        period: quota.per,
        resetAt: new Date(period.endsAt).toISOString(),
      }
    }
    if (concurrency !== undefined) report.concurrency = { limit: concurrency, inFlight: await store.inFlight(slotKey(tag)) }
    return report
  }

  /** The response is over: give back the slot, and the reservations unless the usage record already settled them. */
  private readonly finish = (state: RequestLimitState): void => {
    if (state.settled) return
    state.settled = true
    this.releaseSlot(state)
    if (state.charged) return
    if (state.tpmHold !== null) this.giveBack(state.tpmHold)
    if (state.quotaHold !== null) this.giveBack(state.quotaHold)
  }

  /** The key's current TPM window (fixed, aligned to the UTC minute). */
  private tpmCounter(tag: string, now: number): Counter {
    const minute = Math.floor(now / MINUTE_MS)
    return { key: tpmKey(tag, minute), tag, expireAt: (minute + 1) * MINUTE_MS + WINDOW_GRACE_MS }
  }

  /** The key's current quota period (UTC day or calendar month). */
  private quotaCounter(tag: string, per: QuotaPer, now: number): Counter {
    const period = this.clock.current(per, now)
    return { key: quotaKey(tag, period.name), tag, expireAt: period.endsAt + QUOTA_GRACE_MS }
  }

  private newHold(counter: Counter): Hold {
    // Fields written out: on Node 20, `{ ...counter, store, … }` (a spread followed by more fields) takes V8's slow
    // path, ~1 µs per added field, and this runs for every request with a token limit.
    const { key, tag, expireAt } = counter
    // Only Redis needs a marker (the memory store has no retried commands to deduplicate).
    const marker = this.shared === null ? '' : markerKey(tag, this.ids.next())
    return { key, tag, expireAt, store: this.local, marker, reserved: 0, reservedAt: 0, open: false }
  }

  /** Reserves `amount` on Redis when it is up, else locally (synchronously); the hold remembers where. */
  private reserve(hold: Hold, amount: number, limit: number): CheckResult | Promise<CheckResult> {
    const shared = this.shared
    return shared?.usable() ? this.reserveShared(shared, hold, amount, limit) : this.reserveLocal(hold, amount, limit)
  }

  private async reserveShared(shared: RedisBackend, hold: Hold, amount: number, limit: number): Promise<CheckResult> {
    const { key, marker, expireAt } = hold
    const sentAt = Date.now()
    let result: CheckResult
    try {
      result = await shared.store.reserve(key, marker, amount, limit, expireAt)
    } catch (err) {
      shared.down(err)
      shared.fallbacks++
      // Its outcome is unknown (a stalled Redis runs it when it resumes): undo it once Redis answers.
      shared.later(() => shared.store.cancel(key, marker, expireAt))
      return this.reserveLocal(hold, amount, limit)
    }
    hold.store = shared.store
    this.mirror(key, result.value, expireAt)
    if (result.ok) {
      hold.reserved = amount
      hold.reservedAt = sentAt
      hold.open = true
    }
    return result
  }

  private reserveLocal(hold: Hold, amount: number, limit: number): CheckResult | Promise<CheckResult> {
    const result = this.local.reserve(hold.key, hold.marker, amount, limit, hold.expireAt)
    // A promise in a gateway worker (the primary counts); synchronous with the MemoryStore.
    return result instanceof Promise
      ? result.then((done) => this.reservedLocally(hold, amount, done))
      : this.reservedLocally(hold, amount, result)
  }

  private reservedLocally(hold: Hold, amount: number, result: CheckResult): CheckResult {
    if (result.ok) {
      this.shared?.counted(hold.key, hold.tag, amount, hold.expireAt)
      hold.reserved = amount
      hold.open = true
    }
    return result
  }

  /** Charges `total` tokens for the hold's reservation, in the store that took it; once only. */
  private settle(hold: Hold, total: number): void {
    if (!hold.open) {
      // Already given back (the response closed before the usage record came): charged in full.
      if (total !== 0) this.charge(hold, total)
      return
    }
    hold.open = false
    const { key, marker, reserved, expireAt } = hold
    const shared = this.shared
    if (shared !== null && hold.store === shared.store) {
      // Sent now, or once Redis answers again if it is down, the first attempt settles as one: a Redis that restarted
      // empty meanwhile lost the marker, and the request is charged what it used. Only an attempt after one that was
      // sent is a retry (applied if that one never ran).
      let sent = false
      const attempt = (): Promise<number | null> => {
        if (sent) return shared.store.settleAgain(key, marker, total, reserved, expireAt)
        sent = true
        return shared.store.settle(key, marker, total, reserved, expireAt, hold.reservedAt)
      }
      if (!shared.healthy) shared.later(attempt)
      else {
        attempt().then(
          (value) => this.mirror(key, value, expireAt),
          (err: unknown) => {
            shared.down(err)
            shared.later(attempt)
          },
        )
      }
      return
    }
    if (total === reserved) return
    this.local.add(key, total - reserved, expireAt)
    if (shared !== null) shared.counted(key, hold.tag, total - reserved, expireAt)
  }

  /** Should Redis fail, local counting starts from the last value it gave for the counter (not from zero). */
  private mirror(key: string, value: number | null, expireAt: number): void {
    if (value !== null) this.local.mirror(key, value, expireAt)
  }

  private giveBack(hold: Hold): undefined {
    if (hold.open) this.settle(hold, 0)
    return undefined
  }

  /** Tokens without an open reservation. */
  private charge(counter: Counter, total: number): void {
    const shared = this.shared
    if (shared?.usable()) {
      const marker = markerKey(counter.tag, this.ids.next())
      const op = (): Promise<number | null> => shared.store.charge(counter.key, marker, total, counter.expireAt)
      op().then(
        (value) => this.mirror(counter.key, value, counter.expireAt),
        (err: unknown) => {
          shared.down(err)
          shared.later(op)
        },
      )
      return
    }
    this.local.add(counter.key, total, counter.expireAt)
    if (shared !== null) shared.counted(counter.key, counter.tag, total, counter.expireAt)
  }

  /** Takes a concurrency slot on Redis when it is up, else locally (synchronously). */
  private acquire(state: RequestLimitState, limit: number): CheckResult | Promise<CheckResult> {
    const shared = this.shared
    return shared?.usable() ? this.acquireShared(shared, state, limit) : this.acquireLocal(state, limit)
  }

  private async acquireShared(shared: RedisBackend, state: RequestLimitState, limit: number): Promise<CheckResult> {
    const key = slotKey(state.tag)
    const member = state.slotMember
    try {
      const result = await shared.store.acquire(key, member, limit, this.slotTtlMs)
      if (result.ok) state.slot = shared.store
      return result
    } catch (err) {
      shared.down(err)
      shared.fallbacks++
      // A slot taken late by a stalled Redis is released once it answers.
      shared.later(() => shared.store.release(key, member))
      return this.acquireLocal(state, limit)
    }
  }

  private acquireLocal(state: RequestLimitState, limit: number): CheckResult | Promise<CheckResult> {
    const result = this.local.acquire(slotKey(state.tag), state.slotMember, limit, this.slotTtlMs)
    return result instanceof Promise ? result.then((done) => this.acquiredLocally(state, done)) : this.acquiredLocally(state, result)
  }

  private acquiredLocally(state: RequestLimitState, result: CheckResult): CheckResult {
    if (result.ok) state.slot = this.local
    return result
  }

  private releaseSlot(state: RequestLimitState): void {
    const store = state.slot
    if (store === null) return
    state.slot = null
    const key = slotKey(state.tag)
    const member = state.slotMember
    const shared = this.shared
    if (shared === null || store !== shared.store) {
      void this.local.release(key, member)
      return
    }
    const release = (): Promise<void> => shared.store.release(key, member)
    if (!shared.healthy) shared.later(release)
    else {
      release().catch((err: unknown) => {
        shared.down(err)
        shared.later(release)
      })
    }
  }

  /** Counts the request on Redis when it is up, else locally (synchronously). */
  private hit(pair: LimiterPair, request: FastifyRequest, subject: string, max: number): RequestCount | Promise<RequestCount> {
    const shared = this.shared
    if (pair.shared !== null && shared?.usable()) return this.hitShared(shared, pair, request, subject, max)
    return pair.local.hit(subject, max, Date.now())
  }

  private async hitShared(
    shared: RedisBackend,
    pair: LimiterPair,
    request: FastifyRequest,
    subject: string,
    max: number,
  ): Promise<RequestCount> {
    try {
      const result = await (pair.shared as Limiter)(request)
      // No allow list is configured, so @fastify/rate-limit always counts (isAllowed: false).
      if (result.isAllowed) return { max, remaining: max, ttl: 0, exceeded: false }
      return { max: result.max, remaining: result.remaining, ttl: result.ttl, exceeded: result.isExceeded }
    } catch (err) {
      shared.down(err)
      shared.fallbacks++
      return pair.local.hit(subject, max, Date.now())
    }
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
