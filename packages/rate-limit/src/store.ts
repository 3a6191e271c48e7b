/** Result of an atomic check-and-add: whether it was applied, and the counter (or in-flight count) after the call. */
export interface CheckResult {
  ok: boolean
  value: number
}

/**
 * State behind the token, concurrency and quota limits (the request limits use @fastify/rate-limit's own stores).
 * Every check-and-add is atomic, so concurrent requests (or gateway instances, with Redis) cannot overshoot.
 */
export interface LimitStore {
  /** Adds `amount` to counter `key` unless the counter would then exceed `limit`. The counter expires at `expireAt` (epoch ms). */
  reserve(key: string, amount: number, limit: number, expireAt: number): Promise<CheckResult>
  /** Adds `delta` (negative to give back; the counter never goes below 0). */
  add(key: string, delta: number, expireAt: number): Promise<void>
  /** The counter, 0 when absent or expired. */
  get(key: string): Promise<number>
  /** Takes one of `limit` slots of `key` for `member` (a unique request id); the slot expires after `ttlMs` if never released. */
  acquire(key: string, member: string, limit: number, ttlMs: number): Promise<CheckResult>
  release(key: string, member: string): Promise<void>
  inFlight(key: string): Promise<number>
}

/** Key prefix of quota counters (the ones the memory store persists). */
export const QUOTA_PREFIX = 'q:'

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
export class MemoryStore implements LimitStore {
  private readonly counters = new Map<string, Counter>()
  private readonly slots = new Map<string, number>()
  private readonly sweeper: NodeJS.Timeout
  /** Bumped on every change of a quota counter (the state file is written only when it moved). */
  quotaVersion = 0

  constructor(sweepMs = 60_000) {
    this.sweeper = setInterval(() => this.sweep(Date.now()), sweepMs).unref()
  }

  async reserve(key: string, amount: number, limit: number, expireAt: number): Promise<CheckResult> {
    const counter = this.live(key, Date.now())
    const used = counter === undefined ? 0 : counter.value
    if (used + amount > limit) return { ok: false, value: used }
    this.set(key, counter, used + amount, expireAt)
    return { ok: true, value: used + amount }
  }

  async add(key: string, delta: number, expireAt: number): Promise<void> {
    const counter = this.live(key, Date.now())
    this.set(key, counter, Math.max(0, (counter === undefined ? 0 : counter.value) + delta), expireAt)
  }

  async get(key: string): Promise<number> {
    const counter = this.live(key, Date.now())
    return counter === undefined ? 0 : counter.value
  }

  async acquire(key: string, _member: string, limit: number): Promise<CheckResult> {
    const inFlight = this.slots.get(key) ?? 0
    if (inFlight >= limit) return { ok: false, value: inFlight }
    this.slots.set(key, inFlight + 1)
    return { ok: true, value: inFlight + 1 }
  }

  async release(key: string): Promise<void> {
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
