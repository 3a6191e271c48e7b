import type { IncomingHttpHeaders } from 'node:http'
import type { IncomingHttpHeaders as Http2IncomingHttpHeaders } from 'node:http2'
import type { Readable } from 'node:stream'
import type { FastifyReplyFromHooks } from '@fastify/reply-from'
import {
  type Attempt,
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
import type { ResolvedRoute } from './models.js'
import type { Retry, RetryOn, Timeouts } from './options.js'
import { ResponseTap, type TapListener } from './tap.js'

/** Facts about one endpoint the proxy needs on the hot path. */
export interface Endpoint {
  readonly path: string
  /** Markers of a stream's proper end; a stream ending without one gets an in-band error event. */
  readonly terminators: readonly Buffer[]
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

const DATA_FIELD = Buffer.from('data:')
const SSE = 'text/event-stream'
const MAX_ERROR_BODY_BYTES = 64 * 1024

type FailureKind = 'connect' | 'timeout' | 'stall' | 'status' | 'error'

/**
 * One client request on its way through the pool, the fallbacks and the retries, then streaming.
 * Until the first body byte is written to the client (the commit point) a failed attempt moves on;
 * after it, an upstream failure becomes an in-band SSE error event and the stream ends without its
 * terminator — never a truncated answer that looks complete.
 */
export class ProxyCall implements TapListener {
  private readonly request: FastifyRequest
  private readonly reply: FastifyReply
  private readonly ctx: LlmContext
  private readonly settings: ProxySettings
  private readonly endpoint: Endpoint
  private readonly body: Record<string, unknown>
  private readonly stripUsage: boolean
  private readonly primary: ResolvedRoute
  private route: ResolvedRoute
  /** Index into primary.fallbacks of the route being tried; -1 = the primary. */
  private fallbackIndex = -1
  private readonly tried = new Set<string>()
  private attemptsThisRound = 0
  private backoffMs: number
  private retryAfterMs = 0
  private lastError: LlmProxyError | null = null

  private lease: Lease | null = null
  private controller: AbortController | null = null
  private timer: NodeJS.Timeout | null = null
  private attemptStartedAt = 0
  private requestBytes = 0
  private upstreamBody: Readable | null = null
  private upstreamHeaders: IncomingHttpHeaders | null = null
  private upstreamStatus = 0
  private tap: ResponseTap | null = null
  private committed = false
  private sse = false
  private finished = false
  private streamError: LlmProxyError | null = null
  private sawTerminator = false
  private extractor: UsageExtractor | null = null
  private dataEvents = 0
  private responseBytes = 0

  private readonly fromOptions: FastifyReplyFromHooks

  constructor(
    request: FastifyRequest,
    reply: FastifyReply,
    settings: ProxySettings,
    endpoint: Endpoint,
    route: ResolvedRoute,
    body: Record<string, unknown>,
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
    this.stripUsage = stripUsage
    this.backoffMs = settings.retry.backoffMs
    this.fromOptions = {
      rewriteRequestHeaders: this.rewriteRequestHeaders,
      rewriteHeaders: this.keepUpstreamHeaders,
      onResponse: this.onResponse,
      onError: this.onError,
    }
    reply.raw.once('close', this.onClientClose)
  }

  start(): void {
    this.nextAttempt()
  }

  // ── choosing an upstream ─────────────────────────────────────────────────────────────────────

  private nextAttempt = (): void => {
    if (this.finished) return
    const retry = this.settings.retry
    if (this.ctx.attempts >= retry.attempts || performance.now() - this.ctx.startedAt >= retry.budgetMs) {
      this.fail(this.lastError ?? errors.upstreamUnavailable(`No upstream could answer for model "${this.ctx.model}".`))
      return
    }
    const lease = this.route.pool.tryAcquire(this.tried)
    if (lease === 'busy') {
      this.route.pool.acquire(this.tried, this.clientSignal()).then(
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
    if (this.attemptsThisRound === 0) {
      this.fail(this.lastError ?? errors.upstreamUnavailable(`No healthy upstream for model "${this.ctx.model}".`))
      return
    }
    const retry = this.settings.retry
    if (this.retryAfterMs > retry.maxRetryAfterMs) {
      this.fail(this.lastError ?? errors.upstreamUnavailable('Upstreams are rate limited.'))
      return
    }
    // Another round over the same upstreams: back off (full jitter, doubling), at least the Retry-After.
    const delay = Math.max(this.retryAfterMs, Math.random() * this.backoffMs)
    this.backoffMs *= 2
    this.retryAfterMs = 0
    this.attemptsThisRound = 0
    this.fallbackIndex = -1
    this.route = this.primary
    this.tried.clear()
    if (performance.now() + delay - this.ctx.startedAt >= retry.budgetMs) {
      this.fail(this.lastError ?? errors.upstreamTimeout('The retry budget ran out.'))
      return
    }
    this.timer = setTimeout(this.nextAttempt, delay)
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
    this.body.model = this.route.upstreamModel
    const payload = JSON.stringify(this.body)
    this.requestBytes = payload.length
    this.controller = new AbortController()
    this.attemptStartedAt = performance.now()
    const timeouts = this.settings.timeouts
    const firstByteMs = ctx.stream ? timeouts.firstTokenMs : timeouts.responseMs
    this.timer = setTimeout(this.onFirstByteTimeout, firstByteMs)

    const options = this.fromOptions
    options.body = payload
    options.contentType = 'application/json'
    const dispatcher = this.settings.dispatcher
    dispatcher.current = { signal: this.controller.signal, headersTimeout: firstByteMs }
    try {
      this.reply.from(upstream.url + this.endpoint.path, options)
    } finally {
      dispatcher.current = null
    }
  }

  // ── reply-from callbacks (before the commit point) ──────────────────────────────────────────

  private rewriteRequestHeaders = (_request: unknown, headers: IncomingHttpHeaders | Http2IncomingHttpHeaders): IncomingHttpHeaders => {
    const lease = this.lease as Lease
    return upstreamRequestHeaders(headers as IncomingHttpHeaders, lease.upstream, this.ctx.requestId)
  }

  /** reply-from copies what this returns onto the reply; the proxy sets headers itself at commit. */
  private keepUpstreamHeaders = (headers: IncomingHttpHeaders | Http2IncomingHttpHeaders): IncomingHttpHeaders => {
    this.upstreamHeaders = headers as IncomingHttpHeaders
    return {}
  }

  private onError = (_reply: unknown, { error }: { error: Error }): void => {
    if (this.finished || this.committed) return
    const cause = (error as { cause?: { code?: string; name?: string } }).cause
    const code = cause?.code ?? (error as { code?: string }).code ?? ''
    if (this.ctx.clientAborted) return
    if (code === 'UND_ERR_ABORTED' || cause?.name === 'AbortError' || code === 'UND_ERR_HEADERS_TIMEOUT') {
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

  /** reply-from's types call the third argument a server response; it is `{ statusCode, headers, stream }`. */
  private onResponse = (_request: unknown, _reply: unknown, response: unknown): void => {
    const res = response as { statusCode: number; stream: Readable }
    if (this.finished) {
      res.stream.destroy()
      return
    }
    this.ctx.upstreamHeadersAt = performance.now()
    const status = res.statusCode
    this.upstreamStatus = status
    this.upstreamBody = res.stream
    res.stream.on('error', this.onBodyError)
    if (status >= 200 && status < 300) {
      this.pipeThroughTap(res.stream)
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
      this.checkContextLength(res.stream)
      return
    }
    this.pipeThroughTap(res.stream)
  }

  private canRetryStatus(status: number): boolean {
    return this.settings.retryOn.has(status as RetryOn) && this.hasAttemptsLeft()
  }

  private hasAttemptsLeft(): boolean {
    return this.ctx.attempts < this.settings.retry.attempts && performance.now() - this.ctx.startedAt < this.settings.retry.budgetMs
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
      this.commit(400)
      this.reply.removeHeader('content-length')
      this.reply.send(text)
    })
  }

  /** Gives up on the current attempt; the next one starts unless the failure may not be retried. */
  private abandon(kind: FailureKind, error: LlmProxyError, status?: number, retryAfter?: number): void {
    this.clearTimer()
    this.lastError = error
    const upstreamBody = this.upstreamBody
    this.upstreamBody = null
    if (upstreamBody !== null) {
      upstreamBody.off('error', this.onBodyError)
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

  private onFirstByteTimeout = (): void => {
    this.timer = null
    if (this.finished || this.committed) return
    const stalled = this.upstreamBody !== null
    this.controller?.abort()
    if (stalled) {
      // Headers came, the first token did not: a stall before the commit point can still move on.
      this.abandon('stall', errors.upstreamTimeout('The upstream stalled before the first token.'))
    }
    // Without headers, the abort surfaces through reply-from's onError as a timeout.
  }

  // ── streaming (the commit point is the first body chunk) ───────────────────────────────────

  private pipeThroughTap(body: Readable): void {
    const type = this.upstreamHeaders?.['content-type']
    this.sse = typeof type === 'string' && type.startsWith(SSE)
    this.extractor = new UsageExtractor(this.ctx.protocol)
    this.tap = new ResponseTap(this, this.sse && this.stripUsage)
    body.pipe(this.tap)
  }

  onChunk(chunk: Buffer): void {
    if (!this.committed) {
      this.ctx.firstTokenAt = performance.now()
      this.commit(this.upstreamStatus)
      this.clearTimer()
      this.timer = setTimeout(this.onIdleTimeout, this.settings.timeouts.idleMs)
    } else {
      ;(this.timer as NodeJS.Timeout).refresh()
    }
    ;(this.extractor as UsageExtractor).write(chunk)
    this.responseBytes += chunk.length
    if (this.sse) {
      let at = chunk.indexOf(DATA_FIELD)
      while (at !== -1) {
        this.dataEvents++
        at = chunk.indexOf(DATA_FIELD, at + DATA_FIELD.length)
      }
      if (!this.sawTerminator) {
        const terminators = this.endpoint.terminators
        for (let i = 0; i < terminators.length; i++) {
          if (chunk.indexOf(terminators[i] as Buffer) !== -1) this.sawTerminator = true
        }
      }
    }
  }

  onEnd(): Buffer | null {
    this.clearTimer()
    if (!this.committed) this.commit(this.upstreamStatus)
    if (!this.sse) return null
    if (this.streamError === null && !this.sawTerminator && this.endpoint.terminators.length > 0 && this.upstreamStatus === 200) {
      this.streamError = errors.upstreamFailed('The upstream ended the stream before it was complete.')
    }
    return this.streamError === null ? null : sseErrorEvent(this.streamError)
  }

  private commit(status: number): void {
    this.committed = true
    const reply = this.reply
    reply.code(status)
    const headers = this.upstreamHeaders
    if (headers !== null) reply.headers(clientResponseHeaders(headers, this.sse && this.stripUsage))
    if (this.sse) reply.header('cache-control', 'no-cache').header('x-accel-buffering', 'no')
    const lease = this.lease
    if (lease !== null) this.reportAttempt(lease, 'ok', status)
    if (this.tap !== null) reply.send(this.tap)
  }

  private onIdleTimeout = (): void => {
    this.timer = null
    this.upstreamBody?.destroy(errors.upstreamTimeout(`The upstream sent nothing for ${this.settings.timeouts.idleMs} ms.`))
  }

  private onBodyError = (err: Error): void => {
    if (this.finished) return
    if (!this.committed) {
      this.abandon('error', errors.upstreamFailed('The upstream connection failed before the first token.', { cause: err }))
      return
    }
    this.clearTimer()
    this.streamError =
      'statusCode' in err && 'type' in err
        ? (err as LlmProxyError)
        : errors.upstreamFailed('The upstream connection failed mid-stream.', { cause: err })
    const tap = this.tap
    if (tap === null) return
    if (this.sse) {
      // End the client's stream with an in-band error event (pushed by the tap's flush), no terminator.
      this.upstreamBody?.unpipe(tap)
      tap.end()
    } else {
      // A JSON body cannot carry an error once started: cut the connection so it cannot look complete.
      this.reply.raw.destroy()
    }
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

  private onClientClose = (): void => {
    const raw = this.reply.raw
    if (!raw.writableFinished) {
      this.ctx.clientAborted = true
      this.controller?.abort()
      this.upstreamBody?.destroy()
    }
    this.finish()
  }

  private finish(): void {
    if (this.finished) return
    this.finished = true
    this.clearTimer()
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
          : { ok: true, ...this.ttft() }
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
    if (this.tap === null || status < 200 || status >= 300) return
    const promptTokens = estimateTokensFromBytes(this.requestBytes)
    const completionTokens = this.sse
      ? Math.max(0, this.dataEvents - (this.sawTerminator ? 1 : 0))
      : estimateTokensFromBytes(this.responseBytes)
    ctx.usage = { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens }
    ctx.estimated = true
  }

  private ttft(): { ttftMs?: number } {
    const first = this.ctx.firstTokenAt
    return first === 0 ? {} : { ttftMs: first - this.attemptStartedAt }
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

  private clientSignal(): AbortSignal {
    this.controller ??= new AbortController()
    return this.controller.signal
  }

  private clearTimer(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
  }
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
