import '@fastify/reply-from'
import { type Attempt, buildUsageRecord, errors, type LlmContext, LlmProxyError } from '@llmproxy/core'
import { createEncoder, type EncoderOptions, type Endpoint, fromRecordUsage, type StreamEncoder, wireOf } from '@llmproxy/protocols'
import { type AttemptResult, holdsBack, type Lease } from '@llmproxy/upstreams'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { UpstreamAttempt } from './attempt.js'
import { ClientStream } from './client-stream.js'
import { Continuation } from './continuation.js'
import { StreamConverter } from './convert.js'
import type { CallHost } from './host.js'
import type { InFlightCall } from './in-flight.js'
import { UsageMeter } from './meter.js'
import type { ResolvedRoute } from './models.js'
import { AttemptPlanner, type FailureKind, type Plan, systemClock } from './planner.js'
import { setCall } from './reply-hooks.js'
import { ResumeTap } from './resume.js'
import { type ProxySettings, type RequestShape, servesEndpoint, type UpstreamRequest, upstreamRequest, wrongApiFor } from './shape.js'
import { EventAligner, type ResponseTransform } from './tap.js'

const SSE_TYPE = 'text/event-stream'

/**
 * One client request on its way through the pool, the fallbacks and the retries, then streaming: the attempt
 * planner says what to try, an UpstreamAttempt tries it, the ClientStream is what the client sees, the
 * UsageMeter counts. Until the first body byte is written to the client (the commit point) a failed attempt
 * moves on; after it, an upstream failure becomes an in-band error event and the stream ends without its
 * terminator — never a truncated answer that looks complete. Ends with one usage record.
 */
export class ProxyCall implements CallHost {
  readonly request: FastifyRequest
  readonly reply: FastifyReply
  readonly ctx: LlmContext
  readonly settings: ProxySettings
  readonly endpoint: Endpoint
  readonly planner: AttemptPlanner
  readonly client: ClientStream
  readonly meter = new UsageMeter()
  /** How answers converted from another API are rendered for this client. */
  readonly encoderOptions: EncoderOptions
  /** The content type of a converted stream for this client (a Gemini client without `alt=sse` gets a JSON array). */
  readonly clientStreamType: string
  /** Links in the router's list of calls in flight (InFlight). */
  prevInFlight: InFlightCall | null = null
  nextInFlight: InFlightCall | null = null
  /** The attempt in progress, or the last one. */
  attempt: UpstreamAttempt | null = null
  private readonly body: Record<string, unknown>
  private readonly shape: RequestShape
  /** The client's stream encoder, made by the first attempt on an upstream of another API; it outlives attempts. */
  private encoder: StreamEncoder | null = null
  /** A stream cut after its first byte, being finished on another upstream (null: none). */
  private continuation: Continuation | null = null
  private queueAbort: AbortController | null = null
  private waitTimer: NodeJS.Timeout | null = null
  /** Why a committed answer failed (null: it did not). */
  private streamError: LlmProxyError | null = null
  /** Why the last attempt's committed answer failed, when the client is told of an earlier cut (a continuation's). */
  private attemptFailure: LlmProxyError | null = null
  /** The upstream's own answer says it failed (Responses' `response.failed`): relayed as sent, recorded as a failure. */
  private answerFailed: LlmProxyError | null = null
  private finished = false
  /** The usage record went out. */
  private recorded = false

  constructor(
    request: FastifyRequest,
    reply: FastifyReply,
    settings: ProxySettings,
    route: ResolvedRoute,
    body: Record<string, unknown>,
    shape: RequestShape,
  ) {
    this.request = request
    this.reply = reply
    this.ctx = request.llm
    this.settings = settings
    this.endpoint = shape.endpoint
    this.body = body
    this.shape = shape
    const ctx = this.ctx
    ctx.clientApi = shape.endpoint.family
    this.planner = new AttemptPlanner(route, ctx.model ?? '', settings.retry, settings.retryOn, ctx.startedAt, systemClock, (next) =>
      servesEndpoint(next, shape.endpoint),
    )
    this.client = new ClientStream(
      reply,
      wireOf(shape.endpoint.family),
      settings.hooks.recordsKeptAtTurnEnd,
      settings.timeouts.clientStallMs,
    )
    this.encoderOptions = {
      model: ctx.model ?? '',
      includeUsage: shape.includeUsage,
      geminiSse: shape.geminiSse,
      reasoning: shape.reasoning,
    }
    this.clientStreamType = shape.endpoint.family === 'gemini' && !shape.geminiSse ? 'application/json' : SSE_TYPE
    setCall(request, this)
    settings.calls.add(this)
    reply.raw.on('close', () => this.onClientClose())
  }

  /** The gateway stops before this call ended: its client gets `error` (in band, for a stream under way). */
  abortWith(error: LlmProxyError): boolean {
    // An answer already ended (maybe still draining to a slow client) is whole: the connections' close takes it.
    if (this.finished || this.client.ended) return false
    const attempt = this.attempt
    attempt?.abort(error)
    // The gateway stopping says nothing about the upstream's health.
    if (attempt?.release({ ok: false, kind: 'aborted' })) this.reportAttempt(attempt, 'aborted', attempt.status)
    this.queueAbort?.abort()
    if (!this.client.committed) this.fail(error)
    else if (this.ctx.stream) {
      const transform = attempt?.transform ?? null
      this.endStreamWithError(error, transform, transform?.end(false) ?? null)
    } else this.onJsonFailed(error)
    return true
  }

  start(): void {
    // The client may have left while the request waited for the hooks before routing (an async limit, a slow app
    // hook): its response's `close` came before the listener above, which will never hear it. Without this, the
    // call would take an upstream and its lease for good.
    if (this.reply.raw.destroyed) {
      this.onClientClose()
      return
    }
    this.run(this.planner.next())
  }

  private run(plan: Plan): void {
    if (this.finished) {
      // A lease the pool's queue handed over after the client left.
      if (plan.type === 'attempt') plan.lease.release({ ok: false, kind: 'aborted' })
      return
    }
    switch (plan.type) {
      case 'attempt':
        this.startAttempt(plan.lease)
        break
      case 'queue': {
        this.queueAbort ??= new AbortController()
        const pool = this.planner.route.pool
        pool.acquire(this.planner.tried, this.queueAbort.signal, this.planner.route.upstreamModel).then(
          (lease: Lease | null) => this.run(lease === null && pool.retired ? this.rerouted() : this.planner.afterQueue(lease)),
          (err: unknown) => this.refusedByQueue(err as LlmProxyError),
        )
        break
      }
      case 'wait':
        this.waitTimer = setTimeout(retryLater, plan.delayMs, this)
        break
      case 'fail':
        this.fail(plan.error)
        break
    }
  }

  /**
   * A reload retired the pool the request was waiting in (it named a removed upstream). Waiting, the request has no
   * upstream: it goes to the pool its model has now, or, its model no longer served so, gets a new request's error.
   */
  private rerouted(): Plan {
    const model = this.ctx.model ?? ''
    const route = this.settings.route(model)
    if (route === undefined) return { type: 'fail', error: errors.modelNotFound(model) }
    if (!servesEndpoint(route, this.endpoint)) return { type: 'fail', error: wrongApiFor(model, route, this.endpoint) }
    return this.planner.reroute(route)
  }

  /** The pool's queue turned the request away (full, or no slot in time): an onReject `queue_full` too. */
  private refusedByQueue(error: LlmProxyError): void {
    const hooks = this.settings.hooks
    if (!this.finished && error.code === 'llmproxy_upstreams_busy' && hooks.hasListeners('onReject')) {
      hooks.emitReject({ reason: 'queue_full', keyId: this.ctx.keyId, statusCode: error.statusCode }, this.request)
    }
    this.fail(error)
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
    let next: UpstreamRequest
    try {
      next = upstreamRequest(this.shape, this.body, upstream, route.upstreamModel, ctx.stream, this.settings, this.continuation, () => {
        this.encoder ??= createEncoder(this.endpoint.family, this.encoderOptions)
        return this.encoder
      })
    } catch (err) {
      // The client's request cannot be said in this upstream's API: no upstream was asked anything. Anything else
      // thrown there is a bug (a converter's, a hook's change to the body): the client gets the internal error, not
      // a status-less error that would end the process when sent.
      lease.release({ ok: false, kind: 'aborted' })
      if (err instanceof LlmProxyError) this.fail(err)
      else {
        this.request.log.error({ err, upstream: upstream.name }, 'the upstream request could not be built')
        this.fail(errors.internal({ cause: err }))
      }
      return
    }
    const attempt = new UpstreamAttempt(this, lease, next.endpoint, next.transform, next.converted, next.prefill)
    const payload = next.payload
    this.meter.requestBytes = payload.length
    this.attempt = attempt
    const timeouts = this.settings.timeouts
    // The whole wait, however much of retry.budgetMs is left: the budget says whether an attempt starts, not how long
    // it may take (a non-streamed answer is generated before its first byte, often for minutes). Silence stays bounded:
    // no attempt starts past the budget, and each waits this long at most.
    attempt.start(upstream.url + next.path, payload, next.query, ctx.stream ? timeouts.firstTokenMs : timeouts.responseMs)
  }

  // ── what attempts report ───────────────────────────────────────────────────────────────────

  /** An attempt failed before the commit point: another one, a fallback, or the client gets the error. */
  onAttemptFailed(attempt: UpstreamAttempt, kind: FailureKind, error: LlmProxyError, status?: number, retryAfter?: number): void {
    // A stream that failed before any of it reached the client was generated all the same: what its upstream
    // reported counts (a converted stream whose first events gave the client nothing, then failed in band), and a
    // continuation's estimate (a replay cut before it got past the prefix the client has, which is dropped).
    const stream = attempt.stream
    if (stream !== null) this.meter.endAnswer(this.continuation !== null && stream.scanner.dataEvents > 0, stream.scanner)
    // So was a JSON answer refused whole (a failed generation, an answer the client's API cannot carry).
    else if (attempt.json !== null) this.meter.endAnswer(false, null)
    if (kind === 'prefill') {
      // Not the upstream failing: it takes no prefill. The next try there is a replay of the request.
      attempt.release({ ok: false, kind: 'aborted' })
      this.continuation?.refused(attempt.lease.upstream.name)
      this.planner.prefillRefused(attempt.lease.upstream.name)
      this.run(this.planner.next())
      return
    }
    const result = this.failedResult(kind, status, retryAfter)
    if (attempt.release(result)) {
      this.reportAttempt(attempt, kind === 'connect' ? 'connect_error' : kind, status)
      this.logFailedAttempt(attempt, kind, error, status)
    }
    if (this.finished) return
    const planner = this.planner
    // A 404 moved on from (the upstream does not serve the model on this route) is an answer, neutral for passive
    // health as other 4xx; the request goes on in this round only, if retry.on moves it on from a lost connection.
    const notServed = kind === 'status' && status === 404
    if (notServed) planner.notServed(error)
    // A 429, or a 503 saying when to come back, is waited out (up to retry.maxRetryAfterMs), not retried at once.
    else planner.failed(error, status !== undefined && holdsBack(status, retryAfter) ? (retryAfter ?? 0) : undefined)
    // A context-length 400 goes to the next fallback model (one with a larger context).
    if (kind === 'status' && status === 400) this.run(planner.nextFallback())
    else if (planner.retryable(notServed ? 'error' : kind, status)) this.run(planner.next())
    else this.fail(error)
  }

  /** A failed attempt for passive health: a 429 or a 503 with a Retry-After holds its upstream back, not fails it. */
  private failedResult(kind: AttemptResult['kind'], status?: number, retryAfter?: number): AttemptResult {
    const result: AttemptResult = { ok: false, kind, request: this }
    if (status !== undefined) result.status = status
    if (retryAfter !== undefined) result.retryAfterMs = retryAfter
    // A 429 holds the upstream back for this upstream model only (the planner still points at the attempt's route):
    // a fallback model on the same upstream may answer.
    if (status === 429) result.model = this.planner.route.upstreamModel
    return result
  }

  /** The request itself cannot be sent (undici refused to build it): no upstream is at fault, none is tried again. */
  onAttemptRefused(attempt: UpstreamAttempt, error: LlmProxyError): void {
    attempt.release({ ok: false, kind: 'aborted' })
    if (!this.finished) this.fail(error)
  }

  /** The attempt reached the commit point: no other attempt will answer (unless a continuation takes over). */
  onCommitted(): void {
    this.client.stopHeartbeat()
  }

  /** A continuation has the client's stream: it joins a stream already under way, not one held open for it. */
  get continuing(): boolean {
    return this.continuation !== null
  }

  /** A committed stream is over: complete (error null), or failed after the commit point. */
  onStreamEnd(attempt: UpstreamAttempt, failure: LlmProxyError | null): void {
    const scanner = attempt.stream?.scanner
    // A failure after the upstream's finish (cut before [DONE], kept open past the idle deadline) lost nothing of
    // the answer: it ends as complete.
    const transform = attempt.transform
    let error = failure !== null && scanner?.complete === true ? null : failure
    // A converted stream whose upstream sent its terminator but no finish was cut: the encoder would invent a
    // finish (an Anthropic client's end_turn), and a truncated answer would look complete.
    if (error === null && transform instanceof StreamConverter && transform.failure === null && !transform.finishedAtEnd()) {
      error = errors.upstreamFailed('The upstream ended its stream without finishing its answer.')
    }
    if (error !== null && this.continueAfter(attempt, error)) return
    const tail = transform?.end(error === null) ?? null
    // The converter's last events may fail there (an error event, a tool call the client's API cannot carry).
    if (error === null && transform instanceof StreamConverter && transform.failure !== null) {
      this.endStreamWithError(transform.failure, transform, tail)
      return
    }
    if (error === null) {
      if (scanner?.failedEnd === true)
        this.answerFailed = errors.upstreamFailed('The upstream reported the response failed (response.failed).')
      // A cut stream finished by another attempt.
      if (this.continuation !== null) this.ctx.resumed = true
      // A same-format stream finished without its terminator (servers that omit `[DONE]`): the client gets one.
      const closing = transform instanceof EventAligner ? this.endpoint.closing : ''
      if (closing !== '' && scanner !== undefined && !scanner.sawTerminator && scanner.sawFinish) this.endAnswer(`${tail ?? ''}${closing}`)
      else this.endAnswer(tail)
      return
    }
    const continuation = this.continuation
    if (continuation === null) this.endStreamWithError(error, transform, tail)
    else {
      // The client is told of the cut its continuation could not finish; the continuation's own line says why it failed.
      this.attemptFailure = error
      this.endStreamWithError(continuation.failure, transform, tail)
    }
  }

  private endStreamWithError(error: LlmProxyError, transform: ResponseTransform | null, tail: Buffer | string | null): void {
    this.streamError = error
    this.endInBand(error, transform, tail)
  }

  /**
   * The upstream's error answer to a stream held open for its first token (StreamRelay.holdOpen), the status the
   * client would have had: in band. It is the upstream's answer, as that status is (passive health reads its status).
   */
  endHeldOpen(error: LlmProxyError): void {
    this.answerFailed = error
    this.endInBand(error, null, null)
  }

  private endInBand(error: LlmProxyError, transform: ResponseTransform | null, tail: Buffer | string | null): void {
    // SSE clients get the client API's own error event; a Gemini JSON array needs its encoder's framing.
    const framed = this.clientStreamType === SSE_TYPE ? null : (transform?.errorEvent(error) ?? this.encoder?.error(error) ?? null)
    const client = this.client
    if (client.endsAfterRecord) this.record(client.status)
    client.endWithError(framed, error, tail)
    this.record(client.status)
  }

  /**
   * A stream failed after its first byte: when only text went to the client, the model allows it, and attempts and
   * budget remain, the planner picks the next upstream and a continuation takes over the client's stream.
   */
  private continueAfter(attempt: UpstreamAttempt, error: LlmProxyError): boolean {
    const stream = attempt.stream
    if (!this.planner.primaryResumes || this.ctx.clientAborted || stream === null || !this.planner.canRetry()) return false
    // The upstream reported the request itself refused (a 4xx but 429, in its error event): another upstream would
    // refuse it too, and bill its prompt again.
    const status = error.statusCode
    if (status >= 400 && status < 500 && status !== 429) return false
    const transform = attempt.transform
    let text: string
    let events: number
    if (transform instanceof StreamConverter) {
      if (!transform.continuable) return false
      text = transform.answerText()
      events = transform.textEvents
    } else {
      const point = stream.tap?.point() ?? null
      if (point === null) return false
      text = point.text
      events = point.events
      // The client's encoder takes over where the same-format stream stopped: its id, its open text block, and the
      // usage this part reported, which the usage the client sees at the end adds up with the continuation's.
      const options = { ...this.encoderOptions }
      if (point.id !== undefined) options.id = point.id
      if (point.model !== undefined) options.model = point.model
      const reported = this.meter.reader?.result() ?? null
      const resume = point.resume === undefined || reported === null ? point.resume : { ...point.resume, usage: fromRecordUsage(reported) }
      this.encoder = createEncoder(this.endpoint.family, options, resume)
    }
    // What it generated counts (billing truth), and it failed, as far as passive health is concerned (a replay
    // that did not match is no failure of the upstream's: it sampled differently).
    this.meter.endAnswer(true, stream.scanner)
    const mismatch = transform instanceof StreamConverter && transform.mismatch
    if (attempt.release(mismatch ? { ok: false, kind: 'aborted' } : { ok: false, kind: 'error', request: this })) {
      this.reportAttempt(attempt, 'error', attempt.status)
      this.logFailedAttempt(attempt, 'cut', error, undefined)
    }
    this.ctx.resumes++
    if (this.continuation === null) this.continuation = new Continuation(error, text, events, this.encoder as StreamEncoder)
    else this.continuation.extend(text, events)
    // While the next upstream is reached, the client's connection is kept alive (its format's heartbeat).
    this.client.startHeartbeat(this.continuation.encoder.keepAlive(), this.settings.timeouts.heartbeatMs)
    this.planner.failed(error)
    this.run(this.planner.next())
    return true
  }

  /** The resume tap for a same-format stream that may be continued if cut (null: it would not be). */
  resumeTapFor(attempt: UpstreamAttempt): ResumeTap | null {
    if (!this.planner.primaryResumes || !this.endpoint.convertible || this.continuation !== null) return null
    if (!(attempt.transform instanceof EventAligner)) return null
    // Several choices (`n`, `candidateCount`) interleave in one stream: a continuation goes on with one answer, from one
    // text. Such a stream cut ends with the in-band error.
    if (this.severalChoices) return null
    return new ResumeTap(this.endpoint.family)
  }

  /** The request asks for several choices (`n`, `candidateCount`): the encoders, the splice and the resume tap carry one. */
  get severalChoices(): boolean {
    return wireOf(this.endpoint.family).outputCap(this.body, this.endpoint.path).choices > 1
  }

  /** A committed JSON body failed: the connection is cut, so the answer cannot look complete. */
  onJsonFailed(error: LlmProxyError): void {
    this.streamError = error
    this.record(this.client.status)
    this.client.cut()
  }

  // ── the end ─────────────────────────────────────────────────────────────────────────────────

  private fail(error: LlmProxyError): void {
    if (this.finished) return
    if (this.client.committed) {
      // Nothing could continue a cut stream: it ends with the failure that cut it. A stream held open for its first
      // token (StreamRelay.holdOpen) ends with this one.
      if (!this.client.ended) this.endStreamWithError(this.continuation?.failure ?? error, null, null)
      return
    }
    this.clearWait()
    this.ctx.outcome = 'upstream_error'
    this.ctx.error = { code: error.code, message: error.message }
    this.record(error.statusCode)
    this.client.fail(error)
  }

  private onClientClose(): void {
    if (!this.client.finished) {
      this.ctx.clientAborted = true
      // The upstream failed in band before the client left (its usage was being read): the record keeps that failure.
      const failure = this.attempt?.stream?.failure ?? null
      if (failure !== null) this.streamError ??= failure
      this.attempt?.abort(errors.upstreamFailed('The client went away.'))
      this.queueAbort?.abort()
    }
    this.finish()
  }

  private finish(): void {
    if (this.finished) return
    this.finished = true
    this.clearWait()
    this.client.stopHeartbeat()
    setCall(this.request, null)
    this.settings.calls.remove(this)
    const ctx = this.ctx
    const status = this.client.status
    const attempt = this.attempt
    if (attempt !== null) {
      // An upstream that failed is counted so, whatever the client did after (it may leave during the usage grace,
      // or before the failure's end reached it). A client leaving says nothing about the upstream's health: 'aborted'
      // is neutral for passive checks. A 5xx passed on to the client (nowhere left to retry) is still the upstream failing;
      // a 429 passed on, or a 503 with a Retry-After, holds it back as when it is retried (failedResult).
      // A Responses answer ended by `response.failed` is the upstream's answer, often to the client's own input (an
      // image it cannot fetch, a refused prompt), as a 400 is: recorded as a failure, neutral for health. An error
      // answer sent in band (a stream held open) counts by the upstream's status, as when it is the client's.
      const answered = attempt.status >= 400 ? attempt.status : status
      const result: AttemptResult =
        this.streamError !== null
          ? { ok: false, kind: 'error', request: this }
          : ctx.clientAborted
            ? { ok: false, kind: 'aborted' }
            : answered >= 500 || answered === 429
              ? this.failedResult('status', answered, attempt.retryAfterMs)
              : ctx.firstTokenAt < attempt.startedAt
                ? { ok: true }
                : { ok: true, ttftMs: ctx.firstTokenAt - attempt.startedAt }
      // Reported when the attempt is over, as it ended: an answer cut after its first byte is no `ok`, nor is an
      // upstream's 5xx or 429 passed on to the client. A failed one has its warn line as every other failed attempt.
      if (attempt.release(result)) {
        const outcome = attemptOutcome(result, this.streamError, answered)
        this.reportAttempt(attempt, outcome, answered)
        if (outcome !== 'ok' && outcome !== 'aborted') {
          const failure = this.attemptFailure ?? this.streamError
          if (failure !== null) this.logFailedAttempt(attempt, 'cut', failure, undefined)
          else this.logFailedAttempt(attempt, 'status', null, answered)
        }
      }
    }
    this.record(status)
  }

  /**
   * The request's usage record, once: emitted in the same turn as the end of its answer, or when the client leaves
   * first. Right after the end is written (the end leaves at once: the client does not wait for the record's
   * listeners); or, when a listener keeps records at the turn's end (the usage spool), right before the end, which
   * then waits for the record to be kept (ClientStream.endsAfterRecord).
   */
  private record(status: number): void {
    if (this.recorded) return
    this.recorded = true
    const ctx = this.ctx
    ctx.endedAt = performance.now()
    const attempt = this.attempt
    if (attempt !== null) {
      // An answer that began (a stream held open for its first token has a 200 and no answer yet; a continuation's
      // replay may be generating the part the client has, which is dropped), or a JSON answer whose headers came and
      // whose body the client did not get (read whole, or not yet begun when it left): generated before its headers.
      const jsonNotSent = attempt.json !== null && !attempt.delivering && attempt.status >= 200 && attempt.status < 300
      const ok = (status >= 200 && status < 300 && (attempt.delivering || this.continuing)) || jsonNotSent
      this.meter.endAnswer(
        ok && this.endpoint.metered,
        attempt.stream?.scanner ?? null,
        ok && this.streamError === null && !ctx.clientAborted,
      )
    }
    const failure = this.streamError ?? this.answerFailed
    if (ctx.clientAborted) ctx.outcome = 'client_aborted'
    else if (ctx.outcome === 'pending') ctx.outcome = failure === null && status < 500 ? 'ok' : 'upstream_error'
    if (failure !== null && ctx.error === null) ctx.error = { code: failure.code, message: failure.message }
    ctx.usage = this.meter.total
    ctx.estimated = this.meter.estimated
    this.settings.hooks.emitUsage(buildUsageRecord(ctx, status), this.request)
  }

  /** A whole answer ends (a JSON body relayed to its end, or an answer the gateway held), and is recorded. */
  endAnswer(tail: Buffer | string | null = null): void {
    const client = this.client
    if (client.endsAfterRecord) this.record(client.status)
    client.end(tail)
    this.record(client.status)
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
    // (The request's first token came from this attempt, not an earlier one a continuation took over from.)
    if (this.ctx.firstTokenAt >= attempt.startedAt) report.ttftMs = this.ctx.firstTokenAt - attempt.startedAt
    hooks.emitAttempt(report, this.request)
  }

  /**
   * The warn line of an attempt that failed (the request's own line names only the upstream that answered last):
   * which upstream, how it failed, its status or error.
   */
  private logFailedAttempt(
    attempt: UpstreamAttempt,
    failure: FailureKind | 'cut',
    error: LlmProxyError | null,
    status: number | undefined,
  ): void {
    // The cause's code says what no message of ours does (a TLS verification failure, a DNS error). No error: the
    // upstream's own error answer, passed on to the client.
    const cause = (error?.cause as { code?: unknown } | undefined)?.code
    this.request.log.warn(
      { upstream: attempt.lease.upstream.name, failure, status, error: error?.code, cause, message: error?.message },
      'upstream attempt failed',
    )
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

/** The `onAttempt` result of an attempt that ended as `result` (the request's final one). */
function attemptOutcome(result: AttemptResult, streamError: LlmProxyError | null, status: number): Attempt['result'] {
  if (!result.ok) {
    if (result.kind === 'aborted') return 'aborted'
    if (result.kind === 'status') return 'status'
    return streamError?.code === 'llmproxy_upstream_timeout' ? 'timeout' : 'error'
  }
  return status === 429 ? 'status' : 'ok'
}
