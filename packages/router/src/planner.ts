import { errors, type LlmProxyError } from '@llmproxy/core'
import type { Lease } from '@llmproxy/upstreams'
import type { ResolvedRoute } from './models.js'
import type { Retry, RetryOn } from './options.js'

/** Time and chance, injected so the planner can be tested without waiting. */
export interface Clock {
  /** Monotonic ms (`performance.now()`): the request's budget. */
  now(): number
  /** Epoch ms (`Date.now()`): Retry-After holds, which pools keep as epoch times. */
  wall(): number
  /** [0, 1): backoff jitter. */
  random(): number
}

export const systemClock: Clock = { now: () => performance.now(), wall: () => Date.now(), random: Math.random }

/** Why an attempt was abandoned before the commit point. */
export type FailureKind = 'connect' | 'timeout' | 'stall' | 'status' | 'error'

/** What to do next. */
export type Plan =
  | { readonly type: 'attempt'; readonly lease: Lease }
  /** Every candidate of the route is at its concurrency limit: wait in the pool's queue (then `afterQueue`). */
  | { readonly type: 'queue' }
  /** Nothing to try now: call `next` again after this delay (a backoff, or a Retry-After hold). */
  | { readonly type: 'wait'; readonly delayMs: number }
  | { readonly type: 'fail'; readonly error: LlmProxyError }

const QUEUE: Plan = { type: 'queue' }
/** Waits for a Retry-After hold end this much later, so the hold has surely ended (timer and clock granularity). */
const HOLD_SLACK_MS = 5

/**
 * Which upstream or fallback a request tries next, within `retry.attempts` and `retry.budgetMs`: the upstreams
 * of the requested model's pool not yet tried, then each fallback model's, then — after a jittered, doubling
 * backoff, or an upstream's Retry-After — another round. Pure logic over the pools' synchronous `tryAcquire`.
 */
export class AttemptPlanner {
  /** The route being tried: the requested model's, or one of its fallbacks. */
  route: ResolvedRoute
  /** Attempts started so far. */
  attempts = 0
  /** Upstreams tried in this round of this route (excluded from the next pick). */
  readonly tried = new Set<string>()
  private readonly primary: ResolvedRoute
  /** The model the client asked for (named in the planner's own errors). */
  private readonly model: string
  private readonly retry: Retry
  private readonly retryOn: ReadonlySet<RetryOn>
  private readonly startedAt: number
  private readonly clock: Clock
  /** Index into primary.fallbacks of the route being tried; -1 = the primary. */
  private fallbackIndex = -1
  private attemptsThisRound = 0
  private backoffMs: number
  /** The longest Retry-After of this round's 429s. */
  private retryAfterMs = 0
  /** Time spent waiting out Retry-After holds (bounded by retry.maxRetryAfterMs). */
  private waitedMs = 0
  private lastError: LlmProxyError | null = null

  constructor(
    primary: ResolvedRoute,
    model: string,
    retry: Retry,
    retryOn: ReadonlySet<RetryOn>,
    startedAt: number,
    clock: Clock = systemClock,
  ) {
    this.primary = primary
    this.model = model
    this.route = primary
    this.retry = retry
    this.retryOn = retryOn
    this.startedAt = startedAt
    this.clock = clock
    this.backoffMs = retry.backoffMs
  }

  next(): Plan {
    if (!this.canRetry())
      return this.fail(this.lastError ?? errors.upstreamUnavailable(`No upstream could answer for model "${this.model}".`))
    const lease = this.route.pool.tryAcquire(this.tried)
    if (lease === 'busy') return QUEUE
    return lease === null ? this.advance() : this.started(lease)
  }

  /** The pool's queue handed over a lease, or nothing (null: no candidate is left). */
  afterQueue(lease: Lease | null): Plan {
    return lease === null ? this.advance() : this.started(lease)
  }

  /** An attempt was abandoned; a 429 may say how long its upstream is held back. */
  failed(error: LlmProxyError, retryAfterMs?: number): void {
    this.lastError = error
    if (retryAfterMs !== undefined) this.retryAfterMs = Math.max(this.retryAfterMs, retryAfterMs)
  }

  /** Whether a failure of this kind (and status) may move the request to another attempt. */
  retryable(kind: FailureKind, status?: number): boolean {
    // A connection lost before the first token counts as a connect failure.
    if (kind === 'status') return status !== undefined && this.retryOn.has(status as RetryOn)
    return this.retryOn.has(kind === 'error' ? 'connect' : kind)
  }

  /** Whether another attempt may start: attempts and budget left. */
  canRetry(): boolean {
    return this.attempts < this.retry.attempts && this.clock.now() - this.startedAt < this.retry.budgetMs
  }

  /** Whether a fallback model is still untried (a context-length 400 may go there). */
  hasFallbackLeft(): boolean {
    return this.fallbackIndex + 1 < this.primary.fallbacks.length
  }

  /** The current route has nothing more to give: the next fallback, or another round after a backoff. */
  advance(): Plan {
    const fallbacks = this.primary.fallbacks
    if (this.fallbackIndex + 1 < fallbacks.length) {
      this.fallbackIndex++
      this.route = fallbacks[this.fallbackIndex] as ResolvedRoute
      this.tried.clear()
      return this.next()
    }
    const retry = this.retry
    let delay: number
    if (this.attemptsThisRound === 0) {
      // Nothing could even be tried: worth waiting only for upstreams a 429 holds back until their Retry-After.
      const holdEnds = this.primary.pool.holdEnds()
      if (holdEnds === 0) return this.fail(this.lastError ?? errors.upstreamUnavailable(`No healthy upstream for model "${this.model}".`))
      delay = Math.max(0, holdEnds - this.clock.wall()) + HOLD_SLACK_MS
    } else {
      // Another round over the same upstreams: back off (full jitter, doubling), at least the Retry-After.
      delay = Math.max(this.retryAfterMs === 0 ? 0 : this.retryAfterMs + HOLD_SLACK_MS, this.clock.random() * this.backoffMs)
      this.backoffMs *= 2
    }
    if ((this.attemptsThisRound === 0 || this.retryAfterMs > 0) && this.waitedMs + delay > retry.maxRetryAfterMs) {
      const seconds = String(Math.ceil(delay / 1000))
      return this.fail(
        this.lastError ??
          errors.rateLimited('The upstreams are rate limiting requests.', 'llmproxy_upstream_rate_limited', { 'retry-after': seconds }),
      )
    }
    this.waitedMs += delay
    this.retryAfterMs = 0
    this.attemptsThisRound = 0
    this.fallbackIndex = -1
    this.route = this.primary
    this.tried.clear()
    if (this.clock.now() + delay - this.startedAt >= retry.budgetMs)
      return this.fail(this.lastError ?? errors.upstreamTimeout('The retry budget ran out.'))
    return { type: 'wait', delayMs: delay }
  }

  private started(lease: Lease): Plan {
    this.tried.add(lease.upstream.name)
    this.attemptsThisRound++
    this.attempts++
    return { type: 'attempt', lease }
  }

  /** The request fails; callers pass the last attempt's error when there was one (it says more than the planner's own). */
  private fail(error: LlmProxyError): Plan {
    return { type: 'fail', error }
  }
}
