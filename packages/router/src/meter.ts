import { estimateTokensFromBytes, type Protocol, type Usage } from '@llmproxy/core'
import { UsageExtractor } from '@llmproxy/protocols'
import type { StreamScanner } from './scanner.js'

/**
 * The request's token usage: one reader per upstream attempt that produced an answer, summed into the record.
 * Where an upstream reported nothing the count is estimated, and the record says so.
 */
export class UsageMeter {
  /** The current attempt's reader; the scanner and the relay feed it. */
  reader: UsageExtractor | null = null
  /** Bytes of the request body sent upstream (the prompt estimate). */
  requestBytes = 0
  /** Bytes of the current attempt's answer (the completion estimate of a JSON body). */
  responseBytes = 0
  /** The summed usage; null while no attempt produced an answer. */
  total: Usage | null = null
  /** Some part of the total is an estimate. */
  estimated = false
  /** The current attempt's upstream API. */
  private protocol: Protocol = 'openai'
  /**
   * The current attempt's usage reports read before the chunk of its stream's terminator where that does not end the
   * stream (Gemini's finishReason), or of an in-band failure (-1: neither came). See `reportedAtTerminator`.
   */
  private reportsBeforeTerminator = -1

  /** A new attempt's answer starts: its own reader. */
  startAnswer(protocol: Protocol): UsageExtractor {
    this.responseBytes = 0
    this.protocol = protocol
    this.reportsBeforeTerminator = -1
    this.reader = new UsageExtractor(protocol)
    return this.reader
  }

  /** The stream's terminator (or an in-band failure) came in a chunk read after `reportsBefore` usage reports. */
  terminatorCame(reportsBefore: number): void {
    if (this.reportsBeforeTerminator === -1) this.reportsBeforeTerminator = reportsBefore
  }

  /**
   * A usage report was read with the terminator's chunk or after it. Gemini 2.x reports a running count on every
   * chunk: the answer's own count is the one that comes with its finishReason or after it.
   */
  get reportedAtTerminator(): boolean {
    const reader = this.reader
    return reader !== null && this.reportsBeforeTerminator !== -1 && reader.reports > this.reportsBeforeTerminator
  }

  /**
   * The current attempt's answer is over: its usage (reported, else estimated if it succeeded) joins the total.
   * A stream's estimate is one token per data event, its terminator (an event, not a token) excluded. `whole`: the
   * stream ended complete, so its last report is final even without an output count (Gemini leaves out a count of 0);
   * one cut or failed after a report without it (a Gemini chunk counting the prompt only) has its output estimated.
   */
  endAnswer(succeeded: boolean, scanner: StreamScanner | null, whole = false): void {
    const reader = this.reader
    if (reader === null) return
    // (Asked while the reader is still the current attempt's.)
    const final = this.finalReport(scanner !== null, whole)
    this.reader = null
    const reported = reader.result()
    if (reported !== null) {
      if (reader.missingPrompt) {
        reported.promptTokens = estimateTokensFromBytes(this.requestBytes)
        reported.totalTokens = reported.promptTokens + reported.completionTokens
        this.estimated = true
      }
      if (!final || (scanner !== null && !whole && reader.missingCompletion)) {
        // The answer ended before its final report (an Anthropic stream cut or aborted before message_delta, a
        // Gemini one before its finishReason or after a chunk counting the prompt only): the output is estimated from
        // what was streamed, the reported input kept.
        reported.completionTokens = Math.max(reported.completionTokens, this.estimateCompletion(scanner))
        reported.totalTokens = reported.promptTokens + reported.completionTokens
        this.estimated = true
      }
      this.add(reported)
      return
    }
    if (!succeeded) return
    const promptTokens = estimateTokensFromBytes(this.requestBytes)
    const completionTokens = this.estimateCompletion(scanner)
    this.add({ promptTokens, completionTokens, totalTokens: promptTokens + completionTokens })
    this.estimated = true
  }

  /**
   * Whether the current attempt's final usage report came. A Gemini stream's running counts are not (see
   * `reportedAtTerminator`); one that ended complete had its last report (the relay's grace after the finishReason
   * waits for a count reported with it or after it, else the upstream ended the stream). A Gemini JSON body (a
   * stream as one JSON array, without `alt=sse`, repeats the running count in each element) has it once the body is
   * whole. The reader knows the others'.
   */
  private finalReport(stream: boolean, whole: boolean): boolean {
    const reader = this.reader as UsageExtractor
    if (this.protocol !== 'gemini') return reader.isFinal(stream)
    return stream ? whole || this.reportedAtTerminator : reader.jsonClosed
  }

  /** One token per streamed data event (the terminator, an event but not a token, excluded); a JSON body's bytes / 4. */
  private estimateCompletion(scanner: StreamScanner | null): number {
    return scanner !== null
      ? Math.max(0, scanner.dataEvents - (scanner.sawTerminator ? 1 : 0))
      : estimateTokensFromBytes(this.responseBytes)
  }

  private add(usage: Usage): void {
    const total = this.total
    if (total === null) {
      this.total = usage
      return
    }
    total.promptTokens += usage.promptTokens
    total.completionTokens += usage.completionTokens
    total.totalTokens += usage.totalTokens
    if (usage.cachedTokens !== undefined) total.cachedTokens = (total.cachedTokens ?? 0) + usage.cachedTokens
    if (usage.reasoningTokens !== undefined) total.reasoningTokens = (total.reasoningTokens ?? 0) + usage.reasoningTokens
  }
}
