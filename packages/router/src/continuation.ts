import type { LlmProxyError } from '@llmproxy/core'
import { type Endpoint, familyOf, type StreamEncoder, wireOf, withAssistantPrefill } from '@llmproxy/protocols'
import type { Upstream } from '@llmproxy/upstreams'
import { convertedRequest, type Splice, StreamConverter } from './convert.js'

/** One continuation attempt: what to send, where, and the converter that splices its answer in. */
export interface ContinuationRequest {
  endpoint: Endpoint
  path: string
  query: string
  payload: string
  transform: StreamConverter
  prefill: boolean
}

/**
 * A stream cut after its first byte, being finished elsewhere. It keeps the text the client has received, the
 * failure to report if nothing rescues the request, and the client's encoder, which continues the client's stream
 * (no second opening, the same id, the open text block). Each continuation asks the next upstream to go on from
 * that text — a prefill (the text as a final assistant turn) where the upstream takes one, else a replay of the
 * request whose answer must start with that text exactly (it is then dropped, never stitched).
 */
export class Continuation {
  /** The failure the client is told about when no continuation succeeds (the cut, not a refused prefill). */
  readonly failure: LlmProxyError
  readonly encoder: StreamEncoder
  private text: string
  private events: number
  /** Upstreams that refused a prefill in this request: they get the request replayed. */
  private readonly noPrefill = new Set<string>()

  constructor(failure: LlmProxyError, text: string, events: number, encoder: StreamEncoder) {
    this.failure = failure
    this.text = text
    this.events = events
    this.encoder = encoder
  }

  /** A continuation was cut too: what it delivered joins the text. */
  extend(text: string, events: number): void {
    this.text += text
    this.events += events
  }

  /** An upstream said it takes no prefill: the next try on it is a replay. */
  refused(upstream: string): void {
    this.noPrefill.add(upstream)
  }

  /** The request for `upstream`, in its API, asking it to go on from the text the client has. */
  request(
    upstream: Upstream,
    upstreamModel: string,
    client: Endpoint,
    clientBody: Record<string, unknown>,
    defaultMaxTokens: number,
  ): ContinuationRequest {
    const api = familyOf(upstream.protocol)
    let body: Record<string, unknown>
    if (api === client.family) {
      body = clientBody
      if (client.modelInBody) body.model = upstreamModel
    } else {
      body = JSON.parse(convertedRequest(client.family, upstream, clientBody, upstreamModel, true, defaultMaxTokens).payload) as Record<
        string,
        unknown
      >
    }
    const prefill = upstream.prefill && this.text !== '' && !this.noPrefill.has(upstream.name)
    let splice: Splice
    if (prefill) {
      body = withAssistantPrefill(api, body, this.text, { generatedTokens: this.events, vllmContinue: api === 'openai' })
      // Anthropic takes no prefill ending in whitespace: the continuation may say it again, and it is then dropped.
      const sent = api === 'anthropic' ? this.text.trimEnd() : this.text
      splice = { prefix: this.text.slice(sent.length), strict: false }
    } else {
      splice = { prefix: this.text, strict: true }
    }
    const endpoint = wireOf(api).chat
    return {
      endpoint,
      path: endpoint.upstreamPath(upstreamModel, 'streamGenerateContent'),
      query: api === 'gemini' ? 'alt=sse' : '',
      payload: JSON.stringify(body),
      transform: new StreamConverter(api, this.encoder, splice),
      prefill,
    }
  }
}
