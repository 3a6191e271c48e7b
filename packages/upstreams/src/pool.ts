import { errors } from '@llmproxy/core'
import { upstreamsBusy } from './errors.js'
import type { QueueOptions } from './options.js'
import type { Strategy, StrategyFactory } from './strategies.js'
import { type Lease, type Upstream, UpstreamNode } from './upstream.js'

/** A set of upstreams balanced by one strategy, with a bounded FIFO queue for when they are all at maxConcurrency. */
export interface Pool {
  readonly names: readonly string[]
  readonly strategy: string
  /** Requests waiting in the queue. */
  readonly waiting: number
  /**
   * Synchronous fast path: a lease on the best available upstream not in `exclude`; 'busy' when candidates
   * exist but all are at maxConcurrency; null when none is available (ejected, unhealthy, draining, held, excluded).
   */
  tryAcquire(exclude?: ReadonlySet<string>): Lease | 'busy' | null
  /**
   * When nothing is available only because upstreams answered 429 and are held back until their
   * Retry-After: the epoch ms at which the first of them (not in `exclude`) is free again; else 0.
   */
  holdEnds(exclude?: ReadonlySet<string>): number
  /**
   * Like tryAcquire, but when busy waits in the queue for a slot. Rejects with an LlmProxyError 503
   * `llmproxy_upstreams_busy` when the queue is full or `queue.timeoutMs` passes, and with `signal.reason`
   * when `signal` aborts (the request leaves the queue). Resolves null when nothing is available any more.
   */
  acquire(exclude?: ReadonlySet<string>, signal?: AbortSignal): Promise<Lease | null>
}

interface Waiter {
  exclude: ReadonlySet<string> | undefined
  resolve: (lease: Lease | null) => void
  reject: (err: unknown) => void
  timer: NodeJS.Timeout
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
}

export class PoolImpl implements Pool {
  readonly names: readonly string[]
  readonly strategy: string
  private readonly factory: StrategyFactory
  private readonly queueOptions: QueueOptions
  private members: UpstreamNode[] = []
  private picker: Strategy
  /** Reused by every pick (no array per request). */
  private readonly candidates: Upstream[] = []
  private picking = false
  private serving = false
  private readonly queue: Waiter[] = []

  constructor(names: readonly string[], strategy: string, factory: StrategyFactory, members: UpstreamNode[], queue: QueueOptions) {
    this.names = names
    this.strategy = strategy
    this.factory = factory
    this.queueOptions = queue
    this.picker = this.adopt(members)
  }

  get waiting(): number {
    return this.queue.length
  }

  holdEnds(exclude?: ReadonlySet<string>): number {
    let first = 0
    for (const upstream of this.members) {
      if (exclude?.has(upstream.name) || upstream.state === 'draining' || upstream.state === 'unhealthy') continue
      if (upstream.heldUntil !== 0 && (first === 0 || upstream.heldUntil < first)) first = upstream.heldUntil
    }
    return first
  }

  tryAcquire(exclude?: ReadonlySet<string>): Lease | 'busy' | null {
    // A 'state' listener or a custom strategy may call back in: it then gets its own array.
    const nested = this.picking
    const candidates = nested ? [] : this.candidates
    candidates.length = 0
    this.picking = true
    try {
      const now = Date.now()
      const members = this.members
      let available = false
      for (let i = 0; i < members.length; i++) {
        const upstream = members[i] as UpstreamNode
        if (exclude?.has(upstream.name) || !upstream.available(now)) continue
        available = true
        if (upstream.maxConcurrency === null || upstream.inFlight < upstream.maxConcurrency) candidates.push(upstream)
      }
      if (candidates.length === 0) return available ? 'busy' : null
      const picked = this.picker.pick(candidates)
      if (picked === undefined) return null
      if (!(picked instanceof UpstreamNode))
        throw new TypeError(`The ${this.strategy} strategy returned an upstream that is not a candidate`)
      return picked.lease()
    } finally {
      if (!nested) {
        this.picking = false
        candidates.length = 0
      }
    }
  }

  acquire(exclude?: ReadonlySet<string>, signal?: AbortSignal): Promise<Lease | null> {
    if (signal?.aborted) return Promise.reject(signal.reason)
    const first = this.tryAcquire(exclude)
    if (first !== 'busy') return Promise.resolve(first)
    const { maxWaiting, timeoutMs } = this.queueOptions
    if (this.queue.length >= maxWaiting) {
      return Promise.reject(upstreamsBusy(`Every upstream of the pool is at its concurrency limit and ${maxWaiting} requests are waiting.`))
    }
    return new Promise<Lease | null>((resolve, reject) => {
      const waiter: Waiter = {
        exclude,
        resolve,
        reject,
        timer: setTimeout(() => this.expire(waiter), timeoutMs),
        signal,
        onAbort: undefined,
      }
      if (signal !== undefined) {
        waiter.onAbort = () => {
          if (this.leave(waiter)) reject(signal.reason)
        }
        signal.addEventListener('abort', waiter.onAbort, { once: true })
      }
      this.queue.push(waiter)
    })
  }

  /** Hands freed slots to the waiters, in order. Called when a lease is released or an upstream changes state. */
  serve(): void {
    if (this.serving) return
    this.serving = true
    try {
      const queue = this.queue
      let i = 0
      while (i < queue.length) {
        const waiter = queue[i] as Waiter
        const result = this.tryAcquire(waiter.exclude)
        if (result === 'busy') {
          // A waiter that excludes nothing could take any slot: the ones behind it can't do better.
          if (waiter.exclude === undefined || waiter.exclude.size === 0) break
          i++
          continue
        }
        queue.splice(i, 1)
        this.detach(waiter)
        waiter.resolve(result)
      }
    } finally {
      this.serving = false
    }
  }

  /** Hot reload: the registry resolved the pool's names again. */
  refresh(members: UpstreamNode[]): void {
    const same = members.length === this.members.length && members.every((m, i) => m === this.members[i])
    if (!same) this.picker = this.adopt(members)
    this.serve()
  }

  /** Rejects every waiter (the app is closing). */
  close(): void {
    const waiters = this.queue.splice(0)
    for (const waiter of waiters) {
      this.detach(waiter)
      waiter.reject(errors.shuttingDown())
    }
    for (const member of this.members) unlink(member, this)
  }

  private adopt(members: UpstreamNode[]): Strategy {
    for (const old of this.members) unlink(old, this)
    this.members = members
    for (const member of members) member.pools.push(this)
    return this.factory(members)
  }

  private expire(waiter: Waiter): void {
    if (this.leave(waiter)) {
      waiter.reject(upstreamsBusy(`Every upstream of the pool stayed at its concurrency limit for ${this.queueOptions.timeoutMs} ms.`))
    }
  }

  /** Takes a waiter out of the queue; false when it was already served. */
  private leave(waiter: Waiter): boolean {
    const at = this.queue.indexOf(waiter)
    if (at === -1) return false
    this.queue.splice(at, 1)
    this.detach(waiter)
    return true
  }

  private detach(waiter: Waiter): void {
    clearTimeout(waiter.timer)
    if (waiter.signal !== undefined && waiter.onAbort !== undefined) waiter.signal.removeEventListener('abort', waiter.onAbort)
  }
}

function unlink(upstream: UpstreamNode, pool: PoolImpl): void {
  const at = upstream.pools.indexOf(pool)
  if (at !== -1) upstream.pools.splice(at, 1)
}
