import { errors } from '@llmproxy/core'
import type { QueueOptions } from './options.js'
import type { Strategy, StrategyFactory } from './strategies.js'
import { type Lease, type PoolLink, type Upstream, UpstreamNode } from './upstream.js'

/** A set of upstreams balanced by one strategy, with a bounded FIFO queue for when they are all at maxConcurrency. */
export interface Pool {
  readonly names: readonly string[]
  readonly strategy: string
  /** Requests waiting in the queue. */
  readonly waiting: number
  /**
   * Panic mode: no upstream of the pool is in service (each is ejected, or half-open with its trial in
   * flight, or unhealthy; draining ones aside), so the strategy picks among them.
   */
  readonly panic: boolean
  /**
   * A hot reload removed one of its upstreams, or its last holder released it (`UpstreamRegistry.release`): the
   * registry no longer returns it, and it queues nobody (the requests waiting in it, and an `acquire` that would wait,
   * get null at once, for their caller to route again). It still leases the upstreams it has left, to requests that
   * started on it, but no longer follows their states (nor logs panic mode).
   */
  readonly retired: boolean
  /**
   * Synchronous fast path: a lease on the best available upstream not in `exclude`; 'busy' when candidates
   * exist but all are at maxConcurrency; null when none is available (draining, held, excluded, or out while
   * another upstream of the pool is in service). In panic mode, a lease on the upstream the strategy picks among
   * those that are out, not excluded, not held and below maxConcurrency ('busy' when they are all at it).
   */
  tryAcquire(exclude?: ReadonlySet<string>, model?: string): Lease | 'busy' | null
  /**
   * Whether an upstream not in `exclude` is in service for `model` with a slot free now: tryAcquire would lease it,
   * the strategy's own choice aside, with no wait in the queue and no panic pick. It leases nothing.
   */
  offers(exclude?: ReadonlySet<string>, model?: string): boolean
  /**
   * When nothing is available only because upstreams answered 429 (or 503 with a Retry-After) and are held back
   * until their Retry-After: the epoch ms at which the first of them (not in `exclude`) is free again; else 0.
   * `model` (here and in the acquires): the upstream model asked for; holds of other models do not count.
   */
  holdEnds(exclude?: ReadonlySet<string>, model?: string): number
  /**
   * Whether an upstream `holdEnds` counts is held back by a 503's Retry-After (unavailable) rather than a 429 (rate
   * limiting): what the caller tells a client it sends back to wait. A 503's hold is on every model.
   */
  heldUnavailable(exclude?: ReadonlySet<string>): boolean
  /**
   * Like tryAcquire, but when busy waits in the queue for a slot. Rejects with an LlmProxyError 503
   * `llmproxy_upstreams_busy` when the queue is full or `queue.timeoutMs` passes, and with `signal.reason`
   * when `signal` aborts (the request leaves the queue). Resolves null when nothing is available any more, or when
   * the pool is (or becomes) `retired`.
   */
  acquire(exclude?: ReadonlySet<string>, signal?: AbortSignal, model?: string): Promise<Lease | null>
}

interface Waiter {
  exclude: ReadonlySet<string> | undefined
  model: string | undefined
  resolve: (lease: Lease | null) => void
  reject: (err: unknown) => void
  timer: NodeJS.Timeout
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
}

/** Called when a pool enters (true) or leaves (false) panic mode. */
export type PanicListener = (pool: PoolImpl, panic: boolean) => void

const unheard: PanicListener = () => {}

/** An upstream whose Retry-After hold counts for `holdEnds` and `heldUnavailable`: not excluded, draining or unhealthy. */
function mayBeHeld(upstream: UpstreamNode, exclude: ReadonlySet<string> | undefined): boolean {
  return !exclude?.has(upstream.name) && upstream.state !== 'draining' && upstream.state !== 'unhealthy'
}

/**
 * Which upstreams panic mode picks among: none (not in panic: some upstream is in service, or every one is
 * draining); the ejected and half-open ones (the unhealthy ones stay out while any upstream is not unhealthy);
 * or, when every upstream (draining ones aside) is unhealthy by active checks, those.
 */
type PanicScope = 'none' | 'out' | 'unhealthy'

export class PoolImpl implements Pool, PoolLink {
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
  private panicking = false
  private onPanic: PanicListener
  retired = false
  /** How many times the registry's `pool()` returned it, less the `release`s of it (counted by the registry). */
  holders = 1

  constructor(
    names: readonly string[],
    strategy: string,
    factory: StrategyFactory,
    members: UpstreamNode[],
    queue: QueueOptions,
    onPanic: PanicListener,
  ) {
    this.names = names
    this.strategy = strategy
    this.factory = factory
    this.queueOptions = queue
    this.onPanic = onPanic
    this.picker = this.adopt(members)
    this.reassess()
  }

  get waiting(): number {
    return this.queue.length
  }

  get panic(): boolean {
    // A passed cooldown ends the panic without a transition (those are lazy): look again.
    this.reassess()
    return this.panicking
  }

  holdEnds(exclude?: ReadonlySet<string>, model?: string): number {
    const now = Date.now()
    let first = 0
    for (const upstream of this.members) {
      if (!mayBeHeld(upstream, exclude)) continue
      const end = upstream.holdEnd(model, now)
      if (end !== 0 && (first === 0 || end < first)) first = end
    }
    return first
  }

  heldUnavailable(exclude?: ReadonlySet<string>): boolean {
    const now = Date.now()
    for (const upstream of this.members) {
      if (mayBeHeld(upstream, exclude) && upstream.unavailable(now)) return true
    }
    return false
  }

  offers(exclude?: ReadonlySet<string>, model?: string): boolean {
    const now = Date.now()
    for (const upstream of this.members) {
      if (exclude?.has(upstream.name) || !upstream.available(now) || upstream.heldFor(model, now)) continue
      if (upstream.hasFreeSlot) return true
    }
    return false
  }

  tryAcquire(exclude?: ReadonlySet<string>, model?: string): Lease | 'busy' | null {
    // A 'state' listener or a custom strategy may call back in: it then gets its own array.
    const nested = this.picking
    const candidates = nested ? [] : this.candidates
    candidates.length = 0
    this.picking = true
    try {
      const now = Date.now()
      const members = this.members
      let available = false
      let failover = false
      for (let i = 0; i < members.length; i++) {
        const upstream = members[i] as UpstreamNode
        if (exclude?.has(upstream.name)) {
          failover = true
          continue
        }
        if (!upstream.available(now) || upstream.heldFor(model, now)) continue
        available = true
        if (upstream.hasFreeSlot) candidates.push(upstream)
      }
      if (!available) return this.panicPick(candidates, failover, now, exclude, model)
      // An upstream is in service: whatever the pool was in, it is not in panic now.
      if (this.panicking) this.setPanic(false)
      if (candidates.length === 0) return 'busy'
      return this.leaseOn(candidates, failover, false)
    } finally {
      if (!nested) {
        this.picking = false
        candidates.length = 0
      }
    }
  }

  acquire(exclude?: ReadonlySet<string>, signal?: AbortSignal, model?: string): Promise<Lease | null> {
    if (signal?.aborted) return Promise.reject(signal.reason)
    const first = this.tryAcquire(exclude, model)
    if (first !== 'busy') return Promise.resolve(first)
    if (this.retired) return Promise.resolve(null)
    const { maxWaiting, timeoutMs } = this.queueOptions
    if (this.queue.length >= maxWaiting) {
      return Promise.reject(
        errors.upstreamsBusy(`Every upstream of the pool is at its concurrency limit and ${maxWaiting} requests are waiting.`),
      )
    }
    return new Promise<Lease | null>((resolve, reject) => {
      const waiter: Waiter = {
        exclude,
        model,
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
        const result = this.tryAcquire(waiter.exclude, waiter.model)
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
    this.reassess()
    this.serve()
  }

  /**
   * Hot reload removed one of the pool's upstreams (`members` are those left), or nobody holds the pool any more. Its
   * waiters have not started: rather than wait for the upstreams left here, or fail with none left, they go back to
   * their caller (null), which routes them by the config in force.
   */
  retire(members: UpstreamNode[]): void {
    this.retired = true
    this.refresh(members)
    const waiters = this.queue.splice(0)
    for (const waiter of waiters) {
      this.detach(waiter)
      waiter.resolve(null)
    }
    // No queue to serve and no route to report on: the upstreams forget it (the picks of requests that started on it
    // read their states directly), and what is left of it goes with those requests.
    for (const member of this.members) unlink(member, this)
    this.onPanic = unheard
  }

  reassess(): void {
    this.setPanic(this.panicScope(Date.now()) !== 'none')
  }

  /**
   * Nothing not excluded is available: in panic mode, the strategy picks among the upstreams that are out (as Envoy,
   * disregarding health): checks that fail on upstreams that still serve keep the pool in panic for as long as they
   * fail, and its load must stay spread. `candidates`: the pick's array, empty.
   */
  private panicPick(
    candidates: Upstream[],
    failover: boolean,
    now: number,
    exclude: ReadonlySet<string> | undefined,
    model: string | undefined,
  ): Lease | 'busy' | null {
    const scope = this.panicScope(now)
    this.setPanic(scope !== 'none')
    if (scope === 'none') return null
    const members = this.members
    let full = false
    for (let i = 0; i < members.length; i++) {
      const upstream = members[i] as UpstreamNode
      const state = upstream.state
      if (state === 'draining' || (state === 'unhealthy') !== (scope === 'unhealthy')) continue
      // A hold (a 429, a 503 with a Retry-After) is respected even in panic: the upstream said when to come back.
      if (exclude?.has(upstream.name) || upstream.heldFor(model, now)) continue
      if (upstream.hasFreeSlot) candidates.push(upstream)
      else full = true
    }
    if (candidates.length === 0) return full ? 'busy' : null
    return this.leaseOn(candidates, failover, true)
  }

  /** A lease on the strategy's pick among `candidates` (never empty); null when it declines. */
  private leaseOn(candidates: readonly Upstream[], failover: boolean, panic: boolean): Lease | null {
    const picked = this.picker.pick(candidates, failover)
    if (picked === undefined) return null
    if (!(picked instanceof UpstreamNode)) throw errors.setup(`The ${this.strategy} strategy returned an upstream that is not a candidate`)
    return picked.lease(panic)
  }

  private panicScope(now: number): PanicScope {
    let out = 0
    let unhealthy = 0
    for (const upstream of this.members) {
      if (upstream.state === 'draining') continue
      if (upstream.inService(now)) return 'none'
      out++
      if (upstream.state === 'unhealthy') unhealthy++
    }
    if (out === 0) return 'none'
    return unhealthy === out ? 'unhealthy' : 'out'
  }

  private setPanic(panic: boolean): void {
    if (panic === this.panicking) return
    this.panicking = panic
    this.onPanic(this, panic)
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
      waiter.reject(
        errors.upstreamsBusy(`Every upstream of the pool stayed at its concurrency limit for ${this.queueOptions.timeoutMs} ms.`),
      )
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
