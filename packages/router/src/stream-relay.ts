import type { OutgoingHttpHeaders } from 'node:http'
import { errors, type LlmProxyError } from '@llmproxy/core'
import type { UsageExtractor } from '@llmproxy/protocols'
import { StreamConverter } from './convert.js'
import type { AttemptView, CallHost } from './host.js'
import { keepAlivesOnly, terminatorFirst } from './keep-alives.js'
import { LineEnds } from './line-ends.js'
import type { ResumeTap } from './resume.js'
import { StreamScanner, type UpstreamErrorEvent } from './scanner.js'
import { EventAligner } from './tap.js'
import type { UpstreamBody } from './upstream-response.js'

/** How long an upstream may take to end its response after its stream's terminator before it is released. */
const TERMINATOR_GRACE_MS = 1000
/**
 * How long a stream that failed in band is read on, for the usage tap only, before the call decides what comes
 * next: vLLM sends its usage chunk right after a `finish_reason: "abort"` or an error event, an OpenAI upstream after
 * the tool call the client's API cannot carry. Bounded, since the client waits for it (a replay that went another
 * way may still be generating).
 */
const USAGE_GRACE_MS = 1000

/** A stream that ended with no answer event: its terminator alone, or a converted one's without a finish. */
const noAnswerError = () => errors.upstreamFailed('The upstream ended its stream without an answer.')

/**
 * One attempt's SSE answer on its way to the client, chunk by chunk, never held: the first chunk of the answer
 * commits (keep-alives before it hold the stream open instead; a continuation joins a stream already committed), the
 * scanner and the usage tap read each chunk beside it, the transform slot converts or filters it, the idle deadline
 * watches the gaps. It ends at the terminator, at a clean end after a finish, or with a failure the call decides
 * about (an in-band error, or a continuation).
 */
export class StreamRelay {
  readonly scanner: StreamScanner
  /** The upstream's line ends, made what the scanner, the tap and the client read (lone CRs become LFs). */
  private readonly lineEnds = new LineEnds()
  /** Beside a same-format stream that may be continued: keeps its text (converted streams keep it themselves). */
  readonly tap: ResumeTap | null
  private readonly attempt: AttemptView
  private readonly call: CallHost
  private readonly body: UpstreamBody
  /** The client's response headers, prepared while the upstream generates its first token. */
  private readonly headers: OutgoingHttpHeaders
  private timer: NodeJS.Timeout | null = null
  private lastChunkAt = 0
  /** When the client last got bytes of this stream (the time of the upstream chunk they came from). */
  private lastOutputAt = 0
  /** The in-band failure the stream ends with once the upstream's usage after it is read (null: none). */
  private failing: LlmProxyError | null = null
  /** The error event the stream opened with, acted on once the usage after it is read (null: none). */
  private failedFirst: UpstreamErrorEvent | null = null
  private ended = false
  /**
   * A terminator that does not end the stream came (Gemini's finishReason), and the upstream's output count with or
   * after it (a late usage report is part of the answer): the upstream's silence is then bounded by
   * TERMINATOR_GRACE_MS, not idleMs, and ends the answer whole.
   */
  private afterTerminator = false

  constructor(attempt: AttemptView, call: CallHost, body: UpstreamBody, reader: UsageExtractor, tap: ResumeTap | null) {
    this.attempt = attempt
    this.call = call
    this.body = body
    this.tap = tap
    this.scanner = new StreamScanner(attempt.endpoint, reader)
    this.headers = call.client.streamHeaders(attempt.headers)
    if (attempt.transform !== null && attempt.converted !== null) this.headers['content-type'] = call.clientStreamType
    body.on('data', (chunk: Buffer) => this.onChunk(chunk))
    body.once('end', () => this.onEnd())
  }

  private onChunk(upstreamChunk: Buffer): void {
    const chunk = this.lineEnds.normalize(upstreamChunk)
    if (this.attempt.delivering) {
      // A timestamp per chunk, not a timer update: the idle timer checks it when it fires.
      this.lastChunkAt = performance.now()
      this.relay(chunk)
      return
    }
    // Before its first byte reaches the client: the first token is written (with the commit, in `pass`) before any
    // bookkeeping. Node sends it at the end of the tick, with whatever else came in the same read: one write for a
    // burst of events (uncorking at once cost a system call per such stream for ~0.1 ms of first byte; a stream that
    // ends in that read is sent by its end, before the usage record's listeners run).
    const now = performance.now()
    const attempt = this.attempt
    this.lastChunkAt = now
    this.relay(chunk)
    // No answer went out yet (keep-alives, or an incomplete first event, held; or an error event the attempt failed on).
    if (!attempt.delivering) return
    const call = this.call
    // (Unless the stream already ended in this chunk and the call moved on to a continuation.)
    if (call.attempt === attempt) call.onCommitted()
    attempt.clearDeadline()
    // (Nor when it failed in this chunk: its usage is being read, under USAGE_GRACE_MS.)
    // (Nor when its terminator came in this chunk: its own timer is set.)
    if (this.ended || this.failing !== null || this.afterTerminator) return
    this.timer = setTimeout(idleTimeout, call.settings.timeouts.idleMs, this)
  }

  /** Passes one chunk to the client, with the scanner, the usage tap and the resume tap beside it. */
  private relay(chunk: Buffer): void {
    const scanner = this.scanner
    if (!scanner.scan(chunk)) {
      // Malformed upstream data after the commit point: stop here.
      this.end(errors.upstreamFailed('The upstream sent malformed data.'))
      return
    }
    if (scanner.errorAt !== -1) {
      // The upstream failed inside its stream: what came before its error event goes out, the event itself does not
      // (the call ends the stream with an error in the client's format, or continues it elsewhere). An error as the
      // very first event is a failure before the commit point: another attempt can answer instead.
      if (scanner.errorAt > 0) {
        this.pass(chunk.subarray(0, scanner.errorAt))
        if (this.ended) return
      }
      // The event and the rest of the chunk go to the usage tap alone: a report may be in it or follow it (vLLM's
      // usage chunk comes after its finish_reason abort).
      const meter = this.call.meter
      meter.reader?.write(chunk, scanner.errorAt)
      meter.responseBytes += chunk.length - scanner.errorAt
      if (!this.attempt.delivering) {
        // Nothing reached the client before it (at most comments, or an event still incomplete): another attempt can
        // answer, once the usage the upstream sends after its error is read (vLLM writes its usage chunk apart).
        const event = scanner.errorEvent(chunk)
        this.failedFirst = event
        this.endAfterUsage(event.error)
        return
      }
      // The in-band error says what the upstream reported (an Anthropic client reads overloaded_error as it was sent).
      this.endAfterUsage(scanner.upstreamError(chunk))
      return
    }
    this.pass(chunk)
  }

  /** The chunk (scanned) to the client through the transform slot, then the taps. */
  private pass(chunk: Buffer): void {
    const call = this.call
    const scanner = this.scanner
    // The chunk goes out first; the taps read it after (the usage filter finds the usage-only event by its shape).
    const transform = this.attempt.transform
    const out = transform === null ? chunk : transform.push(chunk, scanner.tapFrom)
    const noAnswer = out !== null && this.endsWithoutAnswer(out)
    if (out !== null && !noAnswer) this.deliver(out)
    const meter = call.meter
    const reader = meter.reader
    // (Whether this chunk brings a usage report: see UsageMeter.reportedAtTerminator.)
    const reportsBefore = reader === null ? 0 : reader.reports
    // Read before a failure in it is acted on: the chunk that fails may carry the upstream's usage (Gemini's
    // MALFORMED_FUNCTION_CALL does).
    if (scanner.tapFrom < chunk.length) reader?.write(chunk, scanner.tapFrom)
    meter.responseBytes += chunk.length
    if (noAnswer) {
      // (Its usage read: a usage-only event before the terminator, which a filter kept from the client.)
      this.end(noAnswerError())
      return
    }
    if (transform?.failure != null) {
      // The upstream reported a failure inside its stream (an error event, a malformed function call). It ends the
      // generation as a terminator does: a count reported with it (Gemini's MALFORMED_FUNCTION_CALL is a finishReason
      // that carries one) or after it is the answer's, not a running one.
      meter.terminatorCame(reportsBefore)
      this.endAfterUsage(transform.failure)
      return
    }
    // A converted chunk that gave the client nothing: upstream pings, reasoning the client did not ask for.
    if (out === null && transform instanceof StreamConverter && this.attempt.delivering) this.keepAwake(transform)
    // A same-format stream's end is looked for in the whole events that went out, not in an event still held: a
    // finish or terminator in an event then cut did not reach the client.
    if (!(transform instanceof EventAligner)) scanner.checkEnd(chunk)
    else if (typeof out === 'object' && out !== null) scanner.checkEnd(out)
    if (scanner.sawTerminator && scanner.atEventEnd && !this.afterTerminator) {
      if (this.attempt.endpoint.endsAtTerminator) this.endAtTerminator()
      else this.awaitEnd(reportsBefore)
    }
  }

  /**
   * A terminator that does not end the stream came, and the usage: the upstream's response should end soon. One that
   * stays silent for TERMINATOR_GRACE_MS instead (kept open) ends the client's answer then, whole, not after idleMs as
   * a failure.
   */
  private awaitEnd(reportsBefore: number): void {
    if (this.ended) return
    const meter = this.call.meter
    meter.terminatorCame(reportsBefore)
    // The output count that closes the answer is one reported with the terminator's chunk or after it: Gemini 2.x
    // reports a running count on every chunk, and its last may come in an event after the finishReason.
    const reader = meter.reader
    if (reader === null || !meter.reportedAtTerminator || reader.missingCompletion) return
    this.afterTerminator = true
    this.clearTimer()
    this.timer = setTimeout(idleTimeout, TERMINATOR_GRACE_MS, this)
  }

  /**
   * Bytes to the client (the first of the answer commit), and to the resume tap, which reads what the client got.
   * The upstream's keep-alives before its first event (OpenRouter's `: OPENROUTER PROCESSING`, a gateway's pings in
   * front of it) are no part of the answer: they go out and hold the client's stream open, as the gateway's heartbeat
   * does (holdOpen), and until the first event a failure is one before the answer (retried, or its error in band with
   * its status), not a cut.
   */
  private deliver(out: Buffer | string): void {
    if (!this.attempt.delivering) {
      if (typeof out !== 'string' && !this.call.continuing && keepAlivesOnly(out)) {
        if (!this.call.client.committed) this.holdOpen(false)
        this.call.client.write(out, this.body)
        return
      }
      this.commit()
    }
    this.lastOutputAt = this.lastChunkAt
    this.call.client.write(out, this.body)
    if (this.tap !== null && typeof out !== 'string') this.tap.push(out)
  }

  /**
   * What would go out first is a terminator that carries nothing (`[DONE]` after keep-alives at most): the stream had
   * no answer, a failure before the first token (another attempt may answer), not an empty answer to relay.
   */
  private endsWithoutAnswer(out: Buffer | string): boolean {
    // (A continuation's transform is a converter, whose output is a string: it never gets here.)
    return typeof out !== 'string' && !this.attempt.delivering && terminatorFirst(out, this.attempt.endpoint)
  }

  /**
   * The client has had nothing of this converted stream for `timeouts.heartbeatMs` while its upstream streams what the
   * client does not see: it gets its format's heartbeat, so that a proxy's idle timeout (nginx: 60 s) does not cut a
   * stream that is alive, as a same-format client gets the upstream's own bytes. Checked per such chunk: no timer.
   */
  private keepAwake(converter: StreamConverter): void {
    const everyMs = this.call.settings.timeouts.heartbeatMs
    if (everyMs === 0 || this.lastChunkAt - this.lastOutputAt < everyMs) return
    this.lastOutputAt = this.lastChunkAt
    this.call.client.write(converter.keepAlive(), this.body)
  }

  /**
   * The upstream's stream has opened and nothing of its answer has come for `timeouts.heartbeatMs`: the client's
   * stream opens now, with its format's heartbeat until the first token, so that a proxy in front does not cut a
   * prefill or a reasoning model's silence. Another attempt may still answer (its first token joins this stream); a
   * failure no attempt recovers from ends it with an in-band error. `beatNow` false: the upstream's own comment opens
   * it.
   */
  holdOpen(beatNow = true): void {
    const call = this.call
    const transform = this.attempt.transform
    call.client.commitStream(this.attempt.status, this.headers)
    const beat = transform instanceof StreamConverter ? transform.keepAlive() : call.client.wire.streamKeepAlive
    call.client.startHeartbeat(beat, call.settings.timeouts.heartbeatMs, beatNow)
  }

  /**
   * The stream failed in band: nothing more reaches the client, but the upstream's usage report may still
   * follow, so its body is read on for the usage tap alone, to its end or for USAGE_GRACE_MS, before the stream ends.
   */
  private endAfterUsage(failure: LlmProxyError): void {
    this.failing = failure
    this.clearTimer()
    // (Before the first byte, its own bound replaces the first-byte deadline and the heartbeat's look: the failure is in.)
    this.attempt.clearDeadline()
    const body = this.body
    body.removeAllListeners('data')
    body.on('data', (chunk: Buffer) => this.readUsage(chunk))
    this.timer = setTimeout(usageGraceOver, USAGE_GRACE_MS, this)
  }

  /**
   * A chunk after the in-band failure: to the usage tap alone, not to the scanner. Its events are no part of the
   * answer (the estimate, one token per data event, stops at the failure; a `[DONE]` after it is no token either).
   */
  private readUsage(upstreamChunk: Buffer): void {
    const chunk = this.lineEnds.normalize(upstreamChunk)
    const meter = this.call.meter
    // Whole: the scan that found the failure stopped there, so where this chunk's lines start is not known for sure.
    meter.reader?.write(chunk, 0)
    meter.responseBytes += chunk.length
  }

  /** The upstream body is over (`ended`: cleanly): a same-format event it left unfinished goes out when whole (`flush`). */
  private flushHeld(ended: boolean): void {
    const transform = this.attempt.transform
    if (!(transform instanceof EventAligner)) return
    const out = transform.flush(ended)
    if (out === null) return
    if (this.endsWithoutAnswer(out)) {
      this.end(noAnswerError())
      return
    }
    const committing = !this.attempt.delivering
    this.deliver(out)
    if (ended) this.scanner.endLine()
    this.scanner.checkEnd(out)
    if (committing && this.attempt.delivering) this.call.onCommitted()
  }

  /**
   * The stream ends before any of it reached the client: an empty answer commits now (true). A continuation's (the
   * client has part of the answer already) failed to give anything, and a converted stream that ended without its
   * finish (`[DONE]` alone) had no answer: another attempt may take over (false).
   */
  private commitAtEnd(): boolean {
    const attempt = this.attempt
    if (attempt.delivering) return true
    if (this.call.continuing) {
      attempt.failBeforeAnswer(errors.upstreamFailed('The upstream ended its stream before the first token.'))
      return false
    }
    const transform = attempt.transform
    if (transform instanceof StreamConverter && transform.failure === null && !transform.finishedAtEnd()) {
      attempt.failBeforeAnswer(noAnswerError())
      return false
    }
    this.commit()
    this.call.onCommitted()
    return true
  }

  /**
   * The attempt's first bytes go to the client: the commit point, unless its stream is open already (a continuation
   * joins it, or it was held open for the first token).
   */
  private commit(): void {
    const call = this.call
    const client = call.client
    if (!client.committed) client.commitStream(this.attempt.status, this.headers)
    this.attempt.delivering = true
    // The request's first token, when its chunk came (set here: a stream may end in its first chunk, recorded before
    // the chunk's handling returns).
    if (call.ctx.firstTokenAt === 0) call.ctx.firstTokenAt = this.lastChunkAt
  }

  /**
   * The terminator's event is complete: the client's response ends now. The upstream gets a moment to end its
   * own (its connection stays reusable); one that keeps it open is released after TERMINATOR_GRACE_MS.
   */
  private endAtTerminator(): void {
    // (A converted stream whose events gave the client nothing, its terminator the first sign of its end.)
    if (!this.commitAtEnd()) return
    this.ended = true
    this.clearTimer()
    // The rest of the upstream's body is read and dropped: without a 'data' listener the body would stop flowing, its
    // end would never come, and every stream would wait out the grace timer (holding its objects for a second).
    this.body.removeAllListeners('data')
    this.body.on('data', noop)
    this.attempt.settle()
    this.call.onStreamEnd(this.attempt, null)
    this.timer = setTimeout(releaseUpstream, TERMINATOR_GRACE_MS, this)
  }

  /** The upstream kept its response open after the terminator: drop it. */
  releaseUpstream(): void {
    this.timer = null
    this.body.on('error', noop)
    this.body.destroy()
  }

  private onEnd(): void {
    if (this.ended) {
      // After the terminator: the upstream ended its response on its own.
      this.clearTimer()
      return
    }
    if (this.failing !== null) {
      // Its usage, if any came after the failure, is read.
      this.end(null)
      return
    }
    this.flushHeld(true)
    if (this.ended) return
    const attempt = this.attempt
    const complete = this.scanner.complete || attempt.endpoint.terminators.length === 0 || attempt.status !== 200
    // Nothing of an answer came (at most keep-alives, held): a failure before the first token, not a cut answer.
    if (!complete && !attempt.delivering) {
      attempt.failBeforeAnswer(errors.upstreamFailed('The upstream ended its stream before the first token.'))
      return
    }
    // An empty answer (a converted stream that gave the client nothing) commits at its end; a continuation's gave none.
    if (!this.commitAtEnd()) return
    this.end(complete ? null : errors.upstreamFailed('The upstream ended the stream before it was complete.'))
  }

  /**
   * The stream is over: complete (error null), or failed — after the commit point, or before it when nothing reached
   * the client yet (then another attempt can answer, with the stream's own headers, or the client gets the error's
   * status). A stream that failed in band ends with that failure.
   */
  end(error: LlmProxyError | null): void {
    if (this.ended) return
    this.ended = true
    this.clearTimer()
    if (this.failing !== null) error = this.failing
    if (error !== null && !this.attempt.delivering) {
      const event = this.failedFirst
      // An error event first is the error the upstream would have answered before its stream (its status kept).
      if (event !== null) this.attempt.failedAtStart(event)
      else this.attempt.failBeforeAnswer(error)
      return
    }
    this.flushHeld(false)
    if (error !== null) {
      this.body.removeAllListeners('data')
      this.body.on('error', noop)
      this.body.destroy()
    }
    this.attempt.settle()
    this.call.onStreamEnd(this.attempt, error)
  }

  /**
   * The in-band failure the stream ends with, while the upstream's usage after it is read (null: none, or an error
   * event first: an answer the upstream gave, a 400 as well as a 503, judged when it is acted on).
   */
  get failure(): LlmProxyError | null {
    return this.failedFirst === null ? this.failing : null
  }

  /** It failed in band and reads on for the usage after the failure (endAfterUsage). */
  get readingUsage(): boolean {
    return this.failing !== null && !this.ended
  }

  /** The attempt was abandoned (the client left): nothing more is relayed. */
  stop(): void {
    this.ended = true
    this.clearTimer()
  }

  onIdleTimeout(): void {
    const idleMs = this.call.settings.timeouts.idleMs
    const quietMs = this.afterTerminator ? TERMINATOR_GRACE_MS : idleMs
    const now = performance.now()
    // A body paused for a slow client is not a silent upstream: the silence counts from when it resumes.
    if (this.body.isPaused()) this.lastChunkAt = now
    const quietFor = now - this.lastChunkAt
    if (quietFor < quietMs) {
      this.timer = setTimeout(idleTimeout, quietMs - quietFor, this)
      return
    }
    this.timer = null
    if (this.afterTerminator) {
      this.endAtTerminator()
      return
    }
    this.body.destroy(errors.upstreamTimeout(`The upstream sent nothing for ${idleMs} ms.`))
  }

  private clearTimer(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
  }
}

// Timer callbacks shared by every relay (no per-stream closures): the relay travels as the timer argument.
function idleTimeout(relay: StreamRelay): void {
  relay.onIdleTimeout()
}

function releaseUpstream(relay: StreamRelay): void {
  relay.releaseUpstream()
}

function usageGraceOver(relay: StreamRelay): void {
  relay.end(null)
}

function noop(): void {}
