import type { FastifyBaseLogger } from 'fastify'
import type { Redis } from 'ioredis'
import type { CheckResult, LimitStore } from './store.js'

/** Check-and-add: the counter only grows when it stays within the limit. */
const RESERVE = `
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if used + amount > tonumber(ARGV[2]) then return {0, used} end
used = redis.call('INCRBY', KEYS[1], amount)
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return {1, used}
`

/** Signed add, floored at 0. */
const ADD = `
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if value < 0 then redis.call('SET', KEYS[1], 0) end
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return value
`

/**
 * Concurrency slots: a sorted set of request ids scored by their expiry (Redis server time, so instance
 * clocks do not matter). Expired slots (a crashed instance's) are dropped before counting.
 */
const ACQUIRE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[2]) then return {0, n} end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, n + 1}
`

const IN_FLIGHT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
`

interface LimitCommands {
  llmproxyReserve(key: string, amount: number, limit: number, expireAt: number): Promise<[number, number]>
  llmproxyAdd(key: string, delta: number, expireAt: number): Promise<number>
  llmproxyAcquire(key: string, member: string, limit: number, ttlMs: number): Promise<[number, number]>
  llmproxyInFlight(key: string): Promise<number>
}

function withCommands(redis: Redis): Redis & LimitCommands {
  redis.defineCommand('llmproxyReserve', { numberOfKeys: 1, lua: RESERVE })
  redis.defineCommand('llmproxyAdd', { numberOfKeys: 1, lua: ADD })
  redis.defineCommand('llmproxyAcquire', { numberOfKeys: 1, lua: ACQUIRE })
  redis.defineCommand('llmproxyInFlight', { numberOfKeys: 1, lua: IN_FLIGHT })
  return redis as Redis & LimitCommands
}

/** Shared store: every operation is one Lua script, atomic across all gateway instances. Keys get ioredis' keyPrefix. */
export class RedisStore implements LimitStore {
  private readonly redis: Redis & LimitCommands

  constructor(redis: Redis) {
    this.redis = withCommands(redis)
  }

  async reserve(key: string, amount: number, limit: number, expireAt: number): Promise<CheckResult> {
    const [ok, value] = await this.redis.llmproxyReserve(key, amount, limit, expireAt)
    return { ok: ok === 1, value }
  }

  async add(key: string, delta: number, expireAt: number): Promise<void> {
    await this.redis.llmproxyAdd(key, delta, expireAt)
  }

  async get(key: string): Promise<number> {
    const value = await this.redis.get(key)
    return value === null ? 0 : Math.max(0, Number(value))
  }

  async acquire(key: string, member: string, limit: number, ttlMs: number): Promise<CheckResult> {
    const [ok, value] = await this.redis.llmproxyAcquire(key, member, limit, ttlMs)
    return { ok: ok === 1, value }
  }

  async release(key: string, member: string): Promise<void> {
    await this.redis.zrem(key, member)
  }

  async inFlight(key: string): Promise<number> {
    return this.redis.llmproxyInFlight(key)
  }
}

/**
 * Tracks whether Redis can be used. Logs once when it goes down and once when it is back, never per request;
 * while it is down every limit is enforced locally (per instance) and `fallbacks` counts those operations.
 */
export class RedisHealth {
  healthy = false
  fallbacks = 0
  private reportedDown = false
  private closing = false
  private readonly log: FastifyBaseLogger

  constructor(redis: Redis, log: FastifyBaseLogger) {
    this.log = log
    redis.on('ready', () => this.up())
    redis.on('error', (err: Error) => this.down(err))
    redis.on('close', () => this.down(undefined))
  }

  up(): void {
    if (this.healthy) return
    this.healthy = true
    if (this.reportedDown) {
      this.reportedDown = false
      this.log.info('rate-limit: Redis is reachable again; limits are shared across instances again')
    }
  }

  down(err: unknown): void {
    if (this.closing) return
    this.healthy = false
    if (this.reportedDown) return
    this.reportedDown = true
    this.log.warn({ err }, 'rate-limit: Redis is unreachable; enforcing limits locally (per instance) until it is back')
  }

  /** Our own disconnect is not an outage. */
  close(): void {
    this.closing = true
    this.healthy = false
  }
}

/** Waits until the client is ready or has failed once (bounded by `timeoutMs`), so the first requests use Redis when it is up. */
export function waitForRedis(redis: Redis, timeoutMs: number): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve()
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer)
      redis.off('ready', done)
      redis.off('error', done)
      resolve()
    }
    const timer = setTimeout(done, timeoutMs).unref()
    redis.once('ready', done)
    redis.once('error', done)
  })
}
