import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { IncomingHttpHeaders as Http2IncomingHttpHeaders } from 'node:http2'
import type { Readable } from 'node:stream'
import '@fastify/reply-from'
import {
  type Attempt,
  ByteNeedle,
  buildUsageRecord,
  errors,
  estimateTokensFromBytes,
  type LlmContext,
  type LlmHookRegistry,
  type LlmProxyError,
  sendError,
  UsageExtractor,
} from '@llmproxy/core'
import type { AttemptResult, Lease } from '@llmproxy/upstreams'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { UpstreamDispatcher } from './dispatcher.js'
import { clientResponseHeaders, upstreamRequestHeaders } from './headers.js'
import type { ApiFamily, ResolvedRoute } from './models.js'
import type { Retry, RetryOn, Timeouts } from './options.js'
import { AttemptSignal } from './signal.js'
import { UsageEventFilter } from './tap.js'

/** Facts about one endpoint the proxy needs on the hot path. */
export interface Endpoint {
  /** The gateway's route (Fastify path syntax). */
  readonly path: string
  /** The API the endpoint belongs to; only models served over that API are routed to it. */
  readonly family: ApiFamily
  /** The upstream path for a model and (Gemini) an action; the model travels in the body elsewhere. */
  readonly upstreamPath: (upstreamModel: string, action: string) => string
  /** Whether the body's `model` names the model (rewritten to the upstream model). */
  readonly modelInBody: boolean
  /** The query string sent upstream, from the client's URL (never the client's credentials). */
  readonly queryString: (search: string | undefined, url: string) => string
  /** Markers of a stream's proper end; a stream ending without one gets an in-band error event. */
  readonly terminators: readonly ByteNeedle[]
  /** The stream ends with `data: [DONE]` (found while walking the events, no separate search). */
  readonly endsWithDone: boolean
  /** Whether the endpoint takes `stream_options.include_usage` (chat and legacy completions). */
  readonly takesIncludeUsage: boolean
}

/** Shared, per-router state of every call. */
export interface ProxySettings {
  readonly dispatcher: UpstreamDispatcher
  readonly hooks: LlmHookRegistry
  readonly timeouts: Timeouts
  readonly retry: Retry
  readonly retryOn: ReadonlySet<RetryOn>
}

/** Where a request keeps its ProxyCall, so reply-from's hooks can be shared functions, not per-call closures. */
export const kProxyCall = Symbol('llmproxy.proxyCall')

type CallCarrier = { [kProxyCall]: ProxyCall | null }

/** The request's ProxyCall; null once it has finished (a late reply-from callback then has nothing to do). */
function callOf(request: unknown): ProxyCall | null {
  return (request as CallCarrier)[kProxyCall]
}

const DATA_PREFIX = 'data:'
const DATA_FIELD = new ByteNeedle(DATA_PREFIX)
const SPACE = 0x20
const NEWLINE = 0x0a
const CR = 0x0d
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const DONE_LENGTH = '[DONE]'.length
/** `data: [DONE]` (with an optional CR) is 14 bytes at most; a split line longer than this is neither it nor a field name. */
const SPLIT_HEAD_MAX = 16
const SPLIT_DONE_LINE = /^data: ?\[DONE\]\r?$/
const SSE = 'text/event-stream'
const MAX_ERROR_BODY_BYTES = 64 * 1024
/** Waits for a Retry-After hold end this much later, so the hold has surely ended (timer and clock granularity). */
const HOLD_SLACK_MS = 5

type FailureKind = 'connect' | 'timeout' | 'stall' | 'status' | 'error'

/**
 * One client request on its way through the pool, the fallbacks and the retries, then streaming.
 * Until the first body byte is written to the client (the commit point) a failed attempt moves on;
 * after it, an upstream failure becomes an in-band SSE error event and the stream ends without its
 * terminator — never a truncated answer that looks complete.
 *
 * The response body is never held: JSON and SSE bodies alike are written to the client socket chunk by
 * chunk as they arrive, through the usage tap (the reply is hijacked; Fastify's onResponse hooks still
 * run), so the proxy can end a stream with an error event, or cut a JSON body that cannot complete.
 */
export class ProxyCall {
  private readonly request: FastifyRequest
  private readonly reply: FastifyReply
  private readonly ctx: LlmContext
  private readonly settings: ProxySettings
  private readonly endpoint: Endpoint
  private readonly body: Record<string, unknown>
  /** Gemini's `generateContent` / `streamGenerateContent` (from the URL); '' elsewhere. */
  private readonly action: string
  private readonly stripUsage: boolean
  private readonly primary: ResolvedRoute
  private route: ResolvedRoute
  /** Index into primary.fallbacks of the route being tried; -1 = the primary. */
  private fallbackIndex = -1
  private readonly tried = new Set<string>()
  private attemptsThisRound = 0
  private backoffMs: number
  private retryAfterMs = 0
  /** Time spent waiting out Retry-After holds (bounded by retry.maxRetryAfterMs). */
  private waitedMs = 0
  private lastError: LlmProxyError | null = null

  private lease: Lease | null = null
  private signal: AttemptSignal | null = null
  private queueAbort: AbortController | null = null
  private timer: NodeJS.Timeout | null = null
  private attemptStartedAt = 0
  private lastChunkAt = 0
  private requestBytes = 0
  private upstreamBody: Readable | null = null
  private upstreamHeaders: IncomingHttpHeaders | null = null
  private upstreamStatus = 0
  private filter: UsageEventFilter | null = null
  /** The client's response headers of a stream, prepared while waiting for its first chunk. */
  private sseHeaders: OutgoingHttpHeaders | null = null
  private committed = false
  private sseEnded = false
  private sse = false
  private finished = false
  private streamError: LlmProxyError | null = null
  private sawTerminator = false
  /** A `data: [DONE]` line went by (found while walking the events). */
  private sawDone = false
  /** The last chunk ended inside a line (the next one starts mid-line). */
  private midLine = false
  /** The chunk being relayed carries no usage report: whole lines, each object's usage null (see countEvents). */
  private tapSkips = false
  /**
   * The first bytes of a line split across chunks, while they are few (`SPLIT_HEAD_MAX`): enough to finish its
   * field name or to recognise `data: [DONE]`. null: the line is longer than that.
   */
  private lineHead: string | null = null
  /** Per terminator, the bytes of it matched at the end of the chunks so far (a terminator split across chunks). */
  private terminatorPartials: number[] | null = null
  private extractor: UsageExtractor | null = null
  private dataEvents = 0
  private responseBytes = 0

  constructor(
    request: FastifyRequest,
    reply: FastifyReply,
    settings: ProxySettings,
    endpoint: Endpoint,
    route: ResolvedRoute,
    body: Record<string, unknown>,
    action: string,
    stripUsage: boolean,
  ) {
    this.request = request
    this.reply = reply
    this.ctx = request.llm
    this.settings = settings
    this.endpoint = endpoint
    this.primary = route
    this.route = route
    this.body = body
    this.action = action
    this.stripUsage = stripUsage
    this.backoffMs = settings.retry.backoffMs
    ;(request as unknown as CallCarrier)[kProxyCall] = this
    reply.raw.on('close', () => this.onClientClose())
  }

  start(): void {
    this.nextAttempt()
  }

  // ── choosing an upstream ─────────────────────────────────────────────────────────────────────

  private nextAttempt(): void {
    if (this.finished) return
    const retry = this.settings.retry
    if (this.ctx.attempts >= retry.attempts || performance.now() - this.ctx.startedAt >= retry.budgetMs) {
      this.fail(this.lastError ?? errors.upstreamUnavailable(`No upstream could answer for model "${this.ctx.model}".`))
      return
    }
    const lease = this.route.pool.tryAcquire(this.tried)
    if (lease === 'busy') {
      this.queueAbort ??= new AbortController()
      this.route.pool.acquire(this.tried, this.queueAbort.signal).then(
        (waited: Lease | null) => (waited === null ? this.advance() : this.startAttempt(waited)),
        (err: unknown) => this.fail(err as LlmProxyError),
      )
      return
    }
    if (lease === null) this.advance()
    else this.startAttempt(lease)
  }

  /** The current route has nothing more to give: next fallback, or another round after a backoff. */
  private advance(): void {
    if (this.finished) return
    const fallbacks = this.primary.fallbacks
    if (this.fallbackIndex + 1 < fallbacks.length) {
      this.fallbackIndex++
      this.route = fallbacks[this.fallbackIndex] as ResolvedRoute
      this.tried.clear()
      this.nextAttempt()
      return
    }
    const retry = this.settings.retry
    let delay: number
    if (this.attemptsThisRound === 0) {
      // Nothing could even be tried: worth waiting only for upstreams a 429 holds back until their Retry-After.
      const holdEnds = this.primary.pool.holdEnds()
      if (holdEnds === 0) {
        this.fail(this.lastError ?? errors.upstreamUnavailable(`No healthy upstream for model "${this.ctx.model}".`))
        return
      }
      delay = Math.max(0, holdEnds - Date.now()) + HOLD_SLACK_MS
    } else {
      // Another round over the same upstreams: back off (full jitter, doubling), at least the Retry-After.
      delay = Math.max(this.retryAfterMs === 0 ? 0 : this.retryAfterMs + HOLD_SLACK_MS, Math.random() * this.backoffMs)
      this.backoffMs *= 2
    }
    if ((this.attemptsThisRound === 0 || this.retryAfterMs > 0) && this.waitedMs + delay > retry.maxRetryAfterMs) {
      const seconds = String(Math.ceil(delay / 1000))
      this.fail(
        this.lastError ??
          errors.rateLimited('The upstreams are rate limiting requests.', 'llmproxy_upstream_rate_limited', { 'retry-after': seconds }),
      )
      return
    }
    this.waitedMs += delay
    this.retryAfterMs = 0
    this.attemptsThisRound = 0
    this.fallbackIndex = -1
    this.route = this.primary
    this.tried.clear()
    if (performance.now() + delay - this.ctx.startedAt >= retry.budgetMs) {
      this.fail(this.lastError ?? errors.upstreamTimeout('The retry budget ran out.'))
      return
    }
    this.timer = setTimeout(retryLater, delay, this)
  }

  private startAttempt(lease: Lease): void {
    if (this.finished) {
      lease.release({ ok: false, kind: 'aborted' })
      return
    }
    const upstream = lease.upstream
    const ctx = this.ctx
    this.lease = lease
    this.tried.add(upstream.name)
    this.attemptsThisRound++
    ctx.attempts++
    ctx.upstream = upstream.name
    ctx.upstreamModel = this.route.upstreamModel
    ctx.protocol = upstream.protocol
    const endpoint = this.endpoint
    if (endpoint.modelInBody) this.body.model = this.route.upstreamModel
    const payload = JSON.stringify(this.body)
    this.requestBytes = payload.length
    const signal = new AttemptSignal()
    this.signal = signal
    this.attemptStartedAt = performance.now()
    const timeouts = this.settings.timeouts
    // The total budget bounds the wait for the first byte too, so a silent upstream costs no more than it.
    const budgetLeft = this.settings.retry.budgetMs - (this.attemptStartedAt - ctx.startedAt)
    const firstByteMs = Math.max(1, Math.min(ctx.stream ? timeouts.firstTokenMs : timeouts.responseMs, budgetLeft))

    const dispatcher = this.settings.dispatcher
    dispatcher.arm(signal, firstByteMs)
    try {
      this.reply.from(upstream.url + endpoint.upstreamPath(this.route.upstreamModel, this.action), {
        body: payload,
        queryString: endpoint.queryString,
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
    if (this.signal === signal && !this.committed && !this.finished) this.timer = setTimeout(firstByteTimeout, firstByteMs, this)
  }

  // ── reply-from callbacks (before the commit point) ──────────────────────────────────────────

  upstreamRequestHeaders(headers: IncomingHttpHeaders): IncomingHttpHeaders {
    return upstreamRequestHeaders(headers, (this.lease as Lease).upstream, this.ctx.requestId)
  }

  keepUpstreamHeaders(headers: IncomingHttpHeaders): void {
    this.upstreamHeaders = headers
  }

  onUpstreamError(error: Error): void {
    if (this.finished || this.committed || this.ctx.clientAborted) return
    const cause = (error as { cause?: { code?: string; name?: string } }).cause
    const code = cause?.code ?? (error as { code?: string }).code ?? ''
    if (code === 'UND_ERR_ABORTED' || cause?.name === 'AbortError' || code === 'UND_ERR_HEADERS_TIMEOUT' || this.signal?.aborted) {
      // Our own first-byte timer (or undici's header timeout) gave up on this attempt.
      this.abandon('timeout', errors.upstreamTimeout('The upstream did not answer in time.', { cause: error }))
      return
    }
    if (code === 'UND_ERR_CONNECT_TIMEOUT') {
      this.abandon('timeout', errors.upstreamTimeout('Connecting to the upstream timed out.', { cause: error }))
      return
    }
    if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EHOSTUNREACH') {
      this.abandon('connect', errors.upstreamUnavailable('The upstream refused the connection.', { cause: error }))
      return
    }
    this.abandon('connect', errors.upstreamFailed('The upstream connection failed before a response.', { cause: error }))
  }

  onUpstreamResponse(res: { statusCode: number; stream: Readable }): void {
    if (this.finished) {
      res.stream.destroy()
      return
    }
    this.ctx.upstreamHeadersAt = performance.now()
    const status = res.statusCode
    const body = res.stream
    this.upstreamStatus = status
    this.upstreamBody = body
    body.on('error', (err: Error) => this.onBodyError(body, err))
    if (status >= 200 && status < 300) {
      this.sendBody(body)
      return
    }
    if (this.canRetryStatus(status)) {
      const retryAfter = retryAfterMs(this.upstreamHeaders?.['retry-after'])
      if (status === 429) this.retryAfterMs = Math.max(this.retryAfterMs, retryAfter ?? 0)
      const error =
        status === 429
          ? errors.rateLimited('The upstream is rate limiting requests.', 'llmproxy_upstream_rate_limited', {
              'retry-after': String(Math.ceil((retryAfter ?? 1000) / 1000)),
            })
          : errors.upstreamFailed(`The upstream answered ${status}.`)
      this.abandon('status', error, status, retryAfter)
      return
    }
    if (status === 400 && this.fallbackIndex + 1 < this.primary.fallbacks.length) {
      this.checkContextLength(body)
      return
    }
    this.sendBody(body)
  }

  private canRetryStatus(status: number): boolean {
    return (
      this.settings.retryOn.has(status as RetryOn) &&
      this.ctx.attempts < this.settings.retry.attempts &&
      performance.now() - this.ctx.startedAt < this.settings.retry.budgetMs
    )
  }

  /** A 400 `context_length_exceeded` may go to a fallback model (with a larger context); other 400s pass through. */
  private checkContextLength(body: Readable): void {
    const parts: Buffer[] = []
    let size = 0
    body.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size <= MAX_ERROR_BODY_BYTES) parts.push(chunk)
    })
    body.once('end', () => {
      if (this.finished) return
      const text = Buffer.concat(parts)
      if (text.includes('context_length_exceeded')) {
        this.upstreamBody = null
        this.abandon('status', errors.invalidRequest('The prompt is too long for this model.'), 400)
        this.advance()
        return
      }
      this.clearTimer()
      // At most MAX_ERROR_BODY_BYTES were kept: the upstream's content-length may not be this body's.
      this.commit(this.responseHeaders(true))
      this.reportCommitted()
      this.reply.raw.end(text)
    })
  }

  /** Gives up on the current attempt; the next one starts unless the failure may not be retried. */
  private abandon(kind: FailureKind, error: LlmProxyError, status?: number, retryAfter?: number): void {
    this.clearTimer()
    this.lastError = error
    const upstreamBody = this.upstreamBody
    this.upstreamBody = null
    if (upstreamBody !== null) {
      upstreamBody.removeAllListeners('data')
      upstreamBody.on('error', noop)
      upstreamBody.destroy()
    }
    const result: AttemptResult = { ok: false, kind }
    if (status !== undefined) result.status = status
    if (retryAfter !== undefined) result.retryAfterMs = retryAfter
    this.releaseLease(result, kind === 'status' ? 'status' : kind === 'connect' ? 'connect_error' : kind)
    if (kind === 'status' && status === 400) return
    const retryable =
      kind === 'status'
        ? status !== undefined && this.settings.retryOn.has(status as RetryOn)
        : // a connection lost before the first token counts as a connect failure
          this.settings.retryOn.has(kind === 'error' ? 'connect' : kind)
    if (retryable) this.nextAttempt()
    else this.fail(error)
  }

  onFirstByteTimeout(): void {
    this.timer = null
    if (this.finished) return
    if (this.committed) {
      // A JSON body still arriving when the response time is up: cut it (it cannot look complete).
      this.upstreamBody?.destroy(errors.upstreamTimeout('The upstream did not finish its answer in time.'))
      return
    }
    const stalled = this.upstreamBody !== null
    this.signal?.abort(errors.upstreamTimeout('The upstream did not answer in time.'))
    if (stalled) {
      // Headers came, the first token did not: a stall before the commit point can still move on.
      this.abandon('stall', errors.upstreamTimeout('The upstream stalled before the first token.'))
    }
    // Without headers, the abort surfaces through reply-from's onError as a timeout.
  }

  // ── streaming (the commit point is the first body chunk) ───────────────────────────────────

  private sendBody(body: Readable): void {
    const type = this.upstreamHeaders?.['content-type']
    this.sse = typeof type === 'string' && type.startsWith(SSE)
    this.extractor = new UsageExtractor(this.ctx.protocol)
    if (this.sse) {
      // Everything the commit needs is prepared now, while the upstream generates the first token.
      this.sseHeaders = this.streamHeaders()
      if (this.stripUsage) this.filter = new UsageEventFilter()
      body.on('data', (chunk: Buffer) => this.onSseChunk(chunk))
      body.once('end', () => this.onSseEnd())
    } else {
      // A JSON answer is ready when its headers come (generation happened before them): it is committed
      // now and relayed as it arrives; the first-byte timer keeps bounding it whole.
      this.ctx.firstTokenAt = performance.now()
      this.commit(this.responseHeaders(false))
      this.reportCommitted()
      body.on('data', (chunk: Buffer) => this.onJsonChunk(chunk))
      body.once('end', () => this.reply.raw.end())
    }
  }

  private onSseChunk(chunk: Buffer): void {
    if (this.committed) {
      // A timestamp per chunk, not a timer update: the idle timer checks it when it fires.
      this.lastChunkAt = performance.now()
      this.relay(chunk)
      return
    }
    // The first token: it goes out before any bookkeeping (that is the time to first token).
    const now = performance.now()
    this.commit(this.sseHeaders as OutgoingHttpHeaders)
    this.relay(chunk)
    this.ctx.firstTokenAt = now
    this.lastChunkAt = now
    this.reportCommitted()
    if (this.sseEnded) return
    this.clearTimer()
    this.timer = setTimeout(idleTimeout, this.settings.timeouts.idleMs, this)
  }

  private onJsonChunk(chunk: Buffer): void {
    ;(this.extractor as UsageExtractor).write(chunk)
    this.responseBytes += chunk.length
    this.send(chunk)
  }

  /** Passes one chunk to the client, with the usage tap beside it. */
  private relay(chunk: Buffer): void {
    if (!this.countEvents(chunk)) {
      // Malformed upstream data after the commit point: stop here with an in-band error event.
      this.streamError = errors.upstreamFailed('The upstream sent malformed data.')
      const body = this.upstreamBody as Readable
      body.removeAllListeners('data')
      body.destroy()
      this.onSseEnd()
      return
    }
    // The chunk goes out first; the usage tap reads it after (the filter finds the usage-only event by its shape).
    const out = this.filter === null ? chunk : this.filter.filter(chunk, !this.tapSkips)
    if (out !== null) this.send(out)
    if (!this.tapSkips) (this.extractor as UsageExtractor).write(chunk)
    this.responseBytes += chunk.length
    if (!this.sawTerminator) this.sawTerminator = this.endpoint.endsWithDone ? this.sawDone : this.endsStream(chunk)
  }

  /** Whether this chunk holds one of the endpoint's terminators, or finishes one begun in the chunks before it. */
  private endsStream(chunk: Buffer): boolean {
    const terminators = this.endpoint.terminators
    this.terminatorPartials ??= new Array<number>(terminators.length).fill(0)
    const partials = this.terminatorPartials
    for (let i = 0; i < terminators.length; i++) {
      const needle = terminators[i] as ByteNeedle
      const carried = partials[i] as number
      if ((carried > 0 && needle.completeIn(chunk, carried) !== -1) || needle.indexIn(chunk) !== -1) return true
      partials[i] = needle.carriedPrefix(chunk, carried)
    }
    return false
  }

  private send(out: Buffer): void {
    // Backpressure: a client that reads slowly pauses the upstream until its socket drains.
    if (!this.reply.raw.write(out)) {
      const body = this.upstreamBody as Readable
      body.pause()
      this.reply.raw.once('drain', () => body.resume())
    }
  }

  /**
   * Counts the chunk's data events (for the estimate when no usage is reported) and checks their shape:
   * every wire format here sends one JSON object (or `[DONE]`) per data line. Lines are walked from their
   * starts (a `data:` inside a JSON string is not a field); only each data line's first and last bytes
   * are looked at, not parsed. A line split across chunks is counted (and known when it is `[DONE]`) but not checked.
   * Also notes whether the usage tap may skip the chunk (`tapSkips`): whole lines whose every JSON object
   * ends with the usage key set to null (OpenAI and vLLM with include_usage, every chunk but the last).
   */
  private countEvents(chunk: Buffer): boolean {
    const length = chunk.length
    const extractor = this.extractor as UsageExtractor
    let pos = 0
    this.tapSkips = !this.midLine
    if (this.midLine) {
      // The rest of a line begun in an earlier chunk.
      const eol = chunk.indexOf(NEWLINE)
      const head = this.lineHead
      if (head !== null) {
        const end = eol === -1 ? length : eol
        const line = head.length + end <= SPLIT_HEAD_MAX ? head + chunk.toString('latin1', 0, end) : null
        // Its data event is counted once its field name is whole: now, if it was not at the split.
        if (head.length < DATA_FIELD.length && (line === null || line.length >= DATA_FIELD.length || eol !== -1)) {
          if ((line ?? head + chunk.toString('latin1', 0, DATA_FIELD.length)).startsWith(DATA_PREFIX)) this.dataEvents++
        }
        if (eol !== -1 && line !== null && SPLIT_DONE_LINE.test(line)) this.sawDone = true
        this.lineHead = line
      }
      if (eol === -1) return true
      pos = eol + 1
      this.midLine = false
    }
    while (pos < length) {
      const eol = chunk.indexOf(NEWLINE, pos)
      const data = DATA_FIELD.isAt(chunk, pos)
      if (data) this.dataEvents++
      if (eol === -1) {
        this.midLine = true
        this.tapSkips = false
        this.lineHead = length - pos <= SPLIT_HEAD_MAX ? chunk.toString('latin1', pos) : null
        return true
      }
      if (data) {
        let start = pos + DATA_FIELD.length
        if (chunk[start] === SPACE) start++
        let last = eol - 1
        if (chunk[last] === CR) last--
        if (last >= start) {
          const first = chunk[start]
          const end = chunk[last]
          if (first === OPEN_BRACKET && end === CLOSE_BRACKET) {
            if (last - start === DONE_LENGTH - 1) this.sawDone = true
          } else if (first !== OPEN_BRACE || end !== CLOSE_BRACE) return false
          else if (this.tapSkips) this.tapSkips = extractor.endsWithNullReport(chunk, last)
        }
      }
      pos = eol + 1
    }
    return true
  }

  private onSseEnd(): void {
    if (this.sseEnded) return
    this.sseEnded = true
    this.clearTimer()
    if (!this.committed) {
      this.commit(this.sseHeaders as OutgoingHttpHeaders)
      this.reportCommitted()
    }
    const raw = this.reply.raw
    const held = this.filter?.flush() ?? null
    if (held !== null) raw.write(held)
    if (this.streamError === null && !this.sawTerminator && this.endpoint.terminators.length > 0 && this.upstreamStatus === 200) {
      this.streamError = errors.upstreamFailed('The upstream ended the stream before it was complete.')
    }
    if (this.streamError !== null) raw.write(sseErrorEvent(this.streamError))
    raw.end()
  }

  /** The client's response headers: the reply's own (x-request-id, rate limits) and the upstream's. */
  private responseHeaders(bodyRewritten: boolean): OutgoingHttpHeaders {
    const headers = this.reply.getHeaders() as OutgoingHttpHeaders
    if (this.upstreamHeaders !== null) Object.assign(headers, clientResponseHeaders(this.upstreamHeaders, bodyRewritten))
    return headers
  }

  /** A stream's headers: never cached, never buffered by a reverse proxy in front. */
  private streamHeaders(): OutgoingHttpHeaders {
    // An error event may be appended or the usage chunk removed: the length is not the upstream's.
    const headers = this.responseHeaders(true)
    headers['cache-control'] = 'no-cache'
    headers['x-accel-buffering'] = 'no'
    return headers
  }

  /** The commit point: the reply is hijacked; status and headers go out with the first body bytes. */
  private commit(headers: OutgoingHttpHeaders): void {
    this.committed = true
    this.reply.hijack()
    this.reply.raw.writeHead(this.upstreamStatus, headers)
  }

  /** The attempt that reached the commit point succeeded, as far as failover is concerned. */
  private reportCommitted(): void {
    if (this.lease !== null) this.reportAttempt(this.lease, 'ok', this.upstreamStatus)
  }

  onIdleTimeout(): void {
    const idleMs = this.settings.timeouts.idleMs
    const quietFor = performance.now() - this.lastChunkAt
    if (quietFor < idleMs) {
      this.timer = setTimeout(idleTimeout, idleMs - quietFor, this)
      return
    }
    this.timer = null
    this.upstreamBody?.destroy(errors.upstreamTimeout(`The upstream sent nothing for ${this.settings.timeouts.idleMs} ms.`))
  }

  private onBodyError(body: Readable, err: Error): void {
    // An abandoned attempt's body errors when destroyed: that is no news about the current attempt.
    if (this.finished || body !== this.upstreamBody) return
    if (!this.committed) {
      this.abandon('error', errors.upstreamFailed('The upstream connection failed before the first token.', { cause: err }))
      return
    }
    this.clearTimer()
    this.streamError =
      'statusCode' in err && 'type' in err
        ? (err as LlmProxyError)
        : errors.upstreamFailed('The upstream connection failed mid-stream.', { cause: err })
    // SSE: end the client's stream with an in-band error event and no terminator. A JSON body cannot
    // carry an error once started: the connection is cut, so it cannot look complete.
    if (this.sse) this.onSseEnd()
    else this.reply.raw.destroy()
  }

  // ── the end ─────────────────────────────────────────────────────────────────────────────────

  private fail(error: LlmProxyError): void {
    if (this.finished || this.committed) return
    this.clearTimer()
    this.ctx.outcome = 'upstream_error'
    this.ctx.error = { code: error.code, message: error.message }
    this.committed = true
    sendError(this.reply, error)
  }

  private onClientClose(): void {
    if (!this.reply.raw.writableFinished) {
      this.ctx.clientAborted = true
      this.signal?.abort(errors.upstreamFailed('The client went away.'))
      this.queueAbort?.abort()
      this.upstreamBody?.destroy()
    }
    this.finish()
  }

  private finish(): void {
    if (this.finished) return
    this.finished = true
    this.clearTimer()
    ;(this.request as unknown as CallCarrier)[kProxyCall] = null
    const ctx = this.ctx
    ctx.endedAt = performance.now()
    const raw = this.reply.raw
    const status = raw.headersSent ? raw.statusCode : 0
    if (this.lease !== null) {
      // A client leaving says nothing about the upstream's health: 'aborted' is neutral for passive checks.
      const result: AttemptResult = ctx.clientAborted
        ? { ok: false, kind: 'aborted' }
        : this.streamError !== null
          ? { ok: false, kind: 'error' }
          : ctx.firstTokenAt === 0
            ? { ok: true }
            : { ok: true, ttftMs: ctx.firstTokenAt - this.attemptStartedAt }
      this.releaseLease(result, null)
    }
    if (ctx.clientAborted) ctx.outcome = 'client_aborted'
    else if (ctx.outcome === 'pending') ctx.outcome = this.streamError === null && status < 500 ? 'ok' : 'upstream_error'
    if (this.streamError !== null && ctx.error === null) ctx.error = { code: this.streamError.code, message: this.streamError.message }
    this.meter(status)
    this.settings.hooks.emitUsage(buildUsageRecord(ctx, status), this.request)
  }

  /** Usage as reported by the upstream, or estimated (and marked so) when it reported none. */
  private meter(status: number): void {
    const ctx = this.ctx
    const reported = this.extractor?.result() ?? null
    if (reported !== null) {
      if (this.extractor?.missingPrompt === true) {
        reported.promptTokens = estimateTokensFromBytes(this.requestBytes)
        reported.totalTokens = reported.promptTokens + reported.completionTokens
        ctx.estimated = true
      }
      ctx.usage = reported
      return
    }
    if (this.extractor === null || status < 200 || status >= 300) return
    const promptTokens = estimateTokensFromBytes(this.requestBytes)
    const completionTokens = this.sse
      ? Math.max(0, this.dataEvents - (this.sawTerminator ? 1 : 0))
      : estimateTokensFromBytes(this.responseBytes)
    ctx.usage = { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens }
    ctx.estimated = true
  }

  private releaseLease(result: AttemptResult, attempt: Attempt['result'] | null): void {
    const lease = this.lease
    if (lease === null) return
    this.lease = null
    lease.release(result)
    if (attempt !== null) this.reportAttempt(lease, attempt, result.status)
  }

  private reportAttempt(lease: Lease, result: Attempt['result'], status: number | undefined): void {
    const hooks = this.settings.hooks
    if (!hooks.hasListeners('onAttempt')) return
    const attempt: Attempt = {
      upstream: lease.upstream.name,
      upstreamModel: this.route.upstreamModel,
      result,
      durationMs: performance.now() - this.attemptStartedAt,
    }
    if (status !== undefined) attempt.status = status
    if (this.ctx.firstTokenAt !== 0) attempt.ttftMs = this.ctx.firstTokenAt - this.attemptStartedAt
    hooks.emitAttempt(attempt, this.request)
  }

  private clearTimer(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
  }

  retry(): void {
    this.timer = null
    this.nextAttempt()
  }
}

// Shared callbacks (no per-request closures): the call travels as the timer argument or on the request.
function retryLater(call: ProxyCall): void {
  call.retry()
}

function firstByteTimeout(call: ProxyCall): void {
  call.onFirstByteTimeout()
}

function idleTimeout(call: ProxyCall): void {
  call.onIdleTimeout()
}

function rewriteRequestHeaders(request: unknown, headers: IncomingHttpHeaders | Http2IncomingHttpHeaders): IncomingHttpHeaders {
  return callOf(request)?.upstreamRequestHeaders(headers as IncomingHttpHeaders) ?? (headers as IncomingHttpHeaders)
}

/** reply-from copies what this returns onto the reply; the proxy sets the headers itself at commit. */
function keepUpstreamHeaders(headers: IncomingHttpHeaders | Http2IncomingHttpHeaders, request?: unknown): IncomingHttpHeaders {
  callOf(request)?.keepUpstreamHeaders(headers as IncomingHttpHeaders)
  return {}
}

/** reply-from's types call the third argument a server response; it is `{ statusCode, headers, stream }`. */
function onResponse(request: unknown, _reply: unknown, response: unknown): void {
  const res = response as { statusCode: number; stream: Readable }
  const call = callOf(request)
  if (call === null) res.stream.destroy()
  else call.onUpstreamResponse(res)
}

function onError(reply: { request: unknown }, { error }: { error: Error }): void {
  callOf(reply.request)?.onUpstreamError(error)
}

function noop(): void {}

function retryAfterMs(header: string | string[] | undefined): number | undefined {
  if (typeof header !== 'string') return undefined
  const seconds = Number(header)
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000)
  const date = Date.parse(header)
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now())
}

function sseErrorEvent(error: LlmProxyError): Buffer {
  return Buffer.from(`event: error\ndata: ${JSON.stringify(error.toJSON())}\n\n`)
}
