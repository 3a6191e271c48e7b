import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import '@fastify/reply-from'
import { errors, type LlmProxyError } from '@llmproxy/core'
import type { ApiFamily, Endpoint, UsageExtractor } from '@llmproxy/protocols'
import type { AttemptResult, Lease } from '@llmproxy/upstreams'
import type { ProxyCall } from './call.js'
import { convertedAnswer, convertedError } from './convert.js'
import { decodedBody } from './encoding.js'
import { upstreamRequestHeaders } from './headers.js'
import type { UsageMeter } from './meter.js'
import type { FailureKind } from './planner.js'
import { keepUpstreamHeaders, onError, onResponse, rewriteRequestHeaders, type UpstreamCallbacks } from './reply-hooks.js'
import { StreamScanner } from './scanner.js'
import { AttemptSignal } from './signal.js'
import type { ResponseTransform } from './tap.js'

const SSE = 'text/event-stream'
const JSON_TYPE = 'application/json'
const MAX_ERROR_BODY_BYTES = 64 * 1024
/** A non-streamed answer converted to another API is held whole; one larger than this is refused. */
const MAX_ANSWER_BYTES = 32 * 1024 * 1024
/** How long an upstream may take to end its response after its stream's terminator before it is released. */
const TERMINATOR_GRACE_MS = 1000

/**
 * One try of one upstream: the reply-from call with its abort signal, the first-byte and idle deadlines, the
 * classification of a failure, the lease on the upstream, and the relay of its answer into the client stream.
 * Before the commit point a failure goes back to the call (which may start another attempt); after it, the call
 * decides how the client's stream ends.
 */
export class UpstreamAttempt implements UpstreamCallbacks {
  readonly lease: Lease
  readonly startedAt: number
  /** The upstream answered with an SSE stream (else a JSON body). */
  sse = false
  /** The HTTP status the upstream answered with (0 before its headers). */
  status = 0
  /** Reads the stream beside the relay (null for JSON bodies). */
  scanner: StreamScanner | null = null
  /** The upstream's route: its path was called, its terminators end the stream. */
  readonly endpoint: Endpoint
  /** The transform slot: null passes the upstream's bytes untouched. */
  readonly transform: ResponseTransform | null
  /** The upstream's API when it is not the client's (its answers are converted); null for same-format traffic. */
  private readonly converted: ApiFamily | null
  private readonly call: ProxyCall
  private readonly signal = new AttemptSignal()
  private timer: NodeJS.Timeout | null = null
  private body: Readable | null = null
  private headers: IncomingHttpHeaders | null = null
  /** The client's response headers of a stream, prepared while waiting for its first chunk. */
  private sseHeaders: OutgoingHttpHeaders | null = null
  private lastChunkAt = 0
  /** Its relay is over (the body ended, failed or was abandoned). */
  private done = false
  private released = false

  constructor(call: ProxyCall, lease: Lease, endpoint: Endpoint, transform: ResponseTransform | null, converted: ApiFamily | null) {
    this.call = call
    this.lease = lease
    this.endpoint = endpoint
    this.transform = transform
    this.converted = converted
    this.startedAt = performance.now()
  }

  /** Sends the request; `firstByteMs` bounds the wait for the answer's first byte. */
  start(url: string, payload: string, queryString: (search: string | undefined, url: string) => string, firstByteMs: number): void {
    const call = this.call
    const dispatcher = call.settings.dispatcher
    dispatcher.arm(this.signal, firstByteMs)
    try {
      call.reply.from(url, {
        body: payload,
        queryString,
        contentType: 'application/json',
        rewriteRequestHeaders,
        rewriteHeaders: keepUpstreamHeaders,
        onResponse,
        onError,
      })
    } finally {
      dispatcher.disarm()
    }
    // Armed once the request is on its way (nothing can answer it before this tick ends).
    if (!this.done && !call.client.committed && call.attempt === this) this.timer = setTimeout(firstByteTimeout, firstByteMs, this)
  }

  /** Stops this attempt for good: its timer, its upstream request and body; the lease is the caller's to release. */
  abort(reason: LlmProxyError): void {
    this.done = true
    this.clearTimer()
    this.signal.abort(reason)
    const body = this.body
    if (body !== null) {
      body.removeAllListeners('data')
      body.on('error', noop)
      body.destroy()
    }
  }

  /** How the attempt went, for passive health (a client leaving says nothing about the upstream: `aborted`). Once. */
  release(result: AttemptResult): boolean {
    if (this.released) return false
    this.released = true
    this.lease.release(result)
    return true
  }

  // ── reply-from callbacks ───────────────────────────────────────────────────────────────────

  onUpstreamError(error: Error): void {
    const call = this.call
    if (this.done || call.client.committed || call.ctx.clientAborted) return
    const cause = (error as { cause?: { code?: string; name?: string } }).cause
    const code = cause?.code ?? (error as { code?: string }).code ?? ''
    if (code === 'UND_ERR_ABORTED' || cause?.name === 'AbortError' || code === 'UND_ERR_HEADERS_TIMEOUT' || this.signal.aborted) {
      // Our own first-byte timer (or undici's header timeout) gave up on this attempt.
      this.fail('timeout', errors.upstreamTimeout('The upstream did not answer in time.', { cause: error }))
    } else if (code === 'UND_ERR_CONNECT_TIMEOUT') {
      this.fail('timeout', errors.upstreamTimeout('Connecting to the upstream timed out.', { cause: error }))
    } else if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EHOSTUNREACH') {
      this.fail('connect', errors.upstreamUnavailable('The upstream refused the connection.', { cause: error }))
    } else {
      this.fail('connect', errors.upstreamFailed('The upstream connection failed before a response.', { cause: error }))
    }
  }

  onUpstreamResponse(status: number, body: Readable): void {
    if (this.done) {
      body.destroy()
      return
    }
    const call = this.call
    call.ctx.upstreamHeadersAt = performance.now()
    this.status = status
    body = decodedBody(body, this.headers)
    this.body = body
    body.on('error', (err: Error) => this.onBodyError(err))
    if (status >= 200 && status < 300) {
      this.relay(body)
      return
    }
    const planner = call.planner
    if (planner.retryable('status', status) && planner.canRetry()) {
      const retryAfter = retryAfterMs(this.headers?.['retry-after'])
      const error =
        status === 429
          ? errors.rateLimited('The upstream is rate limiting requests.', 'llmproxy_upstream_rate_limited', {
              'retry-after': String(Math.ceil((retryAfter ?? 1000) / 1000)),
            })
          : errors.upstreamFailed(`The upstream answered ${status}.`)
      this.fail('status', error, status, retryAfter)
    } else if ((status === 400 && planner.hasFallbackLeft()) || this.converted !== null) this.readErrorAnswer(body)
    else this.relay(body)
  }

  /**
   * An error answer read whole (it is small): a 400 `context_length_exceeded` may go to a fallback model (with a
   * larger context); other errors go to the client, in its own API's shape when the upstream speaks another.
   */
  private readErrorAnswer(body: Readable): void {
    readWhole(body, MAX_ERROR_BODY_BYTES, (text) => {
      if (this.done) return
      if (this.status === 400 && this.call.planner.hasFallbackLeft() && text.includes('context_length_exceeded')) {
        this.fail('status', errors.invalidRequest('The prompt is too long for this model.'), 400)
        return
      }
      // At most MAX_ERROR_BODY_BYTES were kept: the upstream's content-length may not be this body's.
      const converted = this.converted
      this.answerWhole(converted === null ? text : convertedError(converted, this.call.endpoint.family, this.status, text))
    })
  }

  /** Commits and sends a whole answer the gateway holds (an error read whole, a converted JSON answer). */
  private answerWhole(body: Buffer | string): void {
    this.clearTimer()
    this.done = true
    const client = this.call.client
    const headers = client.headers(this.headers, true)
    if (this.converted !== null) headers['content-type'] = JSON_TYPE
    client.commit(this.status, headers)
    this.call.onCommitted(this)
    client.end(body)
  }

  /** Gives up on this attempt before the commit point; the call decides what comes next. */
  private fail(kind: FailureKind, error: LlmProxyError, status?: number, retryAfter?: number): void {
    this.abort(error)
    this.call.onAttemptFailed(this, kind, error, status, retryAfter)
  }

  onFirstByteTimeout(): void {
    this.timer = null
    if (this.done) return
    if (this.call.client.committed) {
      // A JSON body still arriving when the response time is up: cut it (it cannot look complete).
      this.body?.destroy(errors.upstreamTimeout('The upstream did not finish its answer in time.'))
      return
    }
    const error = errors.upstreamTimeout('The upstream did not answer in time.')
    // Headers came, the first token did not: a stall before the commit point can still move on.
    if (this.body !== null) this.fail('stall', errors.upstreamTimeout('The upstream stalled before the first token.'))
    // Without headers, the abort surfaces through reply-from's onError as a timeout.
    else this.signal.abort(error)
  }

  // ── the answer (the commit point is a stream's first body chunk, a JSON answer's headers) ──────

  private relay(body: Readable): void {
    const call = this.call
    const type = this.headers?.['content-type']
    this.sse = typeof type === 'string' && type.startsWith(SSE)
    const reader = call.meter.startAnswer(call.ctx.protocol)
    if (this.converted !== null && this.sse !== call.ctx.stream) {
      // Answered in another shape than asked (a JSON body to a stream request): it cannot be converted.
      this.fail('error', errors.upstreamFailed('The upstream did not answer in the expected shape.'))
      return
    }
    if (this.sse) {
      // Everything the commit needs is prepared now, while the upstream generates the first token.
      this.scanner = new StreamScanner(this.endpoint, reader)
      this.sseHeaders = call.client.streamHeaders(this.headers)
      if (this.converted !== null) this.sseHeaders['content-type'] = call.clientStreamType
      body.on('data', (chunk: Buffer) => this.onSseChunk(chunk))
      body.once('end', () => this.onSseEnd())
      return
    }
    // A JSON answer is ready when its headers come (generation happened before them): it is committed now and
    // relayed as it arrives; the first-byte timer keeps bounding it whole.
    call.ctx.firstTokenAt = performance.now()
    const converted = this.converted
    if (converted !== null) {
      // Converted whole (a JSON document cannot be converted piecewise); the commit comes with it.
      readWhole(
        body,
        MAX_ANSWER_BYTES,
        (json, complete) => {
          if (this.done) return
          const answer = complete ? convertedAnswer(converted, call.endpoint.family, json, call.encoderOptions) : null
          if (answer === null) this.fail('error', errors.upstreamFailed('The upstream answer could not be read as its API’s answer.'))
          else this.answerWhole(answer)
        },
        reader,
        call.meter,
      )
      return
    }
    call.client.commit(this.status, call.client.headers(this.headers, false))
    call.onCommitted(this)
    body.on('data', (chunk: Buffer) => this.onJsonChunk(chunk))
    body.once('end', () => this.onJsonEnd())
  }

  private onSseChunk(upstreamChunk: Buffer): void {
    const chunk = (this.scanner as StreamScanner).normalize(upstreamChunk)
    if (this.call.client.committed) {
      // A timestamp per chunk, not a timer update: the idle timer checks it when it fires.
      this.lastChunkAt = performance.now()
      this.relayChunk(chunk)
      return
    }
    // The first token: it goes out before any bookkeeping (that is the time to first token).
    const now = performance.now()
    const call = this.call
    call.client.commit(this.status, this.sseHeaders as OutgoingHttpHeaders)
    this.relayChunk(chunk)
    call.ctx.firstTokenAt = now
    this.lastChunkAt = now
    call.onCommitted(this)
    if (this.done) return
    this.clearTimer()
    this.timer = setTimeout(idleTimeout, call.settings.timeouts.idleMs, this)
  }

  /** Passes one chunk to the client, with the scanner and the usage tap beside it. */
  private relayChunk(chunk: Buffer): void {
    const call = this.call
    const scanner = this.scanner as StreamScanner
    if (!scanner.scan(chunk)) {
      // Malformed upstream data after the commit point: stop here.
      this.endStream(errors.upstreamFailed('The upstream sent malformed data.'))
      return
    }
    // The chunk goes out first; the usage tap reads it after (the filter finds the usage-only event by its shape).
    const transform = this.transform
    const out = transform === null ? chunk : transform.push(chunk, !scanner.tapSkips)
    if (out !== null) call.client.write(out, this.body as Readable)
    if (transform?.failure != null) {
      // The upstream reported a failure inside its stream (an error event, a malformed function call).
      this.endStream(transform.failure)
      return
    }
    const meter = call.meter
    if (!scanner.tapSkips) meter.reader?.write(chunk)
    meter.responseBytes += chunk.length
    scanner.checkEnd(chunk)
    if (scanner.sawTerminator && scanner.atEventEnd && this.endpoint.endsAtTerminator) this.endAtTerminator()
  }

  /**
   * The terminator's event is complete: the client's response ends now. The upstream gets a moment to end its
   * own (its connection stays reusable); one that keeps it open is released after TERMINATOR_GRACE_MS.
   */
  private endAtTerminator(): void {
    this.done = true
    this.clearTimer()
    const body = this.body as Readable
    body.removeAllListeners('data')
    this.call.onStreamEnd(this, null)
    this.timer = setTimeout(releaseUpstream, TERMINATOR_GRACE_MS, this)
  }

  /** The upstream kept its response open after the terminator: drop it. */
  releaseUpstream(): void {
    this.timer = null
    this.body?.on('error', noop)
    this.body?.destroy()
  }

  private onJsonChunk(chunk: Buffer): void {
    const meter = this.call.meter
    meter.reader?.write(chunk)
    meter.responseBytes += chunk.length
    this.call.client.write(chunk, this.body as Readable)
  }

  private onJsonEnd(): void {
    this.done = true
    this.clearTimer()
    this.call.client.end()
  }

  private onSseEnd(): void {
    if (this.done) {
      // After the terminator: the upstream ended its response on its own.
      this.clearTimer()
      return
    }
    const call = this.call
    if (!call.client.committed) {
      // An empty stream: it commits at its end.
      call.client.commit(this.status, this.sseHeaders as OutgoingHttpHeaders)
      call.onCommitted(this)
    }
    const scanner = this.scanner as StreamScanner
    const incomplete = !scanner.sawTerminator && this.endpoint.terminators.length > 0 && this.status === 200
    this.endStream(incomplete ? errors.upstreamFailed('The upstream ended the stream before it was complete.') : null)
  }

  /** The stream is over: complete (error null), or failed after the commit point. */
  private endStream(error: LlmProxyError | null): void {
    if (this.done) return
    this.done = true
    this.clearTimer()
    const body = this.body as Readable
    if (error !== null) {
      body.removeAllListeners('data')
      body.on('error', noop)
      body.destroy()
    }
    this.call.onStreamEnd(this, error)
  }

  onIdleTimeout(): void {
    const idleMs = this.call.settings.timeouts.idleMs
    const quietFor = performance.now() - this.lastChunkAt
    if (quietFor < idleMs) {
      this.timer = setTimeout(idleTimeout, idleMs - quietFor, this)
      return
    }
    this.timer = null
    this.body?.destroy(errors.upstreamTimeout(`The upstream sent nothing for ${idleMs} ms.`))
  }

  private onBodyError(err: Error): void {
    if (this.done) return
    const call = this.call
    if (!call.client.committed) {
      this.fail('error', errors.upstreamFailed('The upstream connection failed before the first token.', { cause: err }))
      return
    }
    const error =
      'statusCode' in err && 'type' in err
        ? (err as LlmProxyError)
        : errors.upstreamFailed('The upstream connection failed mid-stream.', { cause: err })
    if (this.sse) {
      this.endStream(error)
      return
    }
    this.done = true
    this.clearTimer()
    call.onJsonFailed(error)
  }

  // ── request headers ────────────────────────────────────────────────────────────────────────

  rewriteRequestHeaders(headers: IncomingHttpHeaders): IncomingHttpHeaders {
    return upstreamRequestHeaders(headers, this.lease.upstream, this.call.ctx.requestId)
  }

  keepUpstreamHeaders(headers: IncomingHttpHeaders): void {
    this.headers = headers
  }

  private clearTimer(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
  }
}

// Timer callbacks shared by every attempt (no per-attempt closures): the attempt travels as the timer argument.
function firstByteTimeout(attempt: UpstreamAttempt): void {
  attempt.onFirstByteTimeout()
}

function idleTimeout(attempt: UpstreamAttempt): void {
  attempt.onIdleTimeout()
}

function releaseUpstream(attempt: UpstreamAttempt): void {
  attempt.releaseUpstream()
}

function noop(): void {}

/**
 * Reads a body whole, keeping at most `limit` bytes (`complete` false when it held more), feeding the usage tap
 * when given. For small error answers and converted JSON answers only: streams are never held.
 */
function readWhole(
  body: Readable,
  limit: number,
  onEnd: (bytes: Buffer, complete: boolean) => void,
  reader?: UsageExtractor,
  meter?: UsageMeter,
): void {
  const parts: Buffer[] = []
  let size = 0
  body.on('data', (chunk: Buffer) => {
    reader?.write(chunk)
    if (meter !== undefined) meter.responseBytes += chunk.length
    size += chunk.length
    if (size <= limit) parts.push(chunk)
  })
  body.once('end', () => onEnd(Buffer.concat(parts), size <= limit))
}

function retryAfterMs(header: string | string[] | undefined): number | undefined {
  if (typeof header !== 'string') return undefined
  const seconds = Number(header)
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000)
  const date = Date.parse(header)
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now())
}
