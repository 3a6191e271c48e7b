import type { ByteNeedle, LlmProxyError, Protocol } from '@llmproxy/core'
import type { ApiFamily } from './convert/types.js'

/** One client route of an API, and how a request on it goes upstream. Read on the hot path. */
export interface Endpoint {
  /** The gateway's route (Fastify path syntax). */
  readonly path: string
  /** The API the route belongs to. */
  readonly family: ApiFamily
  /** The upstream path for a model and (Gemini) an action; elsewhere the model travels in the body. */
  readonly upstreamPath: (upstreamModel: string, action: string) => string
  /** Whether the body's `model` names the model (rewritten to the upstream model). */
  readonly modelInBody: boolean
  /** The query string sent upstream, from the client's URL (never the client's credentials). */
  readonly queryString: (search: string | undefined, url: string) => string
  /** Markers of a stream's proper end; a stream ending without one is incomplete. */
  readonly terminators: readonly ByteNeedle[]
  /**
   * When the terminators are JSON keys (Gemini's `"finishReason"`): how deep in an event they end the stream (1: a
   * key of the event's own object; an object and an array are a level each). Deeper, the same key is content, such
   * as a function call's arguments. 0: the terminators are no keys, they count wherever they stand.
   */
  readonly terminatorDepth: number
  /**
   * Those of the terminators that end the stream as an answer the upstream reports failed (the Responses API's
   * `response.failed`): the client gets it as sent, the usage record says the upstream failed.
   */
  readonly failedEnds: readonly ByteNeedle[]
  /** The stream ends with `data: [DONE]` (found while walking the events, no separate search). */
  readonly endsWithDone: boolean
  /**
   * Markers of a finish reported inside the stream (a non-null `finish_reason`, Anthropic's `stop_reason`): a stream
   * that ends cleanly after one, without its terminator, is complete all the same (some servers omit `[DONE]`).
   */
  readonly finishMarkers: readonly ByteNeedle[]
  /** What the gateway appends for the client when such a stream ended without its terminator. */
  readonly closing: string
  /**
   * The terminator is the stream's last event: the client's response ends with it, whatever the upstream does
   * after it (one that keeps its response open must not keep the client waiting). Gemini's `finishReason` ends
   * the generation, not necessarily the stream (its usage may follow), so it is not one: such a stream ends when the
   * upstream ends it, or after a short silence after its terminator.
   */
  readonly endsAtTerminator: boolean
  /** Whether the endpoint takes `stream_options.include_usage` (chat and legacy completions). */
  readonly takesIncludeUsage: boolean
  /** A chat route (OpenAI chat completions, Anthropic Messages, Gemini generate): an upstream of another API can serve it, converted. */
  readonly convertible: boolean
  /** Its answers consume tokens (false for token counting: nothing is estimated for it). */
  readonly metered: boolean
}

/** The most output a request may produce: its cap (undefined when it sets none) times the answers it asks for. */
export interface OutputCap {
  tokens: number | undefined
  choices: number
}

/** What one API family's wire format is: everything else in the gateway asks this instead of knowing it. */
export interface WireFormat {
  readonly family: ApiFamily
  /** The client routes, each proxied to an upstream of the same family (the chat route to any, converted). */
  readonly endpoints: readonly Endpoint[]
  /** The chat route: where a converted request from a client of another API goes. */
  readonly chat: Endpoint
  /** Sets the upstream credential the way the API expects it. */
  setCredential(headers: Record<string, string | string[] | undefined>, apiKey: string): void
  /** Headers an upstream of this API requires when the client did not send them (e.g. Anthropic's version). */
  readonly requiredHeaders: Readonly<Record<string, string>>
  /**
   * The output a request body may produce (rate-limit reservations and quotas). `route`: the path it came on (perhaps
   * under a prefix, without the query): an embeddings or token-counting request produces none, a legacy completions
   * request answers each of its prompts.
   */
  outputCap(body: Record<string, unknown>, route: string): OutputCap
  /** The HTTP error body of a gateway error, in this API's shape. */
  errorBody(error: LlmProxyError): unknown
  /** The in-band error event that ends a stream after the commit point, in this API's shape. */
  streamErrorEvent(error: LlmProxyError): string
  /** The heartbeat of this API's SSE stream: bytes its clients skip, which keep an idle connection open. */
  readonly streamKeepAlive: string
}

/** vLLM and TGI serve the OpenAI-compatible API; Anthropic and Gemini their own. */
export function familyOf(protocol: Protocol): ApiFamily {
  return protocol === 'anthropic' || protocol === 'gemini' ? protocol : 'openai'
}

/** A finite, non-negative count, rounded up (what a cap field may hold). */
export function count(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? Math.ceil(value) : undefined
}

/** The number of answers a request asks for (`n`, `candidateCount`): 1 when absent or not a positive integer. */
export function choices(value: unknown): number {
  return typeof value === 'number' && Number.isInteger(value) && value > 1 ? value : 1
}

export const noQuery = (): string => ''
export const samePath = (path: string) => (): string => path
