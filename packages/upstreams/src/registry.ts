import { EventEmitter } from 'node:events'
import { errors } from '@llmproxy/core'
import { HealthChecker } from './health.js'
import {
  type HealthChecksOptions,
  keepsUpstream,
  normalizeUrl,
  type PassiveHealthOptions,
  type QueueOptions,
  type ResolvedUpstreamConfig,
  resolveOptions,
  resolveUpstreamList,
  type UpstreamsOptions,
} from './options.js'
import { type PanicListener, type Pool, PoolImpl } from './pool.js'
import { builtinStrategies, type StrategyFactory } from './strategies.js'
import { type PoolLink, type Upstream, UpstreamNode, type UpstreamOwner, type UpstreamSnapshot, type UpstreamState } from './upstream.js'

/** The logger calls the registry makes (a Fastify/pino logger fits). */
export interface UpstreamsLogger {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
}

export interface UpstreamRegistryEvents {
  /** Once per state transition: the upstream after it, the state before it, and why. */
  state: [snapshot: UpstreamSnapshot, previousState: UpstreamState, reason: string]
}

const noop = (): void => {}
const silent: UpstreamsLogger = { info: noop, warn: noop }

/** States an upstream is picked by nobody in: their transitions are logged as warnings. */
const BAD_STATES: ReadonlySet<UpstreamState> = new Set<UpstreamState>(['unhealthy', 'ejected'])

/**
 * The upstreams of the gateway, their health, and the pools that balance them (`fastify.upstreams`).
 * Usable on its own: `new UpstreamRegistry(options, logger)`, `start()` for active checks, `close()` at the end.
 */
export class UpstreamRegistry extends EventEmitter<UpstreamRegistryEvents> {
  private readonly log: UpstreamsLogger
  private readonly owner: UpstreamOwner
  private readonly queue: QueueOptions
  private readonly checker: HealthChecker
  private nodes = new Map<string, UpstreamNode>()
  private readonly pools = new Map<string, PoolImpl>()
  private readonly strategies = new Map<string, StrategyFactory>(Object.entries(builtinStrategies))
  private readonly panicked: PanicListener

  constructor(options: UpstreamsOptions, log: UpstreamsLogger = silent) {
    super()
    const resolved = resolveOptions(options)
    this.log = log
    this.queue = resolved.queue
    this.owner = {
      passive: resolved.passive,
      checks: resolved.healthChecks,
      onTransition: (upstream, previous, reason) => this.transitioned(upstream, previous, reason),
      wake: (upstream) => wake(upstream),
    }
    this.panicked = (pool, panic) => {
      const fields = { pool: pool.names, strategy: pool.strategy }
      if (panic) this.log.warn(fields, 'pool in panic mode: no upstream in service, the strategy balances requests among them all')
      else this.log.info(fields, 'pool out of panic mode')
    }
    this.checker = new HealthChecker(resolved.healthChecks, (upstream, ok, error) => {
      if (upstream.checked(ok, error)) wake(upstream)
    })
    for (const config of resolved.upstreams) this.nodes.set(config.name, this.create(config))
  }

  get passive(): PassiveHealthOptions {
    return this.owner.passive
  }

  get healthChecks(): HealthChecksOptions {
    return this.owner.checks
  }

  get(name: string): Upstream | undefined {
    return this.nodes.get(name)
  }

  list(): Upstream[] {
    return [...this.nodes.values()]
  }

  /**
   * The pool of `names` balanced by `strategy`, cached: the same arguments give the same pool (and queue).
   * Throws an Error naming the problem for an empty list, a name listed twice, an unknown upstream or strategy.
   * Each call holds the pool until a `release` of it.
   */
  pool(names: readonly string[], strategy = 'round-robin'): Pool {
    const key = poolKey(names, strategy)
    const cached = this.pools.get(key)
    if (cached !== undefined) {
      cached.holders++
      return cached
    }
    const factory = this.strategies.get(strategy)
    if (factory === undefined) {
      throw errors.setup(`Unknown balancing strategy ${JSON.stringify(strategy)}; known: ${[...this.strategies.keys()].join(', ')}`)
    }
    if (names.length === 0) throw errors.setup('A pool needs at least one upstream')
    const seen = new Set<string>()
    for (const name of names) {
      if (seen.has(name)) throw errors.setup(`Upstream ${JSON.stringify(name)} is listed twice in the pool`)
      seen.add(name)
      if (!this.nodes.has(name)) {
        throw errors.setup(`Unknown upstream ${JSON.stringify(name)} in pool; known: ${[...this.nodes.keys()].join(', ') || '(none)'}`)
      }
    }
    const pool = new PoolImpl([...names], strategy, factory, this.members(names), this.queue, this.panicked)
    this.pools.set(key, pool)
    return pool
  }

  /**
   * Gives back a pool `pool()` returned (once per call). When nothing holds it any more, it is retired (see
   * Pool.retired) and forgotten: `pool()` with its arguments makes a new one. A pool a reload retired is ignored.
   */
  release(pool: Pool): void {
    const key = poolKey(pool.names, pool.strategy)
    const held = this.pools.get(key)
    if (held !== pool || --held.holders > 0) return
    this.pools.delete(key)
    held.retire(this.members(held.names))
  }

  /** Registers a custom balancing strategy, usable by name in `pool(names, name)`. */
  addStrategy(name: string, factory: StrategyFactory): void {
    if (typeof name !== 'string' || name === '') throw errors.setup('A strategy needs a name')
    if (typeof factory !== 'function') throw errors.setup(`The ${JSON.stringify(name)} strategy factory must be a function`)
    if (this.strategies.has(name)) throw errors.setup(`A balancing strategy named ${JSON.stringify(name)} already exists`)
    this.strategies.set(name, factory)
  }

  snapshot(): UpstreamSnapshot[] {
    const now = Date.now()
    const out: UpstreamSnapshot[] = []
    for (const upstream of this.nodes.values()) out.push(upstream.snapshot(now))
    return out
  }

  /** Admin: nobody picks the upstream until `enable` (requests in flight finish). False for an unknown name. */
  drain(name: string): boolean {
    const upstream = this.nodes.get(name)
    if (upstream === undefined) return false
    upstream.drain()
    wake(upstream)
    return true
  }

  /** Admin: the upstream is healthy again, whatever it was (counters and cooldown reset). False for an unknown name. */
  enable(name: string): boolean {
    const upstream = this.nodes.get(name)
    if (upstream === undefined) return false
    upstream.enable()
    wake(upstream)
    return true
  }

  /**
   * Hot reload. Validated like the options (throws a ConfigError, changing nothing, when invalid).
   * An upstream with the same name and url keeps its state, EWMA and in-flight count and takes the new
   * settings; removed ones stop their checks; new ones start. Pools follow; a cached pool naming a removed
   * upstream is retired (see Pool.retired): `pool()` no longer returns it, its queue goes back to the callers, and
   * requests that started on it keep working with the others.
   */
  update(upstreams: UpstreamsOptions['upstreams']): void {
    const configs = resolveUpstreamList(upstreams)
    const previous = this.nodes
    const next = new Map<string, UpstreamNode>()
    let kept = 0
    for (const config of configs) {
      const existing = previous.get(config.name)
      if (existing !== undefined && keepsUpstream(existing.url, config.url)) {
        existing.configure(config)
        next.set(config.name, existing)
        kept++
      } else {
        next.set(config.name, this.create(config))
      }
    }
    for (const upstream of previous.values()) if (next.get(upstream.name) !== upstream) this.checker.stop(upstream)
    this.nodes = next
    for (const upstream of next.values()) this.checker.sync(upstream)
    for (const [key, pool] of this.pools) {
      if (pool.names.every((name) => next.has(name))) pool.refresh(this.members(pool.names))
      else {
        this.pools.delete(key)
        pool.retire(this.members(pool.names))
      }
    }
    this.log.info({ upstreams: next.size, kept, added: next.size - kept, removed: previous.size - kept }, 'upstreams updated')
  }

  /** Starts the active health checks (the plugin calls it when the app is ready). */
  start(): void {
    this.checker.start(this.nodes.values())
  }

  /** Stops the checks and rejects the requests waiting in the queues. */
  close(): void {
    this.checker.close()
    for (const pool of this.pools.values()) pool.close()
    this.pools.clear()
  }

  private create(config: ResolvedUpstreamConfig): UpstreamNode {
    return new UpstreamNode(config, normalizeUrl(config.url), this.owner)
  }

  private members(names: readonly string[]): UpstreamNode[] {
    const members: UpstreamNode[] = []
    for (const name of names) {
      const upstream = this.nodes.get(name)
      if (upstream !== undefined) members.push(upstream)
    }
    return members
  }

  private transitioned(upstream: UpstreamNode, previous: UpstreamState, reason: string): void {
    // A removed upstream (a lease still in flight on it) is nobody's business any more.
    if (this.nodes.get(upstream.name) !== upstream) return
    const fields = { upstream: upstream.name, state: upstream.state, previousState: previous, reason }
    if (BAD_STATES.has(upstream.state)) this.log.warn(fields, 'upstream state changed')
    else this.log.info(fields, 'upstream state changed')
    this.emit('state', upstream.describe(Date.now()), previous, reason)
    for (const pool of upstream.pools) pool.reassess()
  }
}

function poolKey(names: readonly string[], strategy: string): string {
  return `${strategy}\n${names.join('\n')}`
}

function wake(upstream: UpstreamNode): void {
  const pools = upstream.pools
  for (let i = 0; i < pools.length; i++) {
    const pool = pools[i] as PoolLink
    if (pool.waiting > 0) pool.serve()
  }
}
