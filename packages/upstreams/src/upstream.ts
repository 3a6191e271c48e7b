import type { Protocol } from '@llmproxy/core'
import type { HealthChecksOptions, PassiveHealthOptions, ResolvedUpstreamConfig, UpstreamConfig } from './options.js'

/**
 * - healthy: picked normally.
 * - unhealthy: failed `unhealthyAfter` active checks in a row; picked by nobody until `healthyAfter` good checks
 *   (panic mode aside: when every upstream of a pool is unhealthy).
 * - ejected: `failuresToEject` requests in a row failed on it; not picked until its cooldown has passed
 *   (panic mode aside: when no upstream of a pool is in service).
 * - half-open: the cooldown has passed; exactly one request may try it.
 * - draining: taken out by an admin (`drain`); picked by nobody until `enable`, not even in panic mode.
 */
export type UpstreamState = 'healthy' | 'unhealthy' | 'ejected' | 'half-open' | 'draining'

/** An upstream as strategies, the router and admin code see it (read only: change it through leases and the registry). */
export interface Upstream {
  readonly name: string
  /** Origin plus optional base path, without a trailing slash. */
  readonly url: string
  readonly protocol: Protocol
  readonly weight: number
  readonly maxConcurrency: number | null
  readonly apiKey: string | undefined
  /** A cut stream may be continued here by a prefill (its text as a final assistant turn); else it is replayed. */
  readonly prefill: boolean
  readonly headers: Record<string, string> | undefined
  /** Leases not yet released. */
  readonly inFlight: number
  readonly state: UpstreamState
  /** Peak-EWMA of the time to first token, in ms; null before the first sample. */
  readonly ewmaTtftMs: number | null
  /** When its last sample came (Date.now()); see currentTtft. */
  readonly ewmaSampledAt: number
}

/**
 * A TTFT average older than this says little of the upstream now: it is forgotten, and the upstream is tried again
 * as one without a sample. Else an upstream that slowed down and recovered is never picked to show it (its average
 * only changes with the requests it serves).
 */
export const EWMA_FORGET_MS = 10_000

/** The upstream's TTFT average, or null when it has no sample of the last EWMA_FORGET_MS. */
export function currentTtft(upstream: Upstream, now: number): number | null {
  const ewma = upstream.ewmaTtftMs
  return ewma === null || now - upstream.ewmaSampledAt > EWMA_FORGET_MS ? null : ewma
}

/** How one attempt on a leased upstream went, reported by `lease.release(result)`. */
export interface AttemptResult {
  /** True when the upstream answered well (2xx, or the response was committed to the client). */
  ok: boolean
  /**
   * Why it failed. connect/timeout/stall/error count as failures; `status` is judged by `status`
   * (>= 500 failure, 429 hold, a 503 with a Retry-After a hold too, other 4xx neutral); `aborted` (the client went
   * away) is neutral.
   */
  kind?: 'connect' | 'timeout' | 'status' | 'stall' | 'error' | 'aborted'
  status?: number
  ttftMs?: number
  /** From a 429's Retry-After, in ms (default 1000), or a 503's (without one, a 503 is a failure). */
  retryAfterMs?: number
  /**
   * The model the request asked the upstream for: a 429 then holds the upstream back for that model only (a hosted
   * API limits each model on its own; a fallback model on the same upstream may still answer). Without it, a 429
   * holds the whole upstream, as a 503 always does (the server is unavailable, whatever the model).
   */
  model?: string
  /**
   * The request the attempt belongs to: any object that stands for it (the router passes its per-request
   * call), compared by identity and held weakly. Passive health counts one failure per request per upstream:
   * a request that fails on the same upstream again (a retry after a backoff) adds nothing to the count.
   * Without it, every failed attempt counts.
   */
  request?: object
}

/** The right to send one request to `upstream`. Release it exactly once, when the attempt's fate is known. */
export interface Lease {
  readonly upstream: Upstream
  /** Counts the attempt for passive health and frees the slot. Idempotent: later calls do nothing. */
  release(result: AttemptResult): void
}

/** What admin APIs and metrics see of an upstream. */
export interface UpstreamSnapshot {
  name: string
  url: string
  protocol: Protocol
  state: UpstreamState
  inFlight: number
  ewmaTtftMs: number | null
  /** Ejections since start (passive health). */
  ejections: number
  /** Failed requests in a row. */
  consecutiveFailures: number
  /** Failed requests in the last 60 s. */
  recentErrors: number
  /** The last failure (request or health check), or null. */
  lastError: string | null
  weight: number
  maxConcurrency: number | null
  /** Epoch ms until which a 429 holds the upstream back, or null. */
  heldUntil: number | null
  /** Leases granted in panic mode since start (every upstream of a pool was out, and this one was picked anyway). */
  panicPicks: number
}

/** What an upstream needs from its registry. */
export interface UpstreamOwner {
  readonly passive: PassiveHealthOptions
  readonly checks: HealthChecksOptions
  onTransition(upstream: UpstreamNode, previous: UpstreamState, reason: string): void
  /** A slot was freed or the state changed: serve the queues of the pools holding this upstream. */
  wake(upstream: UpstreamNode): void
}

/** What an upstream needs from a pool holding it. */
export interface PoolLink {
  readonly waiting: number
  serve(): void
  /** A member changed state: the pool may enter or leave panic mode. */
  reassess(): void
}

/**
 * Whether an answer holds the upstream back until its Retry-After rather than failing: a 429 (rate limited), or a
 * 503 that says when to come back (RFC 9110: the server is unavailable for that long; a Retry-After of 0 asks for no
 * wait). Retried at once, it would be hit again when it asked for less.
 */
export function holdsBack(status: number, retryAfterMs: number | undefined): boolean {
  return status === 429 || (status === 503 && retryAfterMs !== undefined && retryAfterMs > 0)
}

/** Weight of a new TTFT sample below the current EWMA (a sample above it is taken at once: peak-EWMA). */
const EWMA_DECAY = 0.3
const DEFAULT_RETRY_AFTER_MS = 1000
/** The key of a hold that applies to every model of the upstream (a 429 reported without its model, a 503). */
const WHOLE_UPSTREAM = ''
const ERROR_WINDOW_S = 60

class UpstreamLease implements Lease {
  readonly upstream: UpstreamNode
  /** Granted in panic mode: its answer tells whether an ejected upstream works again. */
  readonly panic: boolean
  private released = false

  constructor(upstream: UpstreamNode, panic: boolean) {
    this.upstream = upstream
    this.panic = panic
  }

  release(result: AttemptResult): void {
    if (this.released) return
    this.released = true
    this.upstream.settle(this, result)
  }
}

/** An upstream with its health state machine. Internal: the public view is `Upstream`. */
export class UpstreamNode implements Upstream {
  readonly name: string
  url: string
  // Set by configure(), which the constructor calls.
  protocol!: Protocol
  weight!: number
  maxConcurrency!: number | null
  apiKey: string | undefined
  prefill!: boolean
  headers: Record<string, string> | undefined
  healthCheck!: UpstreamConfig['healthCheck']
  inFlight = 0
  state: UpstreamState = 'healthy'
  ewmaTtftMs: number | null = null
  ewmaSampledAt = 0

  ejections = 0
  consecutiveFailures = 0
  lastError: string | null = null
  /** 429 and 503 holds by upstream model (WHOLE_UPSTREAM: every model), epoch ms; null when none. */
  private holds: Map<string, number> | null = null
  /** Epoch ms until which a 503's Retry-After holds the upstream back (it is unavailable, not rate limiting). */
  private unavailableUntil = 0
  /** Epoch ms the current ejection ends. */
  ejectedUntil = 0
  /** Leases granted in panic mode since start. */
  panicPicks = 0
  /** Ejections in a row without a success in between: the cooldown doubles with each. */
  private ejectionStreak = 0
  /** The one lease allowed while half-open. */
  private trialLease: UpstreamLease | null = null
  /** The requests counted in `consecutiveFailures` (one failure per request); null when it is 0. */
  private failedRequests: WeakSet<object> | null = null
  private checkFailures = 0
  private checkSuccesses = 0
  /** Failures per second over the last minute (ring of 60 one-second buckets). */
  private readonly errorCounts = new Uint32Array(ERROR_WINDOW_S)
  private readonly errorSeconds = new Float64Array(ERROR_WINDOW_S)
  /** Pools holding this upstream, to wake their queues. */
  readonly pools: PoolLink[] = []
  private readonly owner: UpstreamOwner

  constructor(config: ResolvedUpstreamConfig, url: string, owner: UpstreamOwner) {
    this.name = config.name
    this.owner = owner
    this.url = url
    this.configure(config)
  }

  /** The settings from config; on hot reload of an upstream with the same name and url, new settings, same state. */
  configure(config: ResolvedUpstreamConfig): void {
    this.protocol = config.protocol
    this.weight = config.weight
    this.maxConcurrency = config.maxConcurrency ?? null
    this.apiKey = config.apiKey
    // OpenAI's own API and TGI answer a trailing assistant message afresh rather than continuing it.
    this.prefill = config.prefill ?? (config.protocol !== 'openai' && config.protocol !== 'tgi')
    this.headers = config.headers
    this.healthCheck = config.healthCheck
  }

  /** Below its maxConcurrency (or without one): a lease here would not exceed it. */
  get hasFreeSlot(): boolean {
    return this.maxConcurrency === null || this.inFlight < this.maxConcurrency
  }

  /** Whether a new request may be sent here now (ignoring maxConcurrency). Ends a passed cooldown (→ half-open). */
  available(now: number): boolean {
    switch (this.state) {
      case 'healthy':
        break
      case 'ejected':
        if (now < this.ejectedUntil) return false
        this.refresh(now)
        break
      case 'half-open':
        if (this.trialLease !== null) return false
        break
      default:
        return false
    }
    return true
  }

  /** Whether a hold (429, 503) keeps the upstream back for `model` (undefined: any request) now. Passed holds are forgotten. */
  heldFor(model: string | undefined, now: number): boolean {
    const holds = this.holds
    if (holds === null) return false
    return this.holdActive(holds, WHOLE_UPSTREAM, now) || (model !== undefined && this.holdActive(holds, model, now))
  }

  /** When the hold on `model` (and on the whole upstream) ends, epoch ms; 0 when not held. */
  holdEnd(model: string | undefined, now: number): number {
    if (!this.heldFor(model, now)) return 0
    const holds = this.holds as Map<string, number>
    return Math.max(holds.get(WHOLE_UPSTREAM) ?? 0, model === undefined ? 0 : (holds.get(model) ?? 0))
  }

  /** The end of the latest hold still running, on any model (the snapshot's `heldUntil`); null when none. */
  private latestHold(now: number): number | null {
    let latest = 0
    for (const until of this.holds?.values() ?? []) if (until > now && until > latest) latest = until
    return latest === 0 ? null : latest
  }

  private holdActive(holds: Map<string, number>, key: string, now: number): boolean {
    const until = holds.get(key)
    if (until === undefined) return false
    if (now < until) return true
    holds.delete(key)
    if (holds.size === 0) this.holds = null
    return false
  }

  /**
   * Whether the upstream takes part in normal picking (a 429 hold aside, which is no failure): healthy,
   * half-open with its trial free, or ejected with its cooldown passed. Reads only (no lazy transition).
   */
  inService(now: number): boolean {
    const state = this.state
    return state === 'healthy' || (state === 'half-open' && this.trialLease === null) || (state === 'ejected' && now >= this.ejectedUntil)
  }

  /** Applies the lazy transition: an ejection whose cooldown has passed becomes half-open. */
  refresh(now: number): void {
    if (this.state === 'ejected' && now >= this.ejectedUntil) {
      this.trialLease = null
      this.setState('half-open', 'ejection cooldown elapsed')
    }
  }

  /** Takes a slot. While half-open, the lease is the single trial (a panic pick is none). */
  lease(panic = false): Lease {
    const lease = new UpstreamLease(this, panic)
    this.inFlight++
    if (panic) this.panicPicks++
    else if (this.state === 'half-open') this.trialLease = lease
    return lease
  }

  /** Passive health: called once per lease by `lease.release`. */
  settle(lease: UpstreamLease, result: AttemptResult): void {
    this.inFlight--
    const trial = this.trialLease === lease
    if (trial) this.trialLease = null
    if (result.ok) {
      this.succeeded(result.ttftMs, lease.panic)
    } else {
      const kind = result.kind
      if (kind === 'aborted') {
        // The client went away: says nothing about the upstream.
      } else if (kind !== undefined && kind !== 'status') {
        this.failed(kind, trial, result.request)
      } else {
        const status = result.status
        if (status === undefined || (status >= 500 && !holdsBack(status, result.retryAfterMs)))
          this.failed(status === undefined ? 'error' : `status ${status}`, trial, result.request)
        else {
          if (holdsBack(status, result.retryAfterMs)) this.hold(status === 503, result)
          // It answered: alive, whatever it thought of the request.
          if (trial && this.state === 'half-open') this.recover('trial request answered')
          else if (lease.panic) this.recoverFromPanic('answered a request in panic mode')
        }
      }
    }
    this.owner.wake(this)
  }

  /**
   * Not picked until the Retry-After passes; `unavailable` (a 503's) for every model, and for no longer than an
   * ejection's longest cooldown (passiveHealth.maxEjectionMs): it takes the whole upstream out on one answer, often a
   * proxy's or one replica's, as an ejection does on failures, and its checks do not lift it.
   */
  private hold(unavailable: boolean, result: AttemptResult): void {
    const wait = result.retryAfterMs ?? DEFAULT_RETRY_AFTER_MS
    const until = Date.now() + (unavailable ? Math.min(wait, this.owner.passive.maxEjectionMs) : wait)
    const key = unavailable ? WHOLE_UPSTREAM : (result.model ?? WHOLE_UPSTREAM)
    this.holds ??= new Map()
    if (until > (this.holds.get(key) ?? 0)) this.holds.set(key, until)
    if (unavailable && until > this.unavailableUntil) this.unavailableUntil = until
  }

  /** Whether a 503's Retry-After (not a 429) holds the upstream back now. */
  unavailable(now: number): boolean {
    return now < this.unavailableUntil
  }

  private succeeded(ttftMs: number | undefined, panic: boolean): void {
    if (ttftMs !== undefined && ttftMs >= 0) {
      const now = Date.now()
      // A forgotten average starts again from this sample.
      const ewma = currentTtft(this, now)
      this.ewmaTtftMs = ewma === null || ttftMs > ewma ? ttftMs : ewma + EWMA_DECAY * (ttftMs - ewma)
      this.ewmaSampledAt = now
    }
    // A request begun before the ejection says nothing about now: the cooldown and the trial decide.
    // One picked in panic mode was begun during it.
    if (this.state === 'ejected' && !panic) return
    this.resetFailures()
    this.ejectionStreak = 0
    if (this.state === 'half-open') this.recover('request succeeded')
    else if (panic) this.recoverFromPanic('request succeeded in panic mode')
  }

  /** A panic pick answered: an ejected upstream works again. An unhealthy one stays so until its checks pass. */
  private recoverFromPanic(reason: string): void {
    if (this.state === 'ejected' || this.state === 'half-open') this.recover(reason)
  }

  private failed(what: string, trial: boolean, request: object | undefined): void {
    const now = Date.now()
    this.lastError = what
    // One failure per request: a request failing here again (a retry) adds nothing, unless it was the trial.
    let repeat = false
    if (request !== undefined) {
      this.failedRequests ??= new WeakSet()
      repeat = this.failedRequests.has(request)
      this.failedRequests.add(request)
    }
    if (!repeat) {
      this.consecutiveFailures++
      this.countError(now)
    }
    if (this.state === 'half-open') {
      if (trial) this.eject(now, `trial request failed (${what})`)
    } else if (this.state === 'healthy' && !repeat && this.consecutiveFailures >= this.owner.passive.failuresToEject) {
      this.eject(now, `${this.consecutiveFailures} consecutive failures (last: ${what})`)
    }
  }

  private resetFailures(): void {
    this.consecutiveFailures = 0
    this.failedRequests = null
  }

  private eject(now: number, reason: string): void {
    const { baseEjectionMs, maxEjectionMs } = this.owner.passive
    this.ejections++
    this.ejectionStreak++
    this.ejectedUntil = now + Math.min(baseEjectionMs * 2 ** (this.ejectionStreak - 1), maxEjectionMs)
    // Ending an ejection through active checks takes `healthyAfter` good checks made after it.
    this.checkSuccesses = 0
    this.setState('ejected', reason)
  }

  private recover(reason: string): void {
    this.resetFailures()
    this.trialLease = null
    this.setState('healthy', reason)
  }

  /** Active health: the result of one check. Returns true when the state changed. */
  checked(ok: boolean, error: string | null): boolean {
    const { healthyAfter, unhealthyAfter } = this.owner.checks
    const state = this.state
    if (ok) {
      this.checkFailures = 0
      this.checkSuccesses++
      if ((state === 'unhealthy' || state === 'ejected' || state === 'half-open') && this.checkSuccesses >= healthyAfter) {
        this.recover(`${this.checkSuccesses} health checks passed`)
        return true
      }
      return false
    }
    this.checkSuccesses = 0
    this.checkFailures++
    this.lastError = `health check: ${error ?? 'failed'}`
    if ((state === 'healthy' || state === 'ejected' || state === 'half-open') && this.checkFailures >= unhealthyAfter) {
      this.trialLease = null
      this.setState('unhealthy', `${this.checkFailures} health checks failed (last: ${error ?? 'failed'})`)
      return true
    }
    return false
  }

  drain(): void {
    this.setState('draining', 'drained by an admin')
  }

  enable(): void {
    this.resetFailures()
    this.ejectionStreak = 0
    this.checkFailures = 0
    this.trialLease = null
    this.holds = null
    this.unavailableUntil = 0
    this.setState('healthy', 'enabled by an admin')
  }

  snapshot(now: number): UpstreamSnapshot {
    this.refresh(now)
    return this.describe(now)
  }

  /** The snapshot as things stand (no lazy transition). */
  describe(now: number): UpstreamSnapshot {
    return {
      name: this.name,
      url: this.url,
      protocol: this.protocol,
      state: this.state,
      inFlight: this.inFlight,
      ewmaTtftMs: this.ewmaTtftMs,
      ejections: this.ejections,
      consecutiveFailures: this.consecutiveFailures,
      recentErrors: this.recentErrors(now),
      lastError: this.lastError,
      weight: this.weight,
      maxConcurrency: this.maxConcurrency,
      heldUntil: this.latestHold(now),
      panicPicks: this.panicPicks,
    }
  }

  private setState(next: UpstreamState, reason: string): void {
    const previous = this.state
    if (previous === next) return
    this.state = next
    this.owner.onTransition(this, previous, reason)
  }

  private countError(now: number): void {
    const second = Math.floor(now / 1000)
    const i = second % ERROR_WINDOW_S
    if (this.errorSeconds[i] !== second) {
      this.errorSeconds[i] = second
      this.errorCounts[i] = 0
    }
    this.errorCounts[i]++
  }

  private recentErrors(now: number): number {
    const second = Math.floor(now / 1000)
    let total = 0
    for (let i = 0; i < ERROR_WINDOW_S; i++) {
      if (second - (this.errorSeconds[i] as number) < ERROR_WINDOW_S) total += this.errorCounts[i] as number
    }
    return total
  }
}
