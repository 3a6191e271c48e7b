// Several gateway processes on one machine (the reference server's `server.workers`, node:cluster) with the memory
// store: the counters live in the primary process, and every worker reaches them over its IPC channel, so that a
// limit holds across all workers exactly as in one process. A worker's operations travel in batches (one message per
// turn of its event loop; the ones that need an answer wait for the primary's batch back); the primary applies them
// one at a time on one MemoryStore, which makes each check-and-add atomic across workers.
import type { FastifyBaseLogger } from 'fastify'
import { type RequestCount, type RequestCounter, RequestWindows, requestCount } from './request-windows.js'
import { QuotaStateFile } from './state-file.js'
import { type CheckResult, type LocalStore, MemoryStore } from './store.js'

/** Tag of every message of this protocol (other IPC messages pass by). */
const TAG = 'llmproxy:counters'
/**
 * A message is `[TAG, ...operations]`: the operations one side issued in one turn of its event loop, sent together
 * (one write and one parse instead of one per operation). From a worker, an operation is `[id, op, ...args]`; back,
 * `[id, a, b]` for each `id` other than 0.
 */
const RESERVE = 1
const ADD = 2
const GET = 3
const ACQUIRE = 4
const RELEASE = 5
const IN_FLIGHT = 6
const HIT = 7

type Operation = (string | number)[]

/** Sends operations in batches: those queued in one turn of the event loop go out in one message. */
class Outbox {
  private queued: Operation[] = []
  private readonly send: (message: unknown) => void

  constructor(send: (message: unknown) => void) {
    this.send = send
  }

  push(operation: Operation): void {
    if (this.queued.length === 0) setImmediate(this.flush)
    this.queued.push(operation)
  }

  private readonly flush = (): void => {
    const queued = this.queued
    this.queued = []
    this.send([TAG, ...queued])
  }
}

type Reply = [number, number]
/** An answer as it travels: `[id, a, b]`. */
type Answer = [number, number, number]

/** The IPC side of a worker: `process` in a node:cluster worker. */
export interface PrimaryChannel {
  send?: ((message: unknown) => boolean) | undefined
  on(event: 'message', listener: (message: unknown) => void): unknown
  off(event: 'message', listener: (message: unknown) => void): unknown
}

/** Requests to the primary and their pending answers. */
class CounterClient {
  private readonly channel: PrimaryChannel
  private readonly outbox: Outbox
  private readonly pending = new Map<number, (reply: Reply) => void>()
  private seq = 0

  constructor(channel: PrimaryChannel) {
    this.channel = channel
    this.outbox = new Outbox((message) => channel.send?.(message))
    channel.on('message', this.onMessage)
  }

  /** An operation whose answer is needed. */
  call(op: number, ...args: (string | number)[]): Promise<Reply> {
    const id = ++this.seq
    return new Promise((resolve) => {
      this.pending.set(id, resolve)
      this.outbox.push([id, op, ...args])
    })
  }

  /** An operation whose answer is not needed (the operations of one worker are applied in order). */
  tell(op: number, ...args: (string | number)[]): void {
    this.outbox.push([0, op, ...args])
  }

  close(): void {
    this.channel.off('message', this.onMessage)
  }

  private readonly onMessage = (message: unknown): void => {
    if (!Array.isArray(message) || message[0] !== TAG) return
    for (let i = 1; i < message.length; i++) {
      const [id, a, b] = message[i] as Answer
      const resolve = this.pending.get(id)
      if (resolve === undefined) continue
      this.pending.delete(id)
      resolve([a, b])
    }
  }
}

/** The plugin's local store in a worker: every operation is done by the primary's MemoryStore. */
export class PrimaryStore implements LocalStore {
  private readonly client: CounterClient

  constructor(client: CounterClient) {
    this.client = client
  }

  async reserve(key: string, _marker: string, amount: number, limit: number, expireAt: number): Promise<CheckResult> {
    const [ok, value] = await this.client.call(RESERVE, key, amount, limit, expireAt)
    return { ok: ok === 1, value }
  }

  async settle(key: string, _marker: string, total: number, reserved: number, expireAt: number): Promise<number> {
    const [value] = await this.client.call(ADD, key, total - reserved, expireAt)
    return value
  }

  async charge(key: string, _marker: string, amount: number, expireAt: number): Promise<number> {
    const [value] = await this.client.call(ADD, key, amount, expireAt)
    return value
  }

  /** Sent without waiting: the counter is in the primary, so this returns NaN (callers that need it use settle or charge). */
  add(key: string, delta: number, expireAt: number): number {
    this.client.tell(ADD, key, delta, expireAt)
    return Number.NaN
  }

  async get(key: string): Promise<number> {
    const [value] = await this.client.call(GET, key)
    return value
  }

  async acquire(key: string, _member: string, limit: number): Promise<CheckResult> {
    const [ok, value] = await this.client.call(ACQUIRE, key, limit)
    return { ok: ok === 1, value }
  }

  async release(key: string): Promise<void> {
    this.client.tell(RELEASE, key)
  }

  async inFlight(key: string): Promise<number> {
    const [value] = await this.client.call(IN_FLIGHT, key)
    return value
  }

  /** Redis's values are not mirrored in the primary: a worker falls back to the primary's own counts. */
  mirror(): void {}

  close(): void {
    this.client.close()
  }
}

/** Request windows kept by the primary: the request limits (rps, rpm, global and per key) count every worker's requests together. */
class PrimaryWindows implements RequestCounter {
  private readonly client: CounterClient
  private readonly prefix: string
  private readonly windowMs: number

  constructor(client: CounterClient, name: string, windowMs: number) {
    this.client = client
    this.prefix = `${name}:`
    this.windowMs = windowMs
  }

  async hit(subject: string, max: number): Promise<RequestCount> {
    const [count, ttl] = await this.client.call(HIT, this.prefix + subject, this.windowMs)
    return requestCount(max, count, ttl)
  }
}

let shared: CounterClient | null = null

/**
 * Called in a gateway worker (by the reference server, before it registers the plugin): the memory store's counters
 * of every rate-limit plugin registered in this process are the primary's, which runs a `CounterHost`.
 */
export function useCountersOfPrimary(channel: PrimaryChannel = process): void {
  if (channel.send === undefined) throw new Error('useCountersOfPrimary: this process has no IPC channel to a primary')
  shared ??= new CounterClient(channel)
}

/** The plugin's token, concurrency and quota counters: its own, or the primary's in a worker (memory store only). */
export function localCounterStore(store: 'memory' | 'redis'): LocalStore {
  return shared !== null && store === 'memory' ? new PrimaryStore(shared) : new MemoryStore()
}

/** A local request limit (`name`): counted in this process, or by the primary in a worker (memory store only). */
export function localRequestWindows(store: 'memory' | 'redis', name: string, windowMs: number, capacity: number): RequestCounter {
  return shared !== null && store === 'memory' ? new PrimaryWindows(shared, name, windowMs) : new RequestWindows(windowMs, capacity)
}

/** Fixed windows of the request limiters, by `<timeWindow>:<key>`. */
class FixedWindows {
  private readonly windows = new Map<string, { count: number; endsAt: number }>()

  hit(key: string, timeWindow: number, now: number): Reply {
    const id = `${timeWindow}:${key}`
    const window = this.windows.get(id)
    if (window === undefined || window.endsAt <= now) {
      this.windows.set(id, { count: 1, endsAt: now + timeWindow })
      return [1, timeWindow]
    }
    window.count++
    return [window.count, window.endsAt - now]
  }

  sweep(now: number): void {
    for (const [id, window] of this.windows) if (window.endsAt <= now) this.windows.delete(id)
  }
}

/** A worker as the primary sees it (a node:cluster Worker). */
export interface CounterPeer {
  send(message: unknown): boolean
}

export interface CounterHostOptions {
  /** The plugin's `quotaStateFile`: the primary keeps it for every worker. */
  quotaStateFile?: string | undefined
  log: FastifyBaseLogger
}

const SWEEP_MS = 60_000
const STATE_FILE_INTERVAL_MS = 5000

/**
 * The primary's side: holds the counters of every worker and answers their messages. Concurrency slots are counted
 * per worker too, so that the slots of a worker that died are given back (`forget`); its token reservations stay
 * charged, as with Redis.
 */
export class CounterHost {
  private readonly store: MemoryStore
  private readonly windows = new FixedWindows()
  private readonly slots = new Map<CounterPeer, Map<string, number>>()
  private readonly outboxes = new Map<CounterPeer, Outbox>()
  private readonly gone = new WeakSet<CounterPeer>()
  private readonly sweeper: NodeJS.Timeout
  private readonly stateFile: QuotaStateFile | null

  private constructor(stateFile: QuotaStateFile | null, store: MemoryStore) {
    this.store = store
    this.stateFile = stateFile
    this.sweeper = setInterval(() => this.windows.sweep(Date.now()), SWEEP_MS).unref()
  }

  static async create(options: CounterHostOptions): Promise<CounterHost> {
    const store = new MemoryStore()
    let stateFile: QuotaStateFile | null = null
    if (options.quotaStateFile !== undefined) {
      stateFile = new QuotaStateFile(options.quotaStateFile, store, options.log)
      await stateFile.load()
      stateFile.start(STATE_FILE_INTERVAL_MS)
    }
    return new CounterHost(stateFile, store)
  }

  /** Handles a message from `peer`; false when it is not one of this protocol. */
  handle(peer: CounterPeer, message: unknown): boolean {
    if (!Array.isArray(message) || message[0] !== TAG) return false
    // A message read after the worker's exit: its slots were given back already.
    if (this.gone.has(peer)) return true
    let outbox = this.outboxes.get(peer)
    if (outbox === undefined) {
      outbox = new Outbox((reply) => peer.send(reply))
      this.outboxes.set(peer, outbox)
    }
    const now = Date.now()
    // In order: each operation changes the store when it is called (MemoryStore's methods change it before they
    // return), so every check-and-add is atomic across workers; the answers go out together, after this turn.
    for (let i = 1; i < message.length; i++) {
      const operation = message[i] as unknown[]
      const id = operation[0] as number
      this.apply(peer, operation, now).then(
        (reply) => {
          if (id !== 0 && reply !== null) outbox.push([id, reply[0], reply[1]])
        },
        () => {
          // MemoryStore operations do not fail; a malformed operation gets no answer.
        },
      )
    }
    return true
  }

  /** `peer` is gone: its concurrency slots are given back. */
  forget(peer: CounterPeer): void {
    this.gone.add(peer)
    this.outboxes.delete(peer)
    const held = this.slots.get(peer)
    this.slots.delete(peer)
    if (held === undefined) return
    for (const [key, count] of held) for (let i = 0; i < count; i++) void this.store.release(key)
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper)
    this.store.close()
    await this.stateFile?.close()
  }

  /** `[id, op, key, ...args]` */
  private async apply(peer: CounterPeer, operation: unknown[], now: number): Promise<Reply | null> {
    const key = operation[2] as string
    switch (operation[1]) {
      case RESERVE: {
        const result = await this.store.reserve(key, '', operation[3] as number, operation[4] as number, operation[5] as number)
        return [result.ok ? 1 : 0, result.value]
      }
      case ADD:
        return [this.store.add(key, operation[3] as number, operation[4] as number), 0]
      case GET:
        return [await this.store.get(key), 0]
      case ACQUIRE: {
        const result = await this.store.acquire(key, '', operation[3] as number)
        if (result.ok) this.count(peer, key, 1)
        return [result.ok ? 1 : 0, result.value]
      }
      case RELEASE:
        this.count(peer, key, -1)
        await this.store.release(key)
        return null
      case IN_FLIGHT:
        return [await this.store.inFlight(key), 0]
      case HIT:
        return this.windows.hit(key, operation[3] as number, now)
      default:
        return null
    }
  }

  private count(peer: CounterPeer, key: string, delta: number): void {
    let held = this.slots.get(peer)
    if (held === undefined) {
      held = new Map()
      this.slots.set(peer, held)
    }
    const count = (held.get(key) ?? 0) + delta
    if (count > 0) held.set(key, count)
    else held.delete(key)
  }
}
