import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
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
 * context is also told to the listeners of the registries of the contexts around it (`outer`): the app's own
 * listeners at the root hear a gateway registered in a child context, whichever registered core first, while
 * sibling contexts stay apart.
 */
export class LlmHookRegistry {
  private readonly listeners: { [K in LlmHookName]: LlmHooks[K][] } = { onUsage: [], onAttempt: [], onReject: [] }
  private readonly log: FastifyBaseLogger
  /** The registries of the contexts around this one, innermost first (set once every plugin is registered). */
  private outer: LlmHookRegistry[] = []
  private keptAtTurnEnd = false

  constructor(log: FastifyBaseLogger) {
    this.log = log
  }

  /** Called by core when the app is ready (every context and plugin registered). */
  setOuter(outer: LlmHookRegistry[]): void {
    this.outer = outer
  }

  /**
   * An onUsage listener keeps each record at the end of the event-loop turn it was emitted in, in an immediate it
   * queues then (the usage spool: one write per turn). The router then emits an answer's record before the answer's
   * end, and ends it in an immediate queued after: the client's answer is complete only once its record is kept,
   * so a crash of the process never leaves a client holding an answer whose record it lost. True when such a
   * listener is here or around.
   */
  get recordsKeptAtTurnEnd(): boolean {
    return this.keptAtTurnEnd || this.outer.some((registry) => registry.keptAtTurnEnd)
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
    if (this.listeners[name].length > 0) return true
    for (const registry of this.outer) if (registry.listeners[name].length > 0) return true
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

  /** Tells this registry's listeners, then those of the registries around. */
  private emit<K extends LlmHookName>(name: K, value: HookValue<K>, request: FastifyRequest): void {
    this.run(name, value, request)
    for (const registry of this.outer) registry.run(name, value, request)
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
