import { type Dispatcher, errors as undiciErrors, util } from 'undici'
import type { AttemptSignal } from './signal.js'

/** What the router reads an upstream answer's body through: this class, or a decoder's Readable after it. */
export interface UpstreamBody {
  on(event: 'data', listener: (chunk: Buffer) => void): this
  on(event: 'error', listener: (error: Error) => void): this
  once(event: 'end', listener: () => void): this
  removeAllListeners(event: 'data'): this
  pause(): this
  resume(): this
  isPaused(): boolean
  destroy(error?: Error): this
}

/** What reply-from's undici transport hands on: the status, the headers and the body. */
export interface UpstreamResponseData {
  statusCode: number
  headers: Record<string, string | string[] | undefined>
  body: UpstreamResponse
}

type Callback = (err: Error | null, data: UpstreamResponseData) => void

type Listener<T> = ((value: T) => void) | null

/**
 * One upstream request, handed to undici's dispatcher as its handler, and then its answer's body. It replaces undici's
 * `request()`, which wraps every request in an AsyncResource, an abort listener and a Readable stream (~0.8 KB per
 * open stream, and their work on every chunk): here the connection's parser calls in and each chunk goes to the
 * listener as it is parsed, with what the router and reply-from use of a Readable (`data`, `end`, `error`; pause,
 * resume, destroy). Pausing returns false to the parser, which stops reading the upstream socket until `resume`:
 * backpressure reaches the upstream as it did through the stream. `end` and `error` come on a later tick, as a
 * Readable emits them, after undici's own bookkeeping.
 */
export class UpstreamResponse implements UpstreamBody, Dispatcher.DispatchHandler {
  /** The listeners: one per event (a second one added is chained after the first). */
  private dataListener: Listener<Buffer> = null
  private endListener: Listener<void> = null
  private errorListener: Listener<Error> = null
  private callback: Callback | null
  private readonly signal: AttemptSignal
  /** undici's abort of this request (null until connected). */
  private abortRequest: ((reason: Error) => void) | null = null
  /** undici's resume of a parser this body paused (null until headers). */
  private resumeParser: (() => void) | null = null
  private paused = false
  private parserPaused = false
  /** Chunks that came while paused or before a reader (at most the one the parser was paused on). */
  private held: Buffer[] | null = null
  /** The parser reached the answer's end: `end` follows once what is held is read, and not while paused. */
  private ended = false
  private destroyed = false
  private hasBody = false

  constructor(signal: AttemptSignal, callback: Callback) {
    this.signal = signal
    this.callback = callback
    signal.watch(this)
  }

  // ── undici's handler ───────────────────────────────────────────────────────────────────────

  onConnect(abort: (reason: Error) => void): void {
    if (this.signal.aborted) abort(this.signal.reason as Error)
    else this.abortRequest = abort
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    // Informational answers (100 Continue, 103 Early Hints) are not the answer.
    if (statusCode < 200) return true
    const callback = this.callback
    if (callback === null) return false
    this.callback = null
    this.hasBody = true
    this.resumeParser = resume
    const headers = util.parseHeaders(rawHeaders) as UpstreamResponseData['headers']
    try {
      callback(null, { statusCode, headers, body: this })
    } catch (err) {
      // A throwing callback is a bug: the request is dropped and the error surfaces, as undici's request() does.
      this.destroy(err as Error)
      queueMicrotask(() => {
        throw err
      })
      return false
    }
    return this.proceed()
  }

  onData(chunk: Buffer): boolean {
    if (this.destroyed) return false
    const listener = this.dataListener
    if (listener === null || this.paused) {
      // Held (paused, or no reader yet, as a Readable holds what nobody reads) and the parser stops after it.
      if (this.held === null) this.held = [chunk]
      else this.held.push(chunk)
      this.parserPaused = true
      return false
    }
    listener(chunk)
    return this.proceed()
  }

  onComplete(): void {
    if (this.destroyed) return
    this.ended = true
    if (!this.paused && this.held === null) process.nextTick(emitEnd, this)
  }

  onError(err: Error): void {
    const callback = this.callback
    if (callback !== null) {
      // No answer yet: the request failed (refused, reset, timed out, aborted). As undici's request() reports it.
      this.callback = null
      this.signal.watch(null)
      // Our own abort of an attempt given up (its deadline, the client left, a shutdown): nobody listens for the
      // outcome, and reply-from would log the cancel as an upstream failure (`response errored`, at warn, with a stack).
      if (this.signal.aborted) return
      queueMicrotask(() => callback(err, undefined as unknown as UpstreamResponseData))
      return
    }
    this.fail(err)
  }

  // ── the body ───────────────────────────────────────────────────────────────────────────────

  on(event: 'data', listener: (chunk: Buffer) => void): this
  on(event: 'error', listener: (error: Error) => void): this
  on(event: 'data' | 'error', listener: (value: never) => void): this {
    if (event === 'error') this.errorListener = chained(this.errorListener, listener as (error: Error) => void)
    else {
      const first = this.dataListener === null
      this.dataListener = chained(this.dataListener, listener as (chunk: Buffer) => void)
      // What came before the reader goes to it on the next tick (its caller is still attaching listeners).
      if (first && this.parserPaused) process.nextTick(flow, this)
    }
    return this
  }

  once(_event: 'end', listener: () => void): this {
    this.endListener = chained(this.endListener, listener)
    return this
  }

  removeAllListeners(_event: 'data'): this {
    this.dataListener = null
    return this
  }

  pause(): this {
    this.paused = true
    return this
  }

  resume(): this {
    if (this.paused) {
      this.paused = false
      this.flow()
    }
    return this
  }

  /** Delivers what was held, then the end or the rest from the parser; stops when paused again. */
  flow(): void {
    const listener = this.dataListener
    if (this.destroyed || this.paused || listener === null) return
    const held = this.held
    if (held !== null) {
      this.held = null
      for (let i = 0; i < held.length; i++) {
        listener(held[i] as Buffer)
        if (this.destroyed) return
        if (this.paused) {
          // Paused again by the reader: the rest waits for the next resume.
          if (i + 1 < held.length) this.held = held.slice(i + 1)
          return
        }
      }
    }
    if (this.ended) process.nextTick(emitEnd, this)
    else if (this.parserPaused) {
      this.parserPaused = false
      this.resumeParser?.()
    }
  }

  isPaused(): boolean {
    return this.paused
  }

  /** Stops the answer: the upstream request is aborted (unless it was complete); `error` is emitted when given. */
  destroy(error?: Error): this {
    if (this.destroyed) return this
    this.close()
    if (!this.ended) this.abortRequest?.(error ?? new undiciErrors.RequestAbortedError())
    if (error !== undefined) process.nextTick(emitError, this, error)
    return this
  }

  /** The attempt's signal fired (it was given up, the client left). */
  abortWith(reason: Error): void {
    if (this.hasBody) {
      this.on('error', noop)
      this.destroy(reason)
    } else this.abortRequest?.(reason)
  }

  /** The connection failed mid-answer. */
  private fail(err: Error): void {
    if (this.destroyed) return
    this.close()
    process.nextTick(emitError, this, err)
  }

  /** It is over (ended, failed or destroyed): nothing more is delivered, and the signal no longer reaches it. */
  private close(): void {
    this.destroyed = true
    this.held = null
    this.signal.watch(null)
  }

  /** Whether the parser may go on: false pauses the upstream socket until `resume`. */
  private proceed(): boolean {
    if (!this.paused) return true
    this.parserPaused = true
    return false
  }

  /** @internal */
  emitEnd(): void {
    if (this.destroyed || this.paused || this.held !== null) return
    this.close()
    this.endListener?.()
  }

  /** @internal (an error with no listener is dropped: an attempt listens from the answer's headers on) */
  emitError(error: Error): void {
    this.errorListener?.(error)
  }
}

function chained<T>(first: Listener<T>, next: (value: T) => void): (value: T) => void {
  return first === null
    ? next
    : (value: T) => {
        first(value)
        next(value)
      }
}

// Tick callbacks shared by every response (no per-answer closures).
function flow(response: UpstreamResponse): void {
  response.flow()
}

function emitEnd(response: UpstreamResponse): void {
  response.emitEnd()
}

function emitError(response: UpstreamResponse, error: Error): void {
  response.emitError(error)
}

function noop(): void {}
