import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify'
import type { Attempt, Rejection } from './context.js'
import type { UsageRecord } from './usage-record.js'

/** What a listener returns is not used; a promise it returns is not awaited, its rejection is logged. */
export interface LlmHooks {
  /** Once per routed request, when it has ended (finished, aborted or failed). */
  onUsage: (record: UsageRecord, request: FastifyRequest) => unknown
  /** Once per upstream attempt, when its fate is known (committed or abandoned). */
  onAttempt: (attempt: Attempt, request: FastifyRequest) => unknown
  /** When auth or a limit turns a request away (`request.llm.outcome` is then `'rejected'`). */
  onReject: (rejection: Rejection, request: FastifyRequest) => unknown
}
export type LlmHookName = keyof LlmHooks
/** What a hook's listeners are given first (the record, the attempt, the rejection). */
type HookValue<K extends LlmHookName> = Parameters<LlmHooks[K]>[0]

const HOOK_NAMES: ReadonlySet<string> = new Set<LlmHookName>(['onUsage', 'onAttempt', 'onReject'])

/**
 * Mercurius-style registry. Listeners run after the fact: a throwing or slow listener never affects
 * the request or the other listeners (errors are logged, promises are not awaited).
 *
 * One registry per Fastify context that registers core (a context inside it uses its registry). What is emitted in a
 * context is also told to the listeners of the registries of the contexts around it (`outer`) and inside it
 * (`inner`), whichever registered core first: the app's own listeners at the root hear a gateway registered in a
 * child context, a usage or metrics plugin in a child context hears a gateway registered at the root after it, and
 * sibling contexts stay apart. A registry is around another, inside it or apart from it: no listener hears a value twice.
 */
export class LlmHookRegistry {
  private readonly listeners: { [K in LlmHookName]: LlmHooks[K][] } = { onUsage: [], onAttempt: [], onReject: [] }
  private readonly log: FastifyBaseLogger
  /** The registries of the contexts around this one, innermost first, and inside it (set when the app is ready). */
  private outer: LlmHookRegistry[] = []
  private readonly inner: LlmHookRegistry[] = []
  /** This registry, then `outer`, then `inner`: those whose listeners hear what this one emits (one loop per emit). */
  private linked: LlmHookRegistry[] = [this]
  /** The contexts the LLMProxy plugins using this registry were registered in (ensureCore tells). */
  private readonly pluginContexts: FastifyInstance[] = []
  private keptAtTurnEnd = false

  constructor(log: FastifyBaseLogger) {
    this.log = log
  }

  /** Called by core when the app is ready (every context and plugin registered). */
  setOuter(outer: LlmHookRegistry[]): void {
    this.outer = outer
    this.linked = [this, ...outer, ...this.inner]
    for (const registry of outer) {
      registry.inner.push(this)
      registry.linked = [registry, ...registry.outer, ...registry.inner]
    }
  }

  /** Called by ensureCore: an LLMProxy plugin is registered in `context`, whose registry this is. */
  addPluginContext(context: FastifyInstance): void {
    if (!this.pluginContexts.includes(context)) this.pluginContexts.push(context)
  }

  /**
   * The contexts of the LLMProxy plugins whose values this registry's listeners hear (its own, around and inside),
   * once the app is ready: where a plugin finds another's decorators when they sit in another context (metrics at
   * the root reads `upstreams` from the gateway's own context).
   */
  contextsHeard(): FastifyInstance[] {
    return this.linked.flatMap((registry) => registry.pluginContexts)
  }

  /**
   * An onUsage listener keeps each record at the end of the event-loop turn it was emitted in, in an immediate it
   * queues then (the usage spool: one write per turn). The router then emits an answer's record before the answer's
   * end, and ends it in an immediate queued after: the client's answer is complete only once its record is kept,
   * so a crash of the process never leaves a client holding an answer whose record it lost. True when such a
   * listener is here, around or inside.
   */
  get recordsKeptAtTurnEnd(): boolean {
    const linked = this.linked
    for (let i = 0; i < linked.length; i++) if ((linked[i] as LlmHookRegistry).keptAtTurnEnd) return true
    return false
  }

  set recordsKeptAtTurnEnd(kept: boolean) {
    this.keptAtTurnEnd = kept
  }

  addHook<K extends LlmHookName>(name: K, fn: LlmHooks[K]): void {
    if (!HOOK_NAMES.has(name))
      throw new TypeError(`Unknown llm hook ${JSON.stringify(name)}; expected one of ${[...HOOK_NAMES].join(', ')}`)
    if (typeof fn !== 'function') throw new TypeError(`The ${name} hook must be a function`)
    ;(this.listeners[name] as LlmHooks[K][]).push(fn)
  }

  hasListeners(name: LlmHookName): boolean {
    const linked = this.linked
    for (let i = 0; i < linked.length; i++) if ((linked[i] as LlmHookRegistry).listeners[name].length > 0) return true
    return false
  }

  emitUsage(record: UsageRecord, request: FastifyRequest): void {
    this.emit('onUsage', record, request)
  }

  emitAttempt(attempt: Attempt, request: FastifyRequest): void {
    this.emit('onAttempt', attempt, request)
  }

  emitReject(rejection: Rejection, request: FastifyRequest): void {
    // Refused by a plugin: the request's outcome (core's to write, the router never reaches it).
    if (request.llm !== null && request.llm !== undefined) request.llm.outcome = 'rejected'
    this.emit('onReject', rejection, request)
  }

  /** Tells this registry's listeners, then those of the registries around, then those inside. */
  private emit<K extends LlmHookName>(name: K, value: HookValue<K>, request: FastifyRequest): void {
    const linked = this.linked
    for (let i = 0; i < linked.length; i++) (linked[i] as LlmHookRegistry).run(name, value, request)
  }

  private run<K extends LlmHookName>(name: K, value: HookValue<K>, request: FastifyRequest): void {
    // (One list per hook name: TypeScript cannot tie `listeners[name]` to `value` through K.)
    const list = this.listeners[name] as ((value: HookValue<K>, request: FastifyRequest) => unknown)[]
    for (let i = 0; i < list.length; i++) {
      try {
        const result = (list[i] as (value: HookValue<K>, request: FastifyRequest) => unknown)(value, request)
        if (typeof (result as Promise<void> | undefined)?.catch === 'function') {
          ;(result as Promise<void>).catch((err: unknown) => this.log.error({ err, hook: name }, 'llm hook listener failed'))
        }
      } catch (err) {
        this.log.error({ err, hook: name }, 'llm hook listener failed')
      }
    }
  }
}
