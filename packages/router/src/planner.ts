import { errors, type LlmProxyError } from '@llmproxy/core'
import type { AttemptResult, Lease } from '@llmproxy/upstreams'
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
export type FailureKind = 'connect' | 'timeout' | 'stall' | 'status' | 'error' | 'prefill'

/** What to do next. */
export type Plan =
  | { readonly type: 'attempt'; readonly lease: Lease }
  /** Every candidate of the route is at its concurrency limit: wait in the pool's queue (then `afterQueue`). */
  | { readonly type: 'queue' }
  /** Nothing to try now: call `next` again after this delay (a backoff, or a Retry-After hold). */
  | { readonly type: 'wait'; readonly delayMs: number }
  | { readonly type: 'fail'; readonly error: LlmProxyError }

const QUEUE: Plan = { type: 'queue' }
/** A lease given back without an attempt: neutral for the upstream's health. */
const NOT_STARTED: AttemptResult = { ok: false, kind: 'aborted' }
const always = (): boolean => true
/** Waits for a Retry-After hold end this much later, so the hold has surely ended (timer and clock granularity). */
const HOLD_SLACK_MS = 5
/** At most this many rounds (so attempts on one upstream) of one request within ROUND_WINDOW_MS. */
const ROUNDS_PER_WINDOW = 4
const ROUND_WINDOW_MS = 3000
/** Why no round can be waited for (roundDelay's negative answers). */
const NOTHING_TO_WAIT_FOR = -1
const WAIT_TOO_LONG = -2
const BUDGET_SPENT = -3

/**
 * Which upstream or fallback a request tries next, within `retry.attempts` and `retry.budgetMs`: the other
 * upstreams of the requested model's pool; then the same pool again after a backoff (a transient error deserves a
 * retry of the model the client asked for, as long as attempts remain for the fallbacks); then the fallback models
 * in order; then further rounds. Pure logic over the pools' synchronous `tryAcquire`, with an injected clock.
 */
export class AttemptPlanner {
  /** The route being tried: the requested model's, or one of its fallbacks. */
  route: ResolvedRoute
  /** Attempts started so far. */
  attempts = 0
  /** Upstreams tried in this round of this route (excluded from the next pick). */
  readonly tried = new Set<string>()
  /** The requested model's route (the one in force, for a request a reload took out of a retired pool's queue). */
  private primary: ResolvedRoute
  /** The model the client asked for (named in the planner's own errors). */
  private readonly model: string
  private readonly retry: Retry
  private readonly retryOn: ReadonlySet<RetryOn>
  private readonly startedAt: number
  private readonly clock: Clock
  /** Whether a fallback route can serve the request at all (only chat routes can be converted to another API). */
  private readonly serves: (route: ResolvedRoute) => boolean
  /** Index into primary.fallbacks of the route being tried; -1 = the primary. */
  private fallbackIndex = -1
  private attemptsThisRound = 0
  private backoffMs: number
  /** The longest Retry-After of this round's 429s (and 503s with one). */
  private retryAfterMs = 0
  /** Time spent waiting out Retry-After holds (bounded by retry.maxRetryAfterMs). */
  private waitedMs = 0
  private lastError: LlmProxyError | null = null
  /** The last attempt's upstream does not serve the model (its 404): no new round until another failure. */
  private movingOn = false
  /** When each of the last rounds started (this.clock.now()), the first at the request's start. */
  private readonly roundStarts: number[]
  /** A fallback was tried: later rounds go over the requested model and the fallbacks alike. */
  private fallbacksReached = false
  /** The wait that was too long, for the client's Retry-After. */
  private longestWaitMs = 0

  constructor(
    primary: ResolvedRoute,
    model: string,
    retry: Retry,
    retryOn: ReadonlySet<RetryOn>,
    startedAt: number,
    clock: Clock = systemClock,
    serves: (route: ResolvedRoute) => boolean = always,
  ) {
    this.primary = primary
    this.model = model
    this.route = primary
    this.retry = retry
    this.retryOn = retryOn
    this.startedAt = startedAt
    this.clock = clock
    this.serves = serves
    this.backoffMs = retry.backoffMs
    this.roundStarts = [startedAt]
  }

  next(): Plan {
    if (!this.canRetry())
      return this.fail(this.lastError ?? errors.upstreamUnavailable(`No upstream could answer for model "${this.model}".`))
    // One attempt per untried fallback is kept in reserve: the requested model has the rest.
    if (this.sparing() && this.attempts > 0 && this.attempts + this.fallbacksLeft() >= this.retry.attempts) return this.nextFallback()
    const lease = this.route.pool.tryAcquire(this.tried, this.route.upstreamModel)
    if (lease === 'busy') return QUEUE
    return lease === null ? this.advance() : this.started(lease)
  }

  /** The pool's queue handed over a lease, or nothing (null: no candidate is left). */
  afterQueue(lease: Lease | null): Plan {
    if (lease === null) return this.advance()
    // The wait in the queue may outlast the budget: no attempt starts past it (the slot goes back unused).
    if (this.clock.now() - this.startedAt >= this.retry.budgetMs) {
      lease.release(NOT_STARTED)
      return this.fail(this.lastError ?? errors.upstreamTimeout('The retry budget ran out.'))
    }
    return this.started(lease)
  }

  /**
   * A reload retired the pool the request waited in: it goes on from `route`, its model's route in force, as a new
   * request would (attempts and budget spent so far count).
   */
  reroute(route: ResolvedRoute): Plan {
    this.primary = route
    this.route = route
    this.fallbackIndex = -1
    this.fallbacksReached = false
    this.tried.clear()
    return this.next()
  }

  /** An attempt was abandoned; a 429 (or a 503) may say how long its upstream is held back. */
  failed(error: LlmProxyError, retryAfterMs?: number): void {
    this.lastError = error
    this.movingOn = false
    if (retryAfterMs !== undefined) this.retryAfterMs = Math.max(this.retryAfterMs, retryAfterMs)
  }

  /**
   * An upstream answered 404 (it does not serve the model on this route): the request goes on to the untried
   * upstreams of the round and to the fallbacks, but no new round starts for it (asked again, the same pool would
   * say the same). Called only when canMoveOn() said there was somewhere to go.
   */
  notServed(error: LlmProxyError): void {
    this.lastError = error
    this.movingOn = true
  }

  /**
   * Whether next() can now go somewhere without a new round: an untried upstream of the route's pool (unless the
   * attempts left are kept for the fallbacks), or a fallback model that serves the request with an upstream to take it.
   */
  canMoveOn(): boolean {
    if (!this.canRetry()) return false
    const fallbacksOnly = this.sparing() && this.attempts + this.fallbacksLeft() >= this.retry.attempts
    if (!fallbacksOnly && this.route.pool.offers(this.tried, this.route.upstreamModel)) return true
    const fallbacks = this.primary.fallbacks
    for (let i = this.fallbackIndex + 1; i < fallbacks.length; i++) {
      const fallback = fallbacks[i] as ResolvedRoute
      if (this.serves(fallback) && fallback.pool.offers(undefined, fallback.upstreamModel)) return true
    }
    return false
  }

  /** Whether a failure of this kind (and status) may move the request to another attempt. */
  retryable(kind: FailureKind, status?: number): boolean {
    // A connection lost before the first token counts as a connect failure.
    if (kind === 'status') return status !== undefined && this.retryOn.has(status as RetryOn)
    if (kind === 'prefill') return true
    return this.retryOn.has(kind === 'error' ? 'connect' : kind)
  }

  /** Whether another attempt may start: attempts and budget left. */
  canRetry(): boolean {
    return this.attempts < this.retry.attempts && this.clock.now() - this.startedAt < this.retry.budgetMs
  }

  /** The requested model finishes cut streams on another upstream (its `resume`). */
  get primaryResumes(): boolean {
    return this.primary.resume
  }

  /**
   * The upstream refused a continuation's prefill: no try of its answer, and the replay that goes there next takes
   * the attempt's place (counted, it would spend the one attempt a fallback is kept, and the replay never came).
   */
  prefillRefused(upstream: string): void {
    this.tried.delete(upstream)
    this.attempts--
    this.attemptsThisRound--
  }

  /** Whether a fallback model is still untried (a context-length 400 may go there). */
  hasFallbackLeft(): boolean {
    return this.fallbackIndex + 1 < this.primary.fallbacks.length
  }

  /**
   * The current route has no untried upstream left in this round. Before the model the client asked for is
   * changed, its own pool gets another round after a backoff (or a Retry-After hold it can wait out), as long as
   * enough attempts remain for one per untried fallback; then the fallbacks in order; then, attempts and budget
   * permitting, another round from the requested model.
   */
  advance(): Plan {
    if (!this.movingOn && this.sparing() && this.attempts + this.fallbacksLeft() < this.retry.attempts) {
      const delay = this.roundDelay()
      if (delay >= 0) return this.newRound(delay)
    }
    if (this.hasFallbackLeft()) return this.nextFallback()
    // (Only when what canMoveOn() saw is gone: the strategy declined, the queue gave nothing.)
    if (this.movingOn && this.lastError !== null) return this.fail(this.lastError)
    const delay = this.roundDelay()
    if (delay >= 0) return this.newRound(delay)
    if (delay === NOTHING_TO_WAIT_FOR)
      return this.fail(this.lastError ?? errors.upstreamUnavailable(`No healthy upstream for model "${this.model}".`))
    if (delay === BUDGET_SPENT) return this.fail(this.lastError ?? errors.upstreamTimeout('The retry budget ran out.'))
    if (this.lastError !== null) return this.fail(this.lastError)
    // Nothing tried: every upstream is held back for longer than the gateway waits; the client waits instead.
    const wait = { 'retry-after': String(Math.ceil(this.longestWaitMs / 1000)) }
    return this.fail(
      this.primary.pool.heldUnavailable()
        ? errors.upstreamUnavailable('The upstreams are unavailable for now.', { headers: wait })
        : errors.rateLimited('The upstreams are rate limiting requests.', 'llmproxy_upstream_rate_limited', wait),
    )
  }

  /** The next fallback model, from its first upstream (a context-length 400 goes there directly: a larger context). */
  nextFallback(): Plan {
    this.fallbacksReached = true
    const fallbacks = this.primary.fallbacks
    do this.fallbackIndex++
    while (this.fallbackIndex < fallbacks.length && !this.serves(fallbacks[this.fallbackIndex] as ResolvedRoute))
    if (this.fallbackIndex >= fallbacks.length) return this.advance()
    this.route = fallbacks[this.fallbackIndex] as ResolvedRoute
    this.tried.clear()
    return this.next()
  }

  /** Still on the requested model, before any fallback: attempts are kept in reserve for the fallbacks. */
  private sparing(): boolean {
    return !this.fallbacksReached && this.primary.fallbacks.length > 0
  }

  private fallbacksLeft(): number {
    return this.primary.fallbacks.length - (this.fallbackIndex + 1)
  }

  /**
   * How long to wait before another round over the requested model's pool, or why not (a negative reason).
   * After failed attempts: a jittered, doubling backoff, at least the longest Retry-After, and never a fifth round
   * within ROUND_WINDOW_MS of the fourth before it (at most four attempts on one upstream in that time). When
   * nothing could even be tried: only upstreams a 429 holds back until their Retry-After are worth waiting for.
   * Waiting out Retry-After holds is bounded by retry.maxRetryAfterMs in all; every wait by retry.budgetMs.
   */
  private roundDelay(): number {
    const retry = this.retry
    const now = this.clock.now()
    let delay: number
    if (this.attemptsThisRound === 0) {
      const holdEnds = this.primary.pool.holdEnds(undefined, this.primary.upstreamModel)
      if (holdEnds === 0) return NOTHING_TO_WAIT_FOR
      delay = Math.max(0, holdEnds - this.clock.wall()) + HOLD_SLACK_MS
    } else {
      delay = Math.max(this.retryAfterMs === 0 ? 0 : this.retryAfterMs + HOLD_SLACK_MS, this.clock.random() * this.backoffMs)
    }
    const starts = this.roundStarts
    if (starts.length >= ROUNDS_PER_WINDOW)
      delay = Math.max(delay, (starts[starts.length - ROUNDS_PER_WINDOW] as number) + ROUND_WINDOW_MS - now)
    if ((this.attemptsThisRound === 0 || this.retryAfterMs > 0) && this.waitedMs + delay > retry.maxRetryAfterMs) {
      this.longestWaitMs = delay
      return WAIT_TOO_LONG
    }
    if (now + delay - this.startedAt >= retry.budgetMs) return BUDGET_SPENT
    return delay
  }

  private newRound(delay: number): Plan {
    if (this.attemptsThisRound > 0) this.backoffMs *= 2
    this.waitedMs += delay
    this.retryAfterMs = 0
    this.attemptsThisRound = 0
    this.fallbackIndex = -1
    this.route = this.primary
    this.tried.clear()
    this.roundStarts.push(this.clock.now() + delay)
    if (this.roundStarts.length > ROUNDS_PER_WINDOW) this.roundStarts.shift()
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
