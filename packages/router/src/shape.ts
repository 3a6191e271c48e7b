import { errors, type LlmHookRegistry, type LlmProxyError } from '@llmproxy/core'
import { type ApiFamily, type Endpoint, familyOf, type StreamEncoder } from '@llmproxy/protocols'
import type { Upstream } from '@llmproxy/upstreams'
import type { Continuation } from './continuation.js'
import { convertedRequest, StreamConverter } from './convert.js'
import type { UpstreamDispatcher } from './dispatcher.js'
import type { InFlight } from './in-flight.js'
import type { ResolvedRoute } from './models.js'
import type { Retry, RetryOn, Timeouts } from './options.js'
import { EventAligner, type ResponseTransform, UsageEventFilter } from './tap.js'

/** Shared, per-router state of every call. */
export interface ProxySettings {
  readonly dispatcher: UpstreamDispatcher
  readonly hooks: LlmHookRegistry
  readonly timeouts: Timeouts
  readonly retry: Retry
  readonly retryOn: ReadonlySet<RetryOn>
  /** The output cap sent to an API that requires one (Anthropic) when the client, in another API, set none. */
  readonly defaultMaxTokens: number
  /** The calls in flight (what a shutdown past its grace ends, each with an error its client can read). */
  readonly calls: InFlight
  /** The route in force for a model name or alias (a reload swaps them). */
  route(model: string): ResolvedRoute | undefined
}

/** What the client asked, as far as the proxying of it goes. */
export interface RequestShape {
  /** The client's route. */
  readonly endpoint: Endpoint
  /** Gemini's `generateContent` / `streamGenerateContent` (from the URL); '' elsewhere. */
  readonly action: string
  /** The gateway added `stream_options.include_usage` for a same-API OpenAI upstream: its usage chunk is removed. */
  readonly stripUsage: boolean
  /** An OpenAI client asked for the usage chunk itself (converted streams then end with one). */
  readonly includeUsage: boolean
  /** A Gemini client asked for `alt=sse` (else a streamed answer is one JSON array). */
  readonly geminiSse: boolean
  /** An Anthropic client turned thinking on (else a converted answer's reasoning is left out); true for the others. */
  readonly reasoning: boolean
}

const noQuery = (): string => ''
const sseQuery = (): string => 'alt=sse'

/** Whether a route can serve a client route: any API for a chat route (converted), only its own for the others. */
export function servesEndpoint(route: ResolvedRoute, endpoint: Endpoint): boolean {
  return endpoint.convertible || (route.families.size === 1 && route.families.has(endpoint.family))
}

/** The client's error when `route` does not serve `endpoint`. */
export function wrongApiFor(model: string, route: ResolvedRoute, endpoint: Endpoint): LlmProxyError {
  return errors.wrongApi(model, [...route.families].join(', '), endpoint.path)
}

type QueryString = (search: string | undefined, url: string) => string

/** What one attempt sends, where, and what reads its answer. */
export interface UpstreamRequest {
  /** The upstream's route: its terminators end the stream. */
  endpoint: Endpoint
  path: string
  query: QueryString
  payload: string
  /** The transform slot: null passes the answer's bytes untouched. */
  transform: ResponseTransform | null
  /** The upstream's API when it is not the client's; null for same-format traffic. */
  converted: ApiFamily | null
  /** A continuation sent as a prefill (a 4xx is the upstream refusing it). */
  prefill: boolean
}

/**
 * The request an attempt sends to `upstream`: a continuation of a cut stream; or, same API on both sides, the body as
 * it came (the model renamed) with the answer's bytes back untouched; or, another API, the request converted and the
 * answer decoded and re-encoded. Throws an LlmProxyError (400) when the upstream's API cannot represent the request.
 */
export function upstreamRequest(
  shape: RequestShape,
  body: Record<string, unknown>,
  upstream: Upstream,
  upstreamModel: string,
  stream: boolean,
  settings: ProxySettings,
  continuation: Continuation | null,
  encoder: () => StreamEncoder,
): UpstreamRequest {
  const client = shape.endpoint
  const api = familyOf(upstream.protocol)
  if (continuation !== null) {
    const next = continuation.request(upstream, upstreamModel, client, body, settings.defaultMaxTokens)
    return { ...next, query: next.query === '' ? noQuery : sseQuery, converted: api }
  }
  if (api === client.family) {
    if (client.modelInBody) body.model = upstreamModel
    return {
      endpoint: client,
      path: client.upstreamPath(upstreamModel, shape.action),
      query: client.queryString,
      payload: JSON.stringify(body),
      transform: shape.stripUsage ? new UsageEventFilter() : new EventAligner(),
      converted: null,
      prefill: false,
    }
  }
  const converted = convertedRequest(client.family, upstream, body, upstreamModel, stream, settings.defaultMaxTokens)
  return {
    endpoint: converted.endpoint,
    path: converted.path,
    query: converted.query === '' ? noQuery : sseQuery,
    payload: converted.payload,
    transform: stream ? new StreamConverter(api, encoder()) : null,
    converted: api,
    prefill: false,
  }
}
