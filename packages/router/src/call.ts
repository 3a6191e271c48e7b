import '@fastify/reply-from'
import { type Attempt, buildUsageRecord, errors, type LlmContext, type LlmHookRegistry, type LlmProxyError } from '@llmproxy/core'
import { type Endpoint, wireOf } from '@llmproxy/protocols'
import type { AttemptResult, Lease } from '@llmproxy/upstreams'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { UpstreamAttempt } from './attempt.js'
import { ClientStream } from './client-stream.js'
import type { UpstreamDispatcher } from './dispatcher.js'
import { UsageMeter } from './meter.js'
import type { ResolvedRoute } from './models.js'
import type { Retry, RetryOn, Timeouts } from './options.js'
import { AttemptPlanner, type FailureKind, type Plan } from './planner.js'
import { setCall } from './reply-hooks.js'
import { type ResponseTransform, UsageEventFilter } from './tap.js'

/** Shared, per-router state of every call. */
export interface ProxySettings {
  readonly dispatcher: UpstreamDispatcher
  readonly hooks: LlmHookRegistry
  readonly timeouts: Timeouts
  readonly retry: Retry
  readonly retryOn: ReadonlySet<RetryOn>
}

/**
 * One client request on its way through the pool, the fallbacks and the retries, then streaming: the attempt
 * planner says what to try, an UpstreamAttempt tries it, the ClientStream is what the client sees, the
 * UsageMeter counts. Until the first body byte is written to the client (the commit point) a failed attempt
 * moves on; after it, an upstream failure becomes an in-band error event and the stream ends without its
 * terminator — never a truncated answer that looks complete. Ends with one usage record.
 */
export class ProxyCall {
  readonly request: FastifyRequest
  readonly reply: FastifyReply
  readonly ctx: LlmContext
  readonly settings: ProxySettings
  readonly endpoint: Endpoint
  readonly planner: AttemptPlanner
  readonly client: ClientStream
  readonly meter = new UsageMeter()
  /** The transform slot of the response path: null passes the upstream's bytes untouched. */
  readonly transform: ResponseTransform | null
  /** The attempt in progress, or the last one. */
  attempt: UpstreamAttempt | null = null
  private readonly body: Record<string, unknown>
  /** Gemini's `generateContent` / `streamGenerateContent` (from the URL); '' elsewhere. */
  private readonly action: string
  private queueAbort: AbortController | null = null
  private waitTimer: NodeJS.Timeout | null = null
  /** Why a committed answer failed (null: it did not). */
  private streamError: LlmProxyError | null = null
  private finished = false

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
    this.body = body
    this.action = action
    this.planner = new AttemptPlanner(route, this.ctx.model ?? '', settings.retry, settings.retryOn, this.ctx.startedAt)
    this.client = new ClientStream(reply, wireOf(endpoint.family))
    this.transform = stripUsage ? new UsageEventFilter() : null
    setCall(request, this)
    reply.raw.on('close', () => this.onClientClose())
  }

  start(): void {
    this.run(this.planner.next())
  }

  private run(plan: Plan): void {
    if (this.finished) return
    switch (plan.type) {
      case 'attempt':
        this.startAttempt(plan.lease)
        break
      case 'queue':
        this.queueAbort ??= new AbortController()
        this.planner.route.pool.acquire(this.planner.tried, this.queueAbort.signal).then(
          (lease: Lease | null) => this.run(this.planner.afterQueue(lease)),
          (err: unknown) => this.fail(err as LlmProxyError),
        )
        break
      case 'wait':
        this.waitTimer = setTimeout(retryLater, plan.delayMs, this)
        break
      case 'fail':
        this.fail(plan.error)
        break
    }
  }

  retry(): void {
    this.waitTimer = null
    this.run(this.planner.next())
  }

  private startAttempt(lease: Lease): void {
    if (this.finished) {
      lease.release({ ok: false, kind: 'aborted' })
      return
    }
    const upstream = lease.upstream
    const route = this.planner.route
    const ctx = this.ctx
    ctx.attempts = this.planner.attempts
    ctx.upstream = upstream.name
    ctx.upstreamModel = route.upstreamModel
    ctx.protocol = upstream.protocol
    const endpoint = this.endpoint
    if (endpoint.modelInBody) this.body.model = route.upstreamModel
    const payload = JSON.stringify(this.body)
    this.meter.requestBytes = payload.length
    const attempt = new UpstreamAttempt(this, lease)
    this.attempt = attempt
    const timeouts = this.settings.timeouts
    // The total budget bounds the wait for the first byte too, so a silent upstream costs no more than it.
    const budgetLeft = this.settings.retry.budgetMs - (attempt.startedAt - ctx.startedAt)
    const firstByteMs = Math.max(1, Math.min(ctx.stream ? timeouts.firstTokenMs : timeouts.responseMs, budgetLeft))
    attempt.start(upstream.url + endpoint.upstreamPath(route.upstreamModel, this.action), payload, endpoint.queryString, firstByteMs)
  }

  // ── what attempts report ───────────────────────────────────────────────────────────────────

  /** An attempt failed before the commit point: another one, a fallback, or the client gets the error. */
  onAttemptFailed(attempt: UpstreamAttempt, kind: FailureKind, error: LlmProxyError, status?: number, retryAfter?: number): void {
    const result: AttemptResult = { ok: false, kind, request: this }
    if (status !== undefined) result.status = status
    if (retryAfter !== undefined) result.retryAfterMs = retryAfter
    if (attempt.release(result)) this.reportAttempt(attempt, kind === 'connect' ? 'connect_error' : kind, status)
    if (this.finished) return
    const planner = this.planner
    planner.failed(error, status === 429 ? (retryAfter ?? 0) : undefined)
    // A context-length 400 goes to the next fallback model (one with a larger context).
    if (kind === 'status' && status === 400) this.run(planner.nextFallback())
    else if (planner.retryable(kind, status)) this.run(planner.next())
    else this.fail(error)
  }

  /** The attempt reached the commit point: it succeeded, as far as failover is concerned. */
  onCommitted(attempt: UpstreamAttempt): void {
    this.reportAttempt(attempt, 'ok', attempt.status)
  }

  /** A committed stream is over: complete (error null), or failed after the commit point. */
  onStreamEnd(_attempt: UpstreamAttempt, error: LlmProxyError | null): void {
    const held = this.transform?.flush() ?? null
    if (error === null) {
      this.client.end(held)
      return
    }
    this.streamError = error
    this.client.endWithError(error, held)
  }

  /** A committed JSON body failed: the connection is cut, so the answer cannot look complete. */
  onJsonFailed(error: LlmProxyError): void {
    this.streamError = error
    this.client.cut()
  }

  // ── the end ─────────────────────────────────────────────────────────────────────────────────

  private fail(error: LlmProxyError): void {
    if (this.finished || this.client.committed) return
    this.clearWait()
    this.ctx.outcome = 'upstream_error'
    this.ctx.error = { code: error.code, message: error.message }
    this.client.fail(error)
  }

  private onClientClose(): void {
    if (!this.client.finished) {
      this.ctx.clientAborted = true
      this.attempt?.abort(errors.upstreamFailed('The client went away.'))
      this.queueAbort?.abort()
    }
    this.finish()
  }

  private finish(): void {
    if (this.finished) return
    this.finished = true
    this.clearWait()
    setCall(this.request, null)
    const ctx = this.ctx
    ctx.endedAt = performance.now()
    const status = this.client.status
    const attempt = this.attempt
    if (attempt !== null) {
      // A client leaving says nothing about the upstream's health: 'aborted' is neutral for passive checks.
      // A 5xx passed on to the client (nowhere left to retry) is still the upstream failing.
      const result: AttemptResult = ctx.clientAborted
        ? { ok: false, kind: 'aborted' }
        : this.streamError !== null
          ? { ok: false, kind: 'error', request: this }
          : status >= 500
            ? { ok: false, kind: 'status', status, request: this }
            : ctx.firstTokenAt === 0
              ? { ok: true }
              : { ok: true, ttftMs: ctx.firstTokenAt - attempt.startedAt }
      attempt.release(result)
      this.meter.endAnswer(status >= 200 && status < 300, attempt.scanner)
    }
    if (ctx.clientAborted) ctx.outcome = 'client_aborted'
    else if (ctx.outcome === 'pending') ctx.outcome = this.streamError === null && status < 500 ? 'ok' : 'upstream_error'
    if (this.streamError !== null && ctx.error === null) ctx.error = { code: this.streamError.code, message: this.streamError.message }
    ctx.usage = this.meter.total
    ctx.estimated = this.meter.estimated
    this.settings.hooks.emitUsage(buildUsageRecord(ctx, status), this.request)
  }

  private reportAttempt(attempt: UpstreamAttempt, result: Attempt['result'], status: number | undefined): void {
    const hooks = this.settings.hooks
    if (!hooks.hasListeners('onAttempt')) return
    const report: Attempt = {
      upstream: attempt.lease.upstream.name,
      upstreamModel: this.planner.route.upstreamModel,
      result,
      durationMs: performance.now() - attempt.startedAt,
    }
    if (status !== undefined) report.status = status
    if (this.ctx.firstTokenAt !== 0) report.ttftMs = this.ctx.firstTokenAt - attempt.startedAt
    hooks.emitAttempt(report, this.request)
  }

  private clearWait(): void {
    if (this.waitTimer !== null) {
      clearTimeout(this.waitTimer)
      this.waitTimer = null
    }
  }
}

/** The timer callback of a backoff (no per-request closure: the call travels as the timer argument). */
function retryLater(call: ProxyCall): void {
  call.retry()
}
