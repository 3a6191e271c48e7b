import type { Cluster, Redis } from 'ioredis'
import type { CheckResult, LimitStore } from './store.js'

/** A single-node or Sentinel client (`Redis`), or a `Cluster` client. */
export type RedisClient = Redis | Cluster

// Every script touches one counter and at most one marker of the same subject: both carry the subject's hash tag
// (keys.ts), so each script runs on one Redis Cluster slot.
//
// Markers make retries safe. A command that timed out may still run later (a stalled Redis runs what is queued
// on its socket when it resumes), so after an outage the gateway replays what it could not confirm, and each
// replay must apply once: a reservation writes a marker holding its amount; settling it deletes the marker (a
// second settle finds none); cancelling it leaves a tombstone `x` (a reservation arriving late finds it and does
// nothing); a charge without reservation sets its marker with NX.

/** KEYS: counter, marker. ARGV: amount, limit, counter expiry (epoch ms), marker TTL (ms). Check-and-add. */
const RESERVE = `
if redis.call('EXISTS', KEYS[2]) == 1 then return {0, 0} end
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if used + amount > tonumber(ARGV[2]) then return {0, used} end
used = redis.call('INCRBY', KEYS[1], amount)
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], amount, 'PX', ARGV[4])
return {1, used}
`

/**
 * KEYS: counter, marker. ARGV: total, reserved, counter expiry, attempt (0: a retry, 1: first, 2: first, with the
 * marker within its TTL). Adds `total - reserved`, once; returns the counter, or -1 when nothing was applied. A
 * missing marker means, on a retry, that the first attempt ran after all; on a first attempt past the marker's TTL
 * (a request longer than it), that it expired: the counter still holds the caller's `reserved`; on a first attempt
 * within its TTL, that Redis lost it (restarted empty, or failed over to a replica that never had it): the counter
 * lost the reservation too, and only `total` is added (subtracting it would eat other requests' reservations).
 */
const SETTLE = `
local reserved = redis.call('GET', KEYS[2])
if reserved == 'x' then return -1 end
if not reserved then
  if ARGV[4] == '0' then return -1 end
  reserved = ARGV[4] == '1' and ARGV[2] or '0'
end
redis.call('DEL', KEYS[2])
local value = redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]) - tonumber(reserved))
if value < 0 then
  redis.call('SET', KEYS[1], 0)
  value = 0
end
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return value
`

/** How much sooner than its TTL a marker is taken as possibly expired (clocks, the reservation's own latency). */
const MARKER_TTL_MARGIN_MS = 5000

/** KEYS: counter, marker. ARGV: counter expiry, marker TTL. Undoes a reservation whose outcome was unknown, and blocks it if it has not run yet. */
const CANCEL = `
local reserved = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[2], 'x', 'PX', ARGV[2])
if not reserved or reserved == 'x' then return 0 end
local value = redis.call('INCRBY', KEYS[1], -tonumber(reserved))
if value < 0 then redis.call('SET', KEYS[1], 0) end
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
`

/** KEYS: counter, marker. ARGV: amount (signed), counter expiry, marker TTL. Adds once per marker, floored at 0; returns the counter or -1. */
const CHARGE = `
if not redis.call('SET', KEYS[2], 'x', 'NX', 'PX', ARGV[3]) then return -1 end
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if value < 0 then
  redis.call('SET', KEYS[1], 0)
  value = 0
end
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return value
`

/**
 * Drops the slots of instances known to be gone (ARGV from `first` on: their slot-id prefixes), as a worker that
 * died: usually none are given, and nothing is read.
 */
const DROP_GONE = (first: number) => `
if #ARGV >= ${first} then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    for i = ${first}, #ARGV do
      if string.sub(id, 1, #ARGV[i]) == ARGV[i] then
        redis.call('ZREM', KEYS[1], id)
        break
      end
    end
  end
end
`

/**
 * Concurrency slots: a sorted set of slot ids scored by their expiry (Redis server time, so instance clocks do not
 * matter). Expired slots (a crashed instance's) are dropped before counting, and those of instances known to be gone
 * (DROP_GONE). KEYS: the set. ARGV: id, limit, TTL, then the gone instances' prefixes.
 */
const ACQUIRE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
${DROP_GONE(4)}
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[2]) then return {0, n} end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, n + 1}
`

/** KEYS: the set. ARGV: the gone instances' prefixes. */
const IN_FLIGHT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
${DROP_GONE(1)}
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
`

interface LimitCommands {
  llmproxyReserve(key: string, marker: string, amount: number, limit: number, expireAt: number, ttlMs: number): Promise<[number, number]>
  llmproxySettle(key: string, marker: string, total: number, reserved: number, expireAt: number, first: number): Promise<number>
  llmproxyCancel(key: string, marker: string, expireAt: number, ttlMs: number): Promise<number>
  llmproxyCharge(key: string, marker: string, amount: number, expireAt: number, ttlMs: number): Promise<number>
  llmproxyAcquire(key: string, member: string, limit: number, ttlMs: number, ...gone: string[]): Promise<[number, number]>
  llmproxyInFlight(key: string, ...gone: string[]): Promise<number>
}

function withCommands(redis: RedisClient): RedisClient & LimitCommands {
  redis.defineCommand('llmproxyReserve', { numberOfKeys: 2, lua: RESERVE })
  redis.defineCommand('llmproxySettle', { numberOfKeys: 2, lua: SETTLE })
  redis.defineCommand('llmproxyCancel', { numberOfKeys: 2, lua: CANCEL })
  redis.defineCommand('llmproxyCharge', { numberOfKeys: 2, lua: CHARGE })
  redis.defineCommand('llmproxyAcquire', { numberOfKeys: 1, lua: ACQUIRE })
  redis.defineCommand('llmproxyInFlight', { numberOfKeys: 1, lua: IN_FLIGHT })
  return redis as RedisClient & LimitCommands
}

function counterOrNull(value: number): number | null {
  return value < 0 ? null : value
}

/**
 * Shared store: every operation is one Lua script (or one command), atomic across all gateway instances, on one
 * hash slot. Keys get the client's keyPrefix. Markers live for `markerTtlMs` (the plugin's `redis.slotTtlMs`).
 */
export class RedisStore implements LimitStore {
  private readonly redis: RedisClient & LimitCommands
  private readonly markerTtlMs: number
  /** Slot-id prefixes of instances known to be gone (`RateLimits.forgetInstances`): their slots are dropped. */
  gone: string[] = []

  constructor(redis: RedisClient, markerTtlMs: number) {
    this.redis = withCommands(redis)
    this.markerTtlMs = markerTtlMs
  }

  async reserve(key: string, marker: string, amount: number, limit: number, expireAt: number): Promise<CheckResult> {
    const [ok, value] = await this.redis.llmproxyReserve(key, marker, amount, limit, expireAt, this.markerTtlMs)
    return { ok: ok === 1, value }
  }

  /**
   * Returns the counter after it, or null when the reservation was already settled (or cancelled). `reservedAt`
   * (epoch ms, when the reservation was sent): whether its marker may have expired (0: unknown, assume it may).
   */
  async settle(key: string, marker: string, total: number, reserved: number, expireAt: number, reservedAt = 0): Promise<number | null> {
    const markerLives = reservedAt > 0 && Date.now() - reservedAt < this.markerTtlMs - MARKER_TTL_MARGIN_MS
    return counterOrNull(await this.redis.llmproxySettle(key, marker, total, reserved, expireAt, markerLives ? 2 : 1))
  }

  /** A settle retried after an attempt that was sent and failed: applies only if that attempt never ran. Returns as `settle`. */
  async settleAgain(key: string, marker: string, total: number, reserved: number, expireAt: number): Promise<number | null> {
    return counterOrNull(await this.redis.llmproxySettle(key, marker, total, reserved, expireAt, 0))
  }

  /** Undoes a reservation whose outcome is unknown (its command failed), now or whenever it runs. */
  async cancel(key: string, marker: string, expireAt: number): Promise<void> {
    await this.redis.llmproxyCancel(key, marker, expireAt, this.markerTtlMs)
  }

  /** Returns the counter after it, or null when this marker was already charged. */
  async charge(key: string, marker: string, amount: number, expireAt: number): Promise<number | null> {
    return counterOrNull(await this.redis.llmproxyCharge(key, marker, amount, expireAt, this.markerTtlMs))
  }

  async get(key: string): Promise<number> {
    const value = await this.redis.get(key)
    return value === null ? 0 : Math.max(0, Number(value))
  }

  async acquire(key: string, member: string, limit: number, ttlMs: number): Promise<CheckResult> {
    const [ok, value] = await this.redis.llmproxyAcquire(key, member, limit, ttlMs, ...this.gone)
    return { ok: ok === 1, value }
  }

  async release(key: string, member: string): Promise<void> {
    await this.redis.zrem(key, member)
  }

  async inFlight(key: string): Promise<number> {
    return this.redis.llmproxyInFlight(key, ...this.gone)
  }
}
