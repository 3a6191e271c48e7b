/**
 * The abort signal of one upstream attempt, as undici accepts it (an EventEmitter-like object with
 * `aborted`, `reason`, `on`/`once`/`removeListener`). An AbortController and its EventTarget cost
 * several allocations and listener bookkeeping per request; undici only ever registers one listener.
 */
export class AttemptSignal {
  aborted = false
  reason: unknown = undefined
  private listener: (() => void) | null = null

  on(_event: 'abort', listener: () => void): this {
    this.listener = listener
    return this
  }

  once(event: 'abort', listener: () => void): this {
    return this.on(event, listener)
  }

  removeListener(_event: 'abort', listener: () => void): this {
    if (this.listener === listener) this.listener = null
    return this
  }

  abort(reason: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    const listener = this.listener
    this.listener = null
    listener?.()
  }
}
