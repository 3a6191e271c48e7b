import { errors, type LlmProxyError } from '@llmproxy/core'
import {
  type ApiFamily,
  ConversionError,
  convertRequest,
  convertResponse,
  convertUpstreamError,
  createDecoder,
  type EncoderOptions,
  type Endpoint,
  MalformedStreamError,
  type StreamDecoder,
  type StreamEncoder,
  type StreamEvent,
  wireOf,
} from '@llmproxy/protocols'
import type { ResponseTransform } from './tap.js'

/** What a request looks like on an upstream of another API than the client's. */
export interface ConvertedRequest {
  /** The upstream's chat route (its path, terminators). */
  endpoint: Endpoint
  /** The upstream path for the model. */
  path: string
  /** The query string sent upstream: Gemini streams are asked for SSE. */
  query: string
  payload: string
}

/**
 * The client's request body as the upstream's API wants it. Throws an LlmProxyError 400 naming the field when the
 * upstream's API cannot represent it (never a silent change of meaning).
 */
export function convertedRequest(
  client: ApiFamily,
  upstream: ApiFamily,
  body: Record<string, unknown>,
  upstreamModel: string,
  stream: boolean,
  defaultMaxTokens: number,
): ConvertedRequest {
  let converted: Record<string, unknown>
  try {
    converted = convertRequest(client, upstream, body, { upstreamModel, stream, defaultMaxTokens })
  } catch (err) {
    if (err instanceof ConversionError) throw errors.notConvertible(err.param, err.message)
    throw err
  }
  const endpoint = wireOf(upstream).chat
  const geminiStream = upstream === 'gemini' && stream
  return {
    endpoint,
    path: endpoint.upstreamPath(upstreamModel, geminiStream ? 'streamGenerateContent' : 'generateContent'),
    query: geminiStream ? 'alt=sse' : '',
    payload: JSON.stringify(converted),
  }
}

/**
 * The transform slot's converter: an upstream's stream decoded into neutral events, each re-encoded in the client's
 * format as soon as it is complete. The decoder belongs to one attempt; the encoder to the request (a continued
 * stream feeds it from another attempt).
 */
export class StreamConverter implements ResponseTransform {
  failure: LlmProxyError | null = null
  private readonly decoder: StreamDecoder
  private readonly encoder: StreamEncoder
  private readonly events: StreamEvent[] = []

  constructor(upstream: ApiFamily, encoder: StreamEncoder) {
    this.decoder = createDecoder(upstream)
    this.encoder = encoder
  }

  push(chunk: Buffer): string | null {
    const events = this.events
    events.length = 0
    try {
      this.decoder.push(chunk, events)
    } catch (err) {
      if (!(err instanceof MalformedStreamError)) throw err
      this.failure = errors.upstreamFailed(`The upstream sent malformed data: ${err.message}`)
    }
    return this.encodeAll()
  }

  end(complete: boolean): string | null {
    const events = this.events
    events.length = 0
    if (this.failure === null) {
      try {
        this.decoder.end(events)
      } catch {
        // A partial last event: the stream is incomplete anyway.
        events.length = 0
      }
    }
    const out = this.encodeAll() ?? ''
    return complete && this.failure === null ? out + this.encoder.finish() : out === '' ? null : out
  }

  errorEvent(error: LlmProxyError): string {
    return this.encoder.error(error)
  }

  private encodeAll(): string | null {
    const events = this.events
    let out = ''
    for (let i = 0; i < events.length && this.failure === null; i++) {
      const event = events[i] as StreamEvent
      if (event.type === 'error') this.failure = errors.upstreamFailed(`The upstream failed: ${event.message}`)
      else out += this.encoder.encode(event)
    }
    return out === '' ? null : out
  }
}

/** A non-streamed upstream answer (its whole JSON body) in the client's format; null when it is not a valid answer. */
export function convertedAnswer(upstream: ApiFamily, client: ApiFamily, body: Buffer, opts: EncoderOptions): string | null {
  try {
    return JSON.stringify(convertResponse(upstream, client, JSON.parse(body.toString('utf8')), opts))
  } catch {
    return null
  }
}

/** An upstream's error answer in the client's format, its status kept. */
export function convertedError(upstream: ApiFamily, client: ApiFamily, status: number, body: Buffer): string {
  return JSON.stringify(convertUpstreamError(upstream, client, status, body.toString('utf8')))
}
