import { QUOTA_PREFIX } from './keys.js'

/** Result of an atomic check-and-add: whether it was applied, and the counter (or in-flight count) after the call. */
export interface CheckResult {
  ok: boolean
  value: number
}

/**
 * State behind the token, concurrency and quota limits (the request limits are counted by request-windows.ts, and on
 * Redis by @fastify/rate-limit). The memory store answers the per-request calls synchronously, the Redis store with
 * promises.
 * Every check-and-add is atomic, so concurrent requests (or gateway instances, with Redis) cannot overshoot.
 * A `marker` names one request's hold on one counter (unique across instances, in the counter's hash slot): the
 * Redis store records it so that a reservation is settled or cancelled, and a charge applied, exactly once even
 * when a command is retried after an outage. The memory store has no such doubt and ignores it.
 */
export interface LimitStore {
  /** Adds `amount` to counter `key` unless the counter would then exceed `limit`. The counter expires at `expireAt` (epoch ms). */
  reserve(key: string, marker: string, amount: number, limit: number, expireAt: number): CheckResult | Promise<CheckResult>
  /** Ends the reservation `marker` made: the counter gets `total - reserved` (never below 0). Resolves with the counter, null if already settled. */
  settle(key: string, marker: string, total: number, reserved: number, expireAt: number): Promise<number | null>
  /** Adds `amount` without a reservation (signed; the counter never goes below 0). Resolves with the counter, null if already charged. */
  charge(key: string, marker: string, amount: number, expireAt: number): Promise<number | null>
  /** The counter, 0 when absent or expired. */
  get(key: string): Promise<number>
  /** Takes one of `limit` slots of `key` for `member` (unique per request); the slot expires after `ttlMs` if never released. */
  acquire(key: string, member: string, limit: number, ttlMs: number): CheckResult | Promise<CheckResult>
  release(key: string, member: string): void | Promise<void>
  inFlight(key: string): Promise<number>
}

/**
 * The plugin's own store: a MemoryStore (answers synchronously), or in a gateway worker the primary's
 * (primary-counters.ts, answers with promises).
 */
export interface LocalStore extends LimitStore {
  /** Adds `delta` now, without a check; returns the counter (NaN when it is kept elsewhere). */
  add(key: string, delta: number, expireAt: number): number
  /** Takes Redis's value of a counter, so that local counting resumes from it should Redis fail. */
  mirror(key: string, value: number, expireAt: number): void
  close(): void
}

interface Counter {
  value: number
  expiresAt: number
}

/** Persisted form of the quota counters: `[key, value, expiresAt]`. */
export type CounterEntry = [string, number, number]

/**
 * In-process store. Counters expire lazily (on read) and in a sweep every minute.
 * Concurrency slots are plain counts: a process that dies takes its slots with it.
 */
export class MemoryStore implements LocalStore {
  private readonly counters = new Map<string, Counter>()
  private readonly slots = new Map<string, number>()
  private readonly sweeper: NodeJS.Timeout
  /** Bumped on every change of a quota counter (the state file is written only when it moved). */
  quotaVersion = 0

  constructor(sweepMs = 60_000) {
    this.sweeper = setInterval(() => this.sweep(Date.now()), sweepMs).unref()
  }

  reserve(key: string, _marker: string, amount: number, limit: number, expireAt: number): CheckResult {
    const counter = this.live(key, Date.now())
    const used = counter === undefined ? 0 : counter.value
    if (used + amount > limit) return { ok: false, value: used }
    this.set(key, counter, used + amount, expireAt)
    return { ok: true, value: used + amount }
  }

  async settle(key: string, _marker: string, total: number, reserved: number, expireAt: number): Promise<number> {
    return this.add(key, total - reserved, expireAt)
  }

  async charge(key: string, _marker: string, amount: number, expireAt: number): Promise<number> {
    return this.add(key, amount, expireAt)
  }

  /** Signed add, floored at 0; returns the counter. */
  add(key: string, delta: number, expireAt: number): number {
    const counter = this.live(key, Date.now())
    const value = Math.max(0, (counter === undefined ? 0 : counter.value) + delta)
    this.set(key, counter, value, expireAt)
    return value
  }

  /**
   * With Redis: keeps the last value Redis reported for a token counter, so that counting falls back to it (not to
   * zero) if Redis becomes unreachable.
   */
  mirror(key: string, value: number, expireAt: number): void {
    this.set(key, this.counters.get(key), value, expireAt)
  }

  async get(key: string): Promise<number> {
    const counter = this.live(key, Date.now())
    return counter === undefined ? 0 : counter.value
  }

  acquire(key: string, _member: string, limit: number): CheckResult {
    const inFlight = this.slots.get(key) ?? 0
    if (inFlight >= limit) return { ok: false, value: inFlight }
    this.slots.set(key, inFlight + 1)
    return { ok: true, value: inFlight + 1 }
  }

  release(key: string): void {
    const inFlight = this.slots.get(key) ?? 0
    if (inFlight <= 1) this.slots.delete(key)
    else this.slots.set(key, inFlight - 1)
  }

  async inFlight(key: string): Promise<number> {
    return this.slots.get(key) ?? 0
  }

  /** The live quota counters, for the state file. */
  quotaEntries(now: number): CounterEntry[] {
    const entries: CounterEntry[] = []
    for (const [key, counter] of this.counters) {
      if (key.startsWith(QUOTA_PREFIX) && counter.expiresAt > now) entries.push([key, counter.value, counter.expiresAt])
    }
    return entries
  }

  /** Restores saved counters (expired ones are dropped). */
  load(entries: CounterEntry[], now: number): void {
    for (const [key, value, expiresAt] of entries) {
      if (expiresAt > now) this.counters.set(key, { value, expiresAt })
    }
  }

  close(): void {
    clearInterval(this.sweeper)
  }

  private live(key: string, now: number): Counter | undefined {
    const counter = this.counters.get(key)
    if (counter === undefined || counter.expiresAt > now) return counter
    this.counters.delete(key)
    return undefined
  }

  private set(key: string, counter: Counter | undefined, value: number, expireAt: number): void {
    if (counter === undefined) this.counters.set(key, { value, expiresAt: expireAt })
    else {
      counter.value = value
      counter.expiresAt = expireAt
    }
    if (key.startsWith(QUOTA_PREFIX)) this.quotaVersion++
  }

  private sweep(now: number): void {
    for (const [key, counter] of this.counters) if (counter.expiresAt <= now) this.counters.delete(key)
  }
}
