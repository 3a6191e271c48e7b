import type { IncomingHttpHeaders } from 'node:http'
import type { LlmContext, LlmProxyError } from '@llmproxy/core'
import type { ApiFamily, EncoderOptions, Endpoint } from '@llmproxy/protocols'
import type { AttemptResult, Lease } from '@llmproxy/upstreams'
import type { FastifyReply } from 'fastify'
import type { ClientStream } from './client-stream.js'
import type { UsageMeter } from './meter.js'
import type { AttemptPlanner, FailureKind } from './planner.js'
import type { ResumeTap } from './resume.js'
import type { StreamScanner, UpstreamErrorEvent } from './scanner.js'
import type { ProxySettings } from './shape.js'
import type { ResponseTransform } from './tap.js'

/** What the request's call sees of an attempt, and what its answer's relay (StreamRelay, JsonRelay) asks of it. */
export interface AttemptView {
  readonly lease: Lease
  readonly startedAt: number
  readonly status: number
  readonly headers: IncomingHttpHeaders | null
  /** Its answer has reached the client (its first byte). */
  delivering: boolean
  /** It is over (its answer ended, failed or was abandoned). */
  readonly done: boolean
  /** Its SSE answer's relay: the scanner and (same-format streams) the resume tap beside it. */
  readonly stream: { readonly scanner: StreamScanner; readonly tap: ResumeTap | null } | null
  readonly endpoint: Endpoint
  readonly transform: ResponseTransform | null
  readonly converted: ApiFamily | null
  release(result: AttemptResult): boolean
  settle(): void
  clearDeadline(): void
  /** (Re)arms the attempt's one timer: a JSON body's idle bound once it flows. */
  armDeadline(ms: number): void
  /** Commits and sends an answer held whole (a converted JSON answer to a JSON request). */
  answerWhole(body: Buffer | string): void
  /** Sends a whole answer as the client's stream, its terminator included (a JSON answer to a streamed request). */
  answerStreamWhole(events: string): void
  failBeforeAnswer(error: LlmProxyError, status?: number): void
  failedAtStart(event: UpstreamErrorEvent): void
}

/**
 * What an upstream attempt and its stream relay ask of the request they serve (ProxyCall). Attempts report to it;
 * it decides what a failure means. Kept apart so that the modules depend one way: call → attempt → relay → host.
 */
export interface CallHost {
  readonly reply: FastifyReply
  readonly ctx: LlmContext
  readonly settings: ProxySettings
  readonly endpoint: Endpoint
  readonly planner: AttemptPlanner
  readonly client: ClientStream
  readonly meter: UsageMeter
  readonly encoderOptions: EncoderOptions
  readonly clientStreamType: string
  /** The attempt in progress, or the last one. */
  readonly attempt: AttemptView | null
  /** A continuation has the client's stream (a stream cut after its first byte is being finished elsewhere). */
  readonly continuing: boolean
  onAttemptFailed(attempt: AttemptView, kind: FailureKind, error: LlmProxyError, status?: number, retryAfter?: number): void
  onAttemptRefused(attempt: AttemptView, error: LlmProxyError): void
  onCommitted(): void
  onStreamEnd(attempt: AttemptView, error: LlmProxyError | null): void
  onJsonFailed(error: LlmProxyError): void
  /** An upstream's error answer to a stream held open for its first token: in band, as the upstream's answer. */
  endHeldOpen(error: LlmProxyError): void
  endAnswer(tail?: Buffer | string | null): void
  /** The request asks for several choices (`n`, `candidateCount`). */
  readonly severalChoices: boolean
  resumeTapFor(attempt: AttemptView): ResumeTap | null
}
