import type { IncomingHttpHeaders } from 'node:http'
import '@fastify/reply-from'
import { errors, type LlmProxyError } from '@llmproxy/core'
import { type ApiFamily, type Endpoint, familyOf, upstreamErrorMessage } from '@llmproxy/protocols'
import type { AttemptResult, Lease } from '@llmproxy/upstreams'
import { convertedError } from './convert.js'
import { decodedBody } from './encoding.js'
import { isPromptTooLong, mayBePromptTooLong, notServedBy, retryAfterMs, statusError } from './error-answers.js'
import { upstreamRequestHeaders } from './headers.js'
import type { AttemptView, CallHost } from './host.js'
import { JsonRelay, readWhole } from './json-relay.js'
import type { FailureKind } from './planner.js'
import { keepUpstreamHeaders, onError, onResponse, rewriteRequestHeaders, type UpstreamCallbacks } from './reply-hooks.js'
import type { UpstreamErrorEvent } from './scanner.js'
import { AttemptSignal } from './signal.js'
import { StreamRelay } from './stream-relay.js'
import type { ResponseTransform } from './tap.js'
import type { UpstreamBody } from './upstream-response.js'

const SSE = 'text/event-stream'
const JSON_TYPE = 'application/json'
const MAX_ERROR_BODY_BYTES = 64 * 1024
/** A web page's content type (media types are case-insensitive). */
const WEB_PAGE = /^\s*text\/html/i
const UTF8 = new TextEncoder()
/**
 * The gateway's own timeouts, retried as far as `retry` allows: the OpenAI and Anthropic SDKs, which retry a 5xx
 * unless this header says no, would wait as long again, each time, and (past a connect timeout) send the prompt again:
 * another prefill or reasoning run. (An in-band error after the commit point has no headers.)
 */
const NOT_RETRIED = { 'x-should-retry': 'false' }

/**
 * One try of one upstream: the reply-from call with its abort signal, its deadline, the classification of a
 * failure, the lease on the upstream; its answer goes into the client stream through a relay (StreamRelay,
 * JsonRelay). Before the commit point a failure goes back to the call (which may start another attempt); after it,
 * the call decides how the client's stream ends.
 */
export class UpstreamAttempt implements UpstreamCallbacks, AttemptView {
  readonly lease: Lease
  readonly startedAt: number
  /** The HTTP status the upstream answered with (0 before its headers). */
  status = 0
  /** The upstream's response headers (null before them). */
  headers: IncomingHttpHeaders | null = null
  /** The upstream's Retry-After, in ms (undefined: none, or not one the gateway reads). */
  get retryAfterMs(): number | undefined {
    return retryAfterMs(this.headers?.['retry-after'])
  }
  /** Its answer has reached the client (its first byte): from now on a failure cannot move it elsewhere. */
  delivering = false
  /** Its SSE answer's relay (null before it, and for JSON answers). */
  stream: StreamRelay | null = null
  /** It is over (its answer ended, failed or was abandoned). */
  done = false
  /** The upstream's route: its path was called, its terminators end the stream. */
  readonly endpoint: Endpoint
  /** The transform slot: null passes the upstream's bytes untouched. */
  readonly transform: ResponseTransform | null
  /** The upstream's API when it is not the client's (its answers are converted); null for same-format traffic. */
  readonly converted: ApiFamily | null
  /** A continuation sent as a prefill: a 4xx answer is the upstream refusing it (then the request is replayed). */
  readonly prefill: boolean
  private readonly call: CallHost
  private readonly signal = new AttemptSignal()
  /**
   * The first-byte deadline (a stream's fires sooner while nothing reached the client, to hold it open: holdOpen);
   * once a JSON body flows, its idle bound (JsonRelay.onIdle).
   */
  private timer: NodeJS.Timeout | null = null
  /** When the wait for the first byte ends (performance.now()). */
  private firstByteBy = 0
  /** The client's heartbeat came due before the upstream's headers: its stream is held open when they come. */
  private heartbeatDue = false
  /** Its JSON answer's relay (null before it, for SSE answers and for error answers read whole). */
  json: JsonRelay | null = null
  private body: UpstreamBody | null = null
  private released = false

  constructor(
    call: CallHost,
    lease: Lease,
    endpoint: Endpoint,
    transform: ResponseTransform | null,
    converted: ApiFamily | null,
    prefill: boolean,
  ) {
    this.call = call
    this.lease = lease
    this.endpoint = endpoint
    this.transform = transform
    this.converted = converted
    this.prefill = prefill
    this.startedAt = performance.now()
  }

  /** Sends the request; `firstByteMs` bounds the wait for the answer's first byte. */
  start(url: string, payload: string, queryString: (search: string | undefined, url: string) => string, firstByteMs: number): void {
    const call = this.call
    const dispatcher = call.settings.dispatcher
    dispatcher.arm(this.signal, firstByteMs, call.client.committed ? this : null)
    try {
      call.reply.from(url, {
        // Bytes of their own: undici keeps the body until the answer ends (unless it is large: UpstreamDispatcher),
        // and the copy it makes of a string comes from Buffer's shared pool, where a small body holds a whole 8 KB
        // slab for as long as its stream lasts.
        body: UTF8.encode(payload),
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
    if (this.done || call.attempt !== this) return
    this.firstByteBy = this.startedAt + firstByteMs
    // (A Gemini JSON array, no SSE, is not held open: another upstream's answer could not join it, and its API's SSE
    // heartbeat, WireFormat.streamKeepAlive, is no array filler.)
    const holds = call.ctx.stream && !call.client.committed && call.clientStreamType === SSE
    this.armDeadline(holds ? this.heartbeatIn(firstByteMs) : firstByteMs)
  }

  /**
   * When a stream's client, which has nothing yet, is looked at (holdOpen): when its heartbeat is due, counted from its
   * request's arrival, in whole ms (Node keeps a timer list per duration); else at the deadline.
   */
  private heartbeatIn(firstByteMs: number): number {
    const beatMs = this.call.settings.timeouts.heartbeatMs
    const beatIn = Math.floor(this.call.ctx.startedAt + beatMs - this.startedAt)
    return beatMs > 0 && beatIn < firstByteMs ? Math.max(beatIn, 0) : firstByteMs
  }

  /**
   * (Re)arms its one timer: the first-byte deadline, then a JSON body's idle bound, which its relay asks for (one
   * timer, which settle and abort clear whoever armed it).
   */
  armDeadline(ms: number): void {
    this.clearDeadline()
    this.timer = setTimeout(firstByteTimeout, ms, this)
  }

  /** Its answer is over, one way or another: its deadline goes. */
  settle(): void {
    this.done = true
    this.clearDeadline()
  }

  clearDeadline(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
  }

  /** Stops this attempt for good: its timer, its upstream request and body; the lease is the caller's to release. */
  abort(reason: LlmProxyError): void {
    this.done = true
    this.clearDeadline()
    this.stream?.stop()
    // Abandoned: the failure of its request is nobody's news.
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
    if (this.done || this.delivering || call.ctx.clientAborted) return
    // reply-from wraps undici's error in one of its own (FST_REPLY_FROM_*, a 500 or 503 of its choosing); the cause
    // kept, and logged, is undici's or the system's: ECONNREFUSED, ENOTFOUND, a TLS code.
    const wrapped = (error as { cause?: unknown }).cause
    const cause = (wrapped instanceof Error ? wrapped : error) as Error & { code?: string }
    const code = cause.code ?? ''
    if (code === 'UND_ERR_ABORTED' || cause.name === 'AbortError' || code === 'UND_ERR_HEADERS_TIMEOUT') {
      // An abort, or undici's header timeout (our own first-byte timer fails the attempt itself: onFirstByteTimeout).
      this.fail('timeout', timedOut('The upstream did not answer in time.', cause))
    } else if (code === 'UND_ERR_CONNECT_TIMEOUT') {
      this.fail('timeout', timedOut('Connecting to the upstream timed out.', cause))
    } else if (code === 'UND_ERR_NOT_SUPPORTED' || code === 'UND_ERR_INVALID_ARG') {
      // undici would not build the request (a header it cannot send): the request's fault, not the upstream's.
      const refused = errors.invalidRequest(`The request cannot be forwarded: ${cause.message}.`, { cause })
      this.abort(refused)
      this.call.onAttemptRefused(this, refused)
    } else if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
      this.fail('connect', errors.upstreamUnavailable("The upstream's host name could not be resolved.", { cause }))
    } else if (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH') {
      this.fail('connect', errors.upstreamUnavailable('The upstream refused the connection.', { cause }))
    } else {
      this.fail('connect', errors.upstreamFailed('The upstream connection failed before a response.', { cause }))
    }
  }

  onUpstreamResponse(status: number, body: UpstreamBody): void {
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
      // A web page (a login portal, a proxy's block page, a URL pointing at a site) is this upstream misconfigured,
      // as a redirect is. Relayed, the client would get a 200 its SDK cannot read.
      if (WEB_PAGE.test(this.headers?.['content-type'] ?? '')) {
        this.fail('error', errors.upstreamFailed(`The upstream answered ${status} with a web page (text/html), not an answer.`), status)
      } else this.relay(body)
      return
    }
    // A redirect or a refused credential is this upstream misconfigured, not the request: another upstream may
    // answer, and passive health counts it ('error', retried as `connect` is).
    if (status < 400) {
      // A redirect is no answer to an LLM request (and its Location may name a host the client must not see).
      this.fail('error', errors.upstreamFailed(`The upstream answered ${status} (a redirect), not an answer.`), status)
      return
    }
    if (this.movedOnFrom(status, null)) return
    // (A stream held open for its first token gets the error in band: read whole too.)
    if ((mayBePromptTooLong(status) && call.planner.hasFallbackLeft()) || this.converted !== null || call.client.committed)
      this.readErrorAnswer(body)
    else this.relay(body)
  }

  /**
   * An error status the request moves on from: a prefill refused (replayed), the gateway's credential refused, a
   * model the upstream does not serve or a status `retry.on` lists while attempts remain; false when the error is
   * the client's answer. `reported`: the error an SSE answer opened with, which says more than its status (null:
   * the status of the response's head).
   */
  private movedOnFrom(status: number, reported: LlmProxyError | null): boolean {
    const call = this.call
    const planner = call.planner
    if (this.prefill && status < 500 && status !== 429) {
      // The upstream refuses a prefill: the call replays the request instead (this is no failure of the upstream's).
      this.fail('prefill', errors.upstreamFailed(`The upstream refused the continuation prefill (${status}).`), status)
    } else if (status === 401 || status === 403) {
      // The upstream refuses the gateway's own credential: passed on, it would tell the client its key is wrong.
      this.fail('error', errors.upstreamFailed(`The upstream refused the gateway's credential for it (${status}).`), status)
    } else if (notServedBy(this.endpoint, status) && ((planner.retryable('error') && planner.canMoveOn()) || call.continuing)) {
      // Another upstream or fallback may serve it (else a fast 404 would draw the traffic of load-aware strategies).
      // No failure of the upstream's: the client's route may cause it, as it may any 4xx (the call keeps it neutral
      // for passive health and tries the same pool no more). With nowhere left, its 404 is the client's answer.
      this.fail('status', errors.upstreamFailed(`The upstream does not serve the model on this route (${status}).`), status)
    } else if ((planner.retryable('status', status) && planner.canRetry()) || call.continuing) {
      // (A continuation's error answer can never reach the client, whose answer is under way: it only fails.)
      const retryAfter = this.retryAfterMs
      this.fail('status', reported ?? statusError(status, retryAfter), status, retryAfter)
    } else return false
    return true
  }

  /**
   * An error answer read whole (it is small): a too-long prompt may go to a fallback model (with a larger context);
   * other errors go to the client, in its own API's shape when the upstream speaks another.
   */
  private readErrorAnswer(body: UpstreamBody): void {
    readWhole(body, MAX_ERROR_BODY_BYTES, (text) => {
      if (this.done || this.tooLongForModel(text)) return
      // At most MAX_ERROR_BODY_BYTES were kept: the upstream's content-length may not be this body's.
      this.answerError(text, this.converted !== null)
    })
  }

  /** The error says the prompt is too long for this model, and a fallback model is left: it goes there (true). */
  private tooLongForModel(text: Buffer | string): boolean {
    if (!mayBePromptTooLong(this.status) || !this.call.planner.hasFallbackLeft()) return false
    if (!isPromptTooLong(typeof text === 'string' ? text : text.toString('utf8'))) return false
    // (As a 400 whatever the upstream's status: the call sends a 400 `status` failure to the next fallback.)
    this.fail('status', errors.invalidRequest('The prompt is too long for this model.'), 400)
    return true
  }

  /**
   * An upstream error body to the client, as is or (the upstream speaks another API) in the client's shape; to a
   * stream held open for its first token (StreamRelay.holdOpen), in band, with the upstream's message and status.
   */
  private answerError(body: Buffer | string, json: boolean): void {
    const call = this.call
    if (call.client.committed) {
      const text = typeof body === 'string' ? body : body.toString('utf8')
      const message = upstreamErrorMessage(this.converted ?? call.endpoint.family, this.status, text)
      this.settle()
      call.endHeldOpen(errors.upstreamFailedInBand(this.status, message))
      return
    }
    const converted = this.converted
    const text = typeof body === 'string' ? Buffer.from(body) : body
    this.answerWhole(converted === null ? body : convertedError(converted, call.endpoint.family, this.status, text), json)
  }

  /**
   * Commits and sends a whole answer the gateway holds (an error read whole, a converted JSON answer); `json`: the
   * gateway wrote or rewrote it, as JSON (the upstream's content type does not say what it is).
   */
  answerWhole(body: Buffer | string, json = this.converted !== null): void {
    this.settle()
    this.delivering = true
    const call = this.call
    const client = call.client
    const headers = client.headers(this.headers, true)
    if (json) headers['content-type'] = JSON_TYPE
    // A held answer's first token is the client's when it is sent (an error answer has none).
    if (this.status < 300) call.ctx.firstTokenAt = performance.now()
    client.commit(this.status, headers)
    call.onCommitted()
    call.endAnswer(body)
  }

  /**
   * Commits (unless a held stream is open already) and sends a whole answer as the client's stream: `events` are all
   * of it, its terminator included.
   */
  answerStreamWhole(events: string): void {
    this.settle()
    this.delivering = true
    const call = this.call
    const client = call.client
    if (!client.committed) {
      const headers = client.streamHeaders(this.headers)
      headers['content-type'] = call.clientStreamType
      client.commitStream(this.status, headers)
    }
    call.ctx.firstTokenAt = performance.now()
    call.onCommitted()
    call.endAnswer(events)
  }

  /**
   * Its answer failed before its first byte reached the client (a continuation's stream ended, a JSON body is no
   * answer): another attempt may take over.
   */
  failBeforeAnswer(error: LlmProxyError, status?: number): void {
    this.fail('error', error, status)
  }

  /**
   * Its stream opened with an error event (a 200, then vLLM's `{"error":{…,"code":400}}`, Anthropic's
   * `overloaded_error`), before any byte reached the client: the error the upstream would have answered before its
   * stream, handled as that answer is — moved on from (retried, or a too-long prompt to the fallback), or the
   * client's answer with its status (a 4xx not retried). An error that names no status is a failure retried as a
   * lost connection is.
   */
  failedAtStart(event: UpstreamErrorEvent): void {
    const status = event.status
    if (status === undefined) {
      this.fail('error', event.error)
      return
    }
    this.status = status
    if (this.movedOnFrom(status, event.error) || this.tooLongForModel(event.json)) return
    // The rest of its stream (its `[DONE]`) is not the client's: the answer is the error alone.
    this.abort(event.error)
    this.answerError(event.json, true)
  }

  /** Gives up on this attempt before its answer reached the client; the call decides what comes next. */
  private fail(kind: FailureKind, error: LlmProxyError, status?: number, retryAfter?: number): void {
    this.abort(error)
    this.call.onAttemptFailed(this, kind, error, status, retryAfter)
  }

  onFirstByteTimeout(): void {
    this.timer = null
    if (this.done) return
    // Once a JSON body flows, this timer is its idle bound: the relay's to judge.
    const json = this.json
    if (json?.flowing === true) {
      json.onIdle()
      return
    }
    // (A timer may fire up to a millisecond early by this clock.)
    const left = this.firstByteBy - performance.now()
    if (left > 1) {
      this.holdOpen(left)
      return
    }
    // Headers came, the first token did not: a stall before the commit point can still move on.
    if (this.body !== null) this.fail('stall', timedOut('The upstream stalled before the first token.'))
    // No headers: given up here, not through reply-from, which would log our own abort as its `response errored`.
    else this.fail('timeout', timedOut('The upstream did not answer in time.'))
  }

  /**
   * A stream's client is due its heartbeat, `left` ms before the first-byte deadline: once the upstream's stream has
   * opened, the client's opens too, with its heartbeat (StreamRelay.holdOpen); until then, this looks again a heartbeat
   * later. Held open, the client's heartbeat runs on its own: the deadline alone is left.
   */
  private holdOpen(left: number): void {
    const client = this.call.client
    this.heartbeatDue = true
    if (!client.committed && this.stream !== null) this.stream.holdOpen()
    this.armDeadline(Math.ceil(client.committed ? left : Math.min(left, this.call.settings.timeouts.heartbeatMs)))
  }

  // ── the answer (the commit point is the first body chunk) ──────

  private relay(body: UpstreamBody): void {
    const call = this.call
    const type = this.headers?.['content-type']
    const sse = typeof type === 'string' && type.startsWith(SSE)
    const reader = call.meter.startAnswer(call.ctx.protocol)
    // A whole JSON answer to a streamed request (an upstream that does not stream): the client gets it as its stream.
    // (Not a Gemini JSON array from a Gemini upstream asked for one, nor several choices, which the encoders do not
    // carry: relayed as they are.)
    const wholeAnswerToStream =
      !sse &&
      call.ctx.stream &&
      this.status < 300 &&
      call.endpoint.convertible &&
      (this.converted !== null || call.clientStreamType === SSE) &&
      !call.severalChoices
    if (wholeAnswerToStream && !call.continuing) {
      this.json = new JsonRelay(this, call, body, reader, true)
      return
    }
    if ((this.converted !== null || call.client.committed) && sse !== call.ctx.stream) {
      // Answered in another shape than asked (an SSE stream to a JSON request, a JSON body to a continuation): it
      // cannot be converted or spliced.
      this.fail('error', errors.upstreamFailed('The upstream did not answer in the expected shape.'))
      return
    }
    if (!sse) this.json = new JsonRelay(this, call, body, reader)
    else {
      this.stream = new StreamRelay(this, call, body, reader, call.resumeTapFor(this))
      if (this.heartbeatDue && !call.client.committed) this.stream.holdOpen()
    }
  }

  private onBodyError(err: Error): void {
    if (this.done) return
    // A stream that failed in band, its usage being read: the failure it reported ends it, not the lost connection.
    if (this.stream?.readingUsage === true) {
      this.stream.end(null)
      return
    }
    if (!this.delivering) {
      // A body read whole (converted, or a whole answer to a stream) that went silent for idleMs: a stall, said so.
      if ((err as Partial<LlmProxyError>).code === 'llmproxy_upstream_timeout') this.fail('stall', timedOut(err.message))
      else this.fail('error', errors.upstreamFailed('The upstream connection failed before the first token.', { cause: err }))
      return
    }
    const error =
      'statusCode' in err && 'type' in err
        ? (err as LlmProxyError)
        : errors.upstreamFailed('The upstream connection failed mid-stream.', { cause: err })
    // After the commit point the answer is its relay's to end (a JSON one is cut: it cannot look complete).
    if (this.stream !== null) this.stream.end(error)
    else this.json?.cut(error)
  }

  // ── request headers ────────────────────────────────────────────────────────────────────────

  rewriteRequestHeaders(headers: IncomingHttpHeaders): IncomingHttpHeaders {
    const call = this.call
    const upstream = this.lease.upstream
    // (`converted` is also set for a continuation, which may go to an upstream of the client's own API.)
    const client = call.endpoint.family
    return upstreamRequestHeaders(headers, upstream, call.ctx.requestId, familyOf(upstream.protocol) === client ? null : client)
  }

  keepUpstreamHeaders(headers: IncomingHttpHeaders): void {
    this.headers = headers
  }
}

// The deadline's callback, shared by every attempt (no per-attempt closure): the attempt travels as the timer argument.
function firstByteTimeout(attempt: UpstreamAttempt): void {
  attempt.onFirstByteTimeout()
}

/** An attempt's own timeout: the client's 504, should nothing else answer, tells its SDK not to retry it. */
function timedOut(message: string, cause?: unknown): LlmProxyError {
  return errors.upstreamTimeout(message, { cause, headers: NOT_RETRIED })
}

function noop(): void {}
