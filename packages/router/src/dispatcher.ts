import type { Socket } from 'node:net'
import { egressProxyAgent } from '@llmproxy/core'
import { Agent, buildConnector, type Dispatcher, errors } from 'undici'
import type { AttemptSignal } from './signal.js'
import { UpstreamResponse, type UpstreamResponseData } from './upstream-response.js'

type ReplyFromRequest = Dispatcher.DispatchOptions
type ReplyFromCallback = (err: Error | null, data: UpstreamResponseData) => void

/**
 * From this size on, a request body goes to undici as a {@link BodySentOnce}: undici keeps a request's body until its
 * answer ends, so every open stream held a second copy of its request (the first is the call's, for retries and
 * continuations): 100 streams with a 4 MB image each held 400 MB more. Smaller bodies stay bytes, undici's fastest
 * path (an iterable is written from an async function: ~1.3 µs more per request, against ~95 µs of parsing
 * and serialising a 64 KB body).
 */
export const UNRETAINED_BODY_BYTES = 64 * 1024

/**
 * The undici transport handed to @fastify/reply-from (`undici: dispatcher`, which it calls as
 * `dispatcher.request(opts, callback)`). reply-from passes neither an abort signal nor per-call header
 * timeouts, and it calls `request` synchronously inside `reply.from()`; so the router arms the
 * dispatcher right before `reply.from()` and disarms it right after, and the attempt's signal and
 * timeout ride along. The signal is what aborts the upstream request the moment the client goes away,
 * even before response headers (reply-from alone only notices once headers arrive). Each request is
 * dispatched with an {@link UpstreamResponse} as its handler, which is also the body reply-from hands on.
 *
 * The Agent keeps TLS verification on (reply-from's own default agent turns it off).
 */
export class UpstreamDispatcher {
  private readonly agent: Dispatcher
  private signal: AttemptSignal | null = null
  private headersTimeout = 0
  private errorsTo: { onUpstreamError(error: Error): void } | null = null

  constructor(connectTimeoutMs: number) {
    const options = {
      connect: connectorWithin(connectTimeoutMs),
      keepAliveTimeout: 30_000,
      // Idle detection between chunks is the router's (it knows first-token vs idle phases).
      bodyTimeout: 0,
    }
    // Through the egress proxy HTTPS_PROXY / HTTP_PROXY name, NO_PROXY's hosts excepted.
    this.agent = egressProxyAgent(connectTimeoutMs, options) ?? new Agent(options)
  }

  /**
   * `errorsTo`: an attempt made after the reply was hijacked (a continuation). reply-from calls its `onError` hook only
   * while the reply is not sent, so such an attempt hears of its request failing (refused, reset, aborted by its
   * deadline) from here instead.
   */
  arm(signal: AttemptSignal, headersTimeout: number, errorsTo: { onUpstreamError(error: Error): void } | null): void {
    this.signal = signal
    this.headersTimeout = headersTimeout
    this.errorsTo = errorsTo
  }

  disarm(): void {
    this.signal = null
    this.errorsTo = null
  }

  request(opts: ReplyFromRequest, callback: ReplyFromCallback): void {
    const signal = this.signal
    if (signal === null) {
      callback(new Error('UpstreamDispatcher used outside an attempt'), undefined as unknown as UpstreamResponseData)
      return
    }
    opts.headersTimeout = this.headersTimeout
    opts.bodyTimeout = 0
    const body = opts.body
    // (undici's types leave out the iterables its docs list for a dispatched body.)
    if (body instanceof Uint8Array && body.byteLength >= UNRETAINED_BODY_BYTES) (opts as { body: unknown }).body = new BodySentOnce(body)
    const errorsTo = this.errorsTo
    const response = new UpstreamResponse(
      signal,
      errorsTo === null
        ? callback
        : (err, data) => {
            if (err !== null) errorsTo.onUpstreamError(err)
            callback(err, data)
          },
    )
    this.agent.dispatch(opts, response)
  }

  close(): Promise<void> {
    return this.agent.destroy()
  }
}

/** How undici's connector is called; it returns the socket it opens (lib/core/connect.js), which its types leave out. */
type SocketConnector = (options: buildConnector.Options, callback: buildConnector.Callback) => Socket

/**
 * undici's connector on a connect timer of the router's own: undici arms `connect.timeout` on its fast timers, which
 * tick every 0.5 s and fire a connect timeout of 100 ms after about 1 s. Only a new connection has a timer: a request
 * on a kept-alive one costs none.
 */
function connectorWithin(timeoutMs: number): buildConnector.connector {
  // 0: no timer of undici's own.
  const connect = buildConnector({ timeout: 0 }) as unknown as SocketConnector
  return (options, callback) => {
    let timer: NodeJS.Timeout | undefined
    const socket = connect(options, (...args) => {
      clearTimeout(timer)
      callback(...args)
    })
    timer = setTimeout(connectTimedOut, timeoutMs, socket, timeoutMs)
  }
}

/** Destroyed with undici's own error, the socket fails its connect as undici's timer would (UND_ERR_CONNECT_TIMEOUT). */
function connectTimedOut(socket: Socket, timeoutMs: number): void {
  socket.destroy(new errors.ConnectTimeoutError(`Connect Timeout Error (timeout: ${timeoutMs}ms)`))
}

/**
 * A body undici writes once and then no longer holds: its Request keeps this iterable, which gives its bytes up as it
 * hands them over. Sent with the content-length header reply-from set (not chunked); undici writes an iterable only on a
 * connection with nothing else in flight, as it does every POST.
 */
class BodySentOnce implements Iterator<Uint8Array, undefined> {
  private bytes: Uint8Array | null

  constructor(bytes: Uint8Array) {
    this.bytes = bytes
  }

  [Symbol.iterator](): this {
    return this
  }

  next(): IteratorResult<Uint8Array, undefined> {
    const bytes = this.bytes
    if (bytes === null) return { done: true, value: undefined }
    this.bytes = null
    return { done: false, value: bytes }
  }
}
