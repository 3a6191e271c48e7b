import { errors, type LlmProxyError } from '@llmproxy/core'
import { createEncoder, type UsageExtractor } from '@llmproxy/protocols'
import { convertedAnswer, streamedAnswer } from './convert.js'
import type { AttemptView, CallHost } from './host.js'
import type { UsageMeter } from './meter.js'
import type { UpstreamBody } from './upstream-response.js'

/** A non-streamed answer converted to another API, or to a stream, is held whole; one larger than this is refused. */
const MAX_ANSWER_BYTES = 32 * 1024 * 1024

/**
 * One attempt's JSON (non-SSE) answer on its way to the client. A JSON answer is ready when its headers come
 * (generation happened before them): it is relayed as it arrives, committed at its first byte; responseMs bounds its
 * start, idleMs each silence after it (bodyFlowing). An answer converted to another API, or to the client's stream (a
 * whole answer to a streamed request), is held whole instead.
 *
 * The deadline stays the attempt's one timer (settle and abort clear it, whoever armed it): once the body flows the
 * relay has it re-armed as its idle bound (armDeadline) and the attempt hands its expiry here (onIdle). So an answer
 * whole in its first chunk (most) makes no timer of its own.
 */
export class JsonRelay {
  /** Its body's first chunk came: idleMs bounds its silences from then on (the attempt's deadline calls onIdle). */
  flowing = false
  private readonly attempt: AttemptView
  private readonly call: CallHost
  private readonly body: UpstreamBody
  /** When the last chunk of its body came. */
  private lastChunkAt = 0

  /** `toStream`: the answer to a streamed request, sent as the client's stream (an upstream that does not stream). */
  constructor(attempt: AttemptView, call: CallHost, body: UpstreamBody, reader: UsageExtractor, toStream = false) {
    this.attempt = attempt
    this.call = call
    this.body = body
    const converted = attempt.converted
    if (converted !== null || toStream) {
      // Converted whole (a JSON document cannot be converted piecewise); the commit comes with it.
      const upstream = converted ?? call.endpoint.family
      readWhole(
        body,
        MAX_ANSWER_BYTES,
        (json, complete) => {
          if (attempt.done) return
          const answer = !complete
            ? errors.upstreamFailed(
                `The upstream answer is larger than the ${MAX_ANSWER_BYTES} bytes a conversion or a whole answer to a stream holds.`,
              )
            : toStream
              ? // An encoder of its own: one an answer refused half-way leaves open is no use to the next answer.
                streamedAnswer(upstream, json, createEncoder(call.endpoint.family, call.encoderOptions))
              : convertedAnswer(upstream, call.endpoint.family, json, call.encoderOptions)
          if (typeof answer !== 'string') attempt.failBeforeAnswer(answer)
          else if (toStream) attempt.answerStreamWhole(answer)
          else attempt.answerWhole(answer)
        },
        reader,
        call.meter,
        (chunkLength) => {
          // A body that opens no JSON document (an SSE stream labelled otherwise) is no answer: said at its first byte,
          // not once the whole generation was read.
          if (reader.opensJson === false && !attempt.done) attempt.failBeforeAnswer(notJson(attempt.status), attempt.status)
          else this.bodyFlowing(chunkLength)
        },
      )
      return
    }
    body.on('data', (chunk: Buffer) => this.onChunk(chunk))
    body.once('end', () => this.onEnd())
  }

  /**
   * Commits the answer at its first byte: headers and then nothing (a stalled or dying upstream, an empty body) is
   * still a failure another upstream can answer for, not an empty reply.
   */
  private commit(): void {
    const attempt = this.attempt
    if (attempt.delivering) return
    const call = this.call
    // The answer's first chunk, the client's first token (none for an error answer passed on, nor an empty body).
    if (attempt.status < 300) call.ctx.firstTokenAt = this.lastChunkAt
    const headers = call.client.headers(attempt.headers, false)
    // A streamed answer as one JSON array (Gemini without `alt=sse`) stays open as long as an SSE stream: it is
    // committed as one. Other answers (errors too) end at once: flattening their header block would be wasted work.
    if (call.ctx.stream && attempt.status < 300) call.client.commitStream(attempt.status, headers)
    else call.client.commit(attempt.status, headers)
    attempt.delivering = true
    call.onCommitted()
  }

  /**
   * A chunk of the body came. From the first, as in a stream, idleMs bounds each silence of the upstream
   * (responseMs bounded the start). Its first token is the client's only once the answer goes out (commit,
   * answerWhole): a body refused before (malformed, cut, stalled, too large to convert) gave the client none.
   */
  private bodyFlowing(chunkLength: number): void {
    const now = performance.now()
    this.lastChunkAt = now
    if (this.flowing) return
    this.flowing = true
    // A body whole in its first chunk (most answers) ends in this turn: no idle timer to make.
    if (this.wholeBody(chunkLength)) return
    this.attempt.armDeadline(this.call.settings.timeouts.idleMs)
  }

  /** The body flowing: cut when the upstream was silent for idleMs (it cannot look complete then). */
  onIdle(): void {
    const idleMs = this.call.settings.timeouts.idleMs
    const now = performance.now()
    // A body paused for a slow client is not a silent upstream: the silence counts from when it resumes.
    if (this.body.isPaused()) this.lastChunkAt = now
    const quietFor = now - this.lastChunkAt
    if (quietFor < idleMs) {
      this.attempt.armDeadline(idleMs - quietFor)
      return
    }
    this.body.destroy(errors.upstreamTimeout(`The upstream sent nothing for ${idleMs} ms.`))
  }

  /** A body of `length` bytes, as the upstream's content-length says (a decoded body has none). */
  private wholeBody(length: number): boolean {
    return Number(this.attempt.headers?.['content-length']) === length
  }

  private onChunk(chunk: Buffer): void {
    this.bodyFlowing(chunk.length)
    const meter = this.call.meter
    const reader = meter.reader
    reader?.write(chunk)
    const attempt = this.attempt
    if (!attempt.delivering && reader !== null && !this.mayBeAnswer(reader, chunk.length)) {
      attempt.failBeforeAnswer(notJson(attempt.status), attempt.status)
      return
    }
    this.commit()
    meter.responseBytes += chunk.length
    this.call.client.write(chunk, this.body)
  }

  /**
   * Before the commit, a success's first chunk (an error answer is passed on as it is): it must open a JSON document,
   * and close it when it is the whole body. A text page behind a JSON content type (a proxy's), broken or cut JSON then
   * fails over as any failure before the first byte does. The usage tap has scanned the chunk: no byte is read again.
   * Whitespace alone decides nothing (some servers send it to keep a slow answer's connection open): committed.
   */
  private mayBeAnswer(reader: UsageExtractor, chunkLength: number): boolean {
    if (this.attempt.status >= 300) return true
    if (reader.opensJson === false) return false
    return !this.wholeBody(chunkLength) || reader.jsonClosed
  }

  private onEnd(): void {
    const attempt = this.attempt
    const status = attempt.status
    // A success that is no whole JSON document (cut short yet ended cleanly, text after blank lines, nothing): an
    // upstream failure. An empty body is still before the commit; after it, the connection is cut, the record says so.
    if (status < 300 && this.call.meter.reader?.jsonClosed === false) {
      if (!attempt.delivering) {
        attempt.failBeforeAnswer(notJson(status), status)
        return
      }
      this.cut(notJson(status))
      return
    }
    this.commit()
    attempt.settle()
    this.call.endAnswer()
  }

  /** The body failed after the commit point: the client's connection is cut, so the answer cannot look complete. */
  cut(error: LlmProxyError): void {
    this.attempt.settle()
    this.call.onJsonFailed(error)
  }
}

/** A success whose body is not a JSON document: no answer, though its status says one. */
function notJson(status: number): LlmProxyError {
  return errors.upstreamFailed(`The upstream answered ${status} with a body that is not a JSON document.`)
}

/**
 * Reads a body whole, keeping at most `limit` bytes (`complete` false when it held more), feeding the usage tap
 * when given. For small error answers and converted JSON answers only: streams are never held.
 */
export function readWhole(
  body: UpstreamBody,
  limit: number,
  onEnd: (bytes: Buffer, complete: boolean) => void,
  reader?: UsageExtractor,
  meter?: UsageMeter,
  onChunk?: (chunkLength: number) => void,
): void {
  const parts: Buffer[] = []
  let size = 0
  body.on('data', (chunk: Buffer) => {
    reader?.write(chunk)
    onChunk?.(chunk.length)
    if (meter !== undefined) meter.responseBytes += chunk.length
    size += chunk.length
    if (size <= limit) parts.push(chunk)
  })
  body.once('end', () => onEnd(Buffer.concat(parts), size <= limit))
}
