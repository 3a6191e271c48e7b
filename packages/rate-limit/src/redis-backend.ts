import type { FastifyBaseLogger } from 'fastify'
import { markerKey, type UniqueIds } from './keys.js'
import { ping, refreshSlots } from './redis-client.js'
import type { RedisClient, RedisStore } from './redis-store.js'

/** While Redis is down, it is probed this often; it is used again as soon as a probe answers. */
const PROBE_INTERVAL_MS = 500
/** Tokens counted locally after Redis came back (a reservation taken during the outage, settled now) are sent this often. */
const SYNC_DELAY_MS = 100
/** Operations waiting for Redis at most; beyond, the oldest are dropped (and logged). */
const MAX_PENDING = 100_000

/** A Redis operation that failed or whose outcome is unknown, replayed once Redis answers. Each is idempotent (markers). */
type Replay = () => Promise<unknown>

/** Tokens counted locally on one counter while Redis could not be used, to be added to Redis. */
interface Unsynced {
  tag: string
  delta: number
  expireAt: number
}

/**
 * Redis as the shared store, and what happens when it fails.
 *
 * Any failed command (an error, or no answer within `commandTimeoutMs`) marks Redis down: every limit is then
 * enforced on the local store, logged once. While down, Redis is pinged every 500 ms (and at once when the client
 * reconnects), a Cluster's slot map refreshed first; as soon as it answers, the operations that could not be
 * confirmed are replayed (each applies once, see redis-store.ts), the tokens counted locally meanwhile are added to
 * the Redis counters, and only then is Redis used again, logged once with the outage's duration and what was
 * reconciled.
 */
export class RedisBackend {
  readonly store: RedisStore
  healthy = false
  /** Limit operations served locally because Redis was down. */
  fallbacks = 0
  private readonly client: RedisClient
  private readonly log: FastifyBaseLogger
  private readonly ids: UniqueIds
  private readonly pending: Replay[] = []
  private readonly unsynced = new Map<string, Unsynced>()
  private probeTimer: NodeJS.Timeout | null = null
  private reconnectTimer: NodeJS.Timeout | null = null
  private syncTimer: NodeJS.Timeout | null = null
  private recovering = false
  private closing = false
  private waiters: Array<() => void> = []
  /** The current outage: when it began, the fallbacks count then, what was dropped, replayed and added since. */
  private outage: {
    since: number
    fallbacks: number
    dropped: number
    replayed: number
    tokens: number
    misconfigured: boolean
    clientEnded: boolean
  } | null = null

  constructor(client: RedisClient, store: RedisStore, ids: UniqueIds, log: FastifyBaseLogger) {
    this.client = client
    this.store = store
    this.ids = ids
    this.log = log
    client.on('ready', () => void this.recover())
    client.on('error', (err: Error) => this.down(err))
    client.on('close', () => this.down(undefined))
    client.on('end', () => this.ended())
  }

  /** True when Redis can be used; otherwise counts the operation about to be served locally. */
  usable(): boolean {
    if (this.healthy) return true
    this.fallbacks++
    return false
  }

  /** A command failed or timed out: Redis is down (logged once) until a probe answers. */
  down(err: unknown): void {
    if (this.closing) return
    this.healthy = false
    if (this.outage === null) {
      this.outage = {
        since: Date.now(),
        fallbacks: this.fallbacks,
        dropped: 0,
        replayed: 0,
        tokens: 0,
        misconfigured: false,
        clientEnded: false,
      }
      this.log.warn(
        { err: withoutArguments(err) },
        'rate-limit: Redis is unreachable; enforcing limits locally (per instance) until it answers again',
      )
    }
    const wrong = misconfiguration(err)
    if (wrong !== null && !this.outage.misconfigured) {
      // Waiting will not mend it: say which setting to fix (once per outage).
      this.outage.misconfigured = true
      this.log.error(
        { err: withoutArguments(err), setting: wrong.setting },
        `rate-limit: ${wrong.setting}: ${wrong.problem}; limits stay per instance until it is fixed`,
      )
    }
    this.probeTimer ??= setInterval(() => void this.recover(), PROBE_INTERVAL_MS).unref()
    this.wake()
  }

  /** Replays `op` once Redis answers (in order, after the outage; with the next sync when Redis is up). */
  later(op: Replay): void {
    if (this.pending.length >= MAX_PENDING) {
      this.pending.shift()
      if (this.outage !== null && this.outage.dropped++ === 0) {
        this.log.error(
          { max: MAX_PENDING },
          'rate-limit: too many Redis operations waiting for Redis; the oldest are dropped (their reservations stay counted)',
        )
      }
    }
    this.pending.push(op)
    if (this.healthy) this.scheduleSync()
  }

  /** Tokens counted on the local store for a Redis counter (during an outage, or settling a reservation taken then). */
  counted(key: string, tag: string, delta: number, expireAt: number): void {
    if (delta === 0) return
    const entry = this.unsynced.get(key)
    if (entry === undefined) this.unsynced.set(key, { tag, delta, expireAt })
    else {
      entry.delta += delta
      entry.expireAt = Math.max(entry.expireAt, expireAt)
    }
    if (this.healthy) this.scheduleSync()
  }

  /** Resolves once Redis is usable, has failed once, or after `timeoutMs`. */
  ready(timeoutMs: number): Promise<void> {
    if (this.healthy) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs).unref()
      this.waiters.push(() => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  /** Our own disconnect is not an outage. */
  close(): void {
    this.closing = true
    this.healthy = false
    if (this.probeTimer !== null) clearInterval(this.probeTimer)
    if (this.syncTimer !== null) clearTimeout(this.syncTimer)
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer)
    this.probeTimer = null
    this.syncTimer = null
    this.reconnectTimer = null
    this.wake()
    this.client.disconnect()
  }

  /**
   * ioredis gave the client up (status `end`) without our close: it never reconnects by itself then, and every probe
   * would fail for good. With Sentinel this happens when a `+switch-master` arrives while the client is still asking
   * a Sentinel for the master. Connected again after a probe interval (and again on each `end`, should that fail).
   */
  private ended(): void {
    if (this.closing || this.reconnectTimer !== null) return
    this.down(undefined)
    if (this.outage !== null && !this.outage.clientEnded) {
      this.outage.clientEnded = true
      this.log.warn('rate-limit: the Redis client stopped reconnecting; connecting it again')
    }
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null
      // A failure emits `error` (Redis stays down) and `end` again, which schedules the next attempt.
      if (!this.closing) this.client.connect().catch(() => {})
    }, PROBE_INTERVAL_MS).unref()
  }

  private async recover(): Promise<void> {
    if (this.healthy || this.recovering || this.closing) return
    this.recovering = true
    try {
      // Only while down (a refresh asks a node for the whole map): a promoted replica is found within a probe or two.
      await refreshSlots(this.client)
      await ping(this.client)
      await this.sync()
    } catch {
      return // still down: the next probe tries again
    } finally {
      this.recovering = false
    }
    if (this.closing) return
    this.healthy = true
    if (this.probeTimer !== null) clearInterval(this.probeTimer)
    this.probeTimer = null
    const outage = this.outage
    this.outage = null
    if (outage !== null) {
      const downMs = Date.now() - outage.since
      this.log.info(
        {
          downMs,
          servedLocally: this.fallbacks - outage.fallbacks,
          replayed: outage.replayed,
          tokensAdded: outage.tokens,
          dropped: outage.dropped,
        },
        `rate-limit: Redis answers again after ${downMs} ms; limits are shared again (tokens counted locally meanwhile were added to Redis; request counts were not)`,
      )
    }
    this.wake()
    if (this.pending.length > 0 || this.unsynced.size > 0) this.scheduleSync()
  }

  /** Replays what waits for Redis and adds the locally counted tokens (each once); rejects if any operation failed. */
  private async sync(): Promise<void> {
    const now = Date.now()
    for (const [key, { tag, delta, expireAt }] of this.unsynced) {
      // A minute window that is over no longer limits anything.
      if (delta === 0 || expireAt <= now) continue
      const marker = markerKey(tag, this.ids.next())
      if (this.outage !== null) this.outage.tokens += delta
      this.pending.push(() => this.store.charge(key, marker, delta, expireAt))
    }
    this.unsynced.clear()
    const ops = this.pending.splice(0)
    if (ops.length === 0) return
    const results = await Promise.allSettled(ops.map((op) => op()))
    const failed = ops.filter((_, i) => results[i]?.status === 'rejected')
    if (this.outage !== null) this.outage.replayed += ops.length - failed.length
    if (failed.length === 0) return
    this.pending.unshift(...failed)
    const first = results.find((r) => r.status === 'rejected')
    throw first?.status === 'rejected' ? first.reason : new Error('a Redis operation failed')
  }

  private scheduleSync(): void {
    if (this.syncTimer !== null || this.closing) return
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null
      if (this.healthy) this.sync().catch((err: unknown) => this.down(err))
    }, SYNC_DELAY_MS).unref()
  }

  private wake(): void {
    const waiters = this.waiters
    this.waiters = []
    for (const wake of waiters) wake()
  }
}

/** Redis errors no wait mends, with the setting that causes them (what `llmproxy check` cannot see: it needs Redis). */
const MISCONFIGURATIONS: { pattern: RegExp; setting: string; problem: string }[] = [
  {
    pattern: /WRONGPASS|NOAUTH|invalid username-password/i,
    setting: 'redis.password',
    problem: 'Redis refuses the credentials (redis.username and redis.password, or those of redis.url)',
  },
  { pattern: /No such master with that name/i, setting: 'redis.name', problem: 'no Sentinel knows a master of that name' },
  {
    pattern: /^MOVED \d+/,
    setting: 'redis.url',
    problem: 'this Redis is a node of a Cluster: list the Cluster nodes under redis.cluster instead',
  },
  {
    pattern: /cluster support disabled/i,
    setting: 'redis.cluster',
    problem: 'these nodes are no Redis Cluster (a single Redis goes in redis.url)',
  },
]

function misconfiguration(err: unknown): { setting: string; problem: string } | null {
  const message = err instanceof Error ? err.message : ''
  if (message === '') return null
  return MISCONFIGURATIONS.find((known) => known.pattern.test(message)) ?? null
}

/**
 * The error without the failed command's arguments, which ioredis attaches (`err.command.args`): for AUTH and
 * HELLO, the Redis password. Only the command's name is kept.
 */
function withoutArguments(err: unknown): unknown {
  const command = (err as { command?: { name?: unknown } } | undefined)?.command
  if (!(err instanceof Error) || command === undefined) return err
  const copy = new Error(err.message)
  copy.name = err.name
  copy.stack = err.stack
  return Object.assign(copy, { command: command.name })
}
