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
  familyOf,
  InvalidFieldError,
  MalformedStreamError,
  type StreamDecoder,
  type StreamEncoder,
  type StreamEvent,
  streamResponse,
  wireOf,
} from '@llmproxy/protocols'
import type { Upstream } from '@llmproxy/upstreams'
import { MAX_TEXT_BYTES } from './resume.js'
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
 * The client's request body as `upstream`'s API wants it. Throws an LlmProxyError 400 naming the field when the
 * upstream's API cannot represent it (never a silent change of meaning).
 */
export function convertedRequest(
  client: ApiFamily,
  upstream: Upstream,
  body: Record<string, unknown>,
  upstreamModel: string,
  stream: boolean,
  defaultMaxTokens: number,
): ConvertedRequest {
  const api = familyOf(upstream.protocol)
  // A client's prefill on vLLM, in a first attempt or a continuation: continued only when asked (else vLLM closes the
  // turn and starts a new one).
  const continueFinalMessage = upstream.protocol === 'vllm' && upstream.prefill
  let converted: Record<string, unknown>
  try {
    converted = convertRequest(client, api, body, { upstreamModel, stream, defaultMaxTokens, continueFinalMessage })
  } catch (err) {
    // A wrong field is the client's own mistake, whichever the upstream; the rest is what the upstream cannot take.
    if (err instanceof InvalidFieldError) throw errors.invalidRequest(err.message, { param: err.param })
    if (err instanceof ConversionError) throw errors.notConvertible(err.param, err.message)
    throw err
  }
  const endpoint = wireOf(api).chat
  const geminiStream = api === 'gemini' && stream
  return {
    endpoint,
    path: endpoint.upstreamPath(upstreamModel, geminiStream ? 'streamGenerateContent' : 'generateContent'),
    query: geminiStream ? 'alt=sse' : '',
    payload: JSON.stringify(converted),
  }
}

/**
 * How a continuation's stream joins what the client already has: its opening is dropped (one role chunk, one
 * `message_start`), reasoning too (the client's answer so far is plain text), and `prefix` — the text the client
 * already has, which a replay regenerates — is checked and dropped. `strict`: a replay, which must reproduce the
 * prefix exactly or fail (never a stitched answer); a prefill, whose continuation may or may not repeat the
 * whitespace the prefill left out.
 */
export interface Splice {
  prefix: string
  strict: boolean
}

/**
 * The transform slot's converter: an upstream's stream decoded into neutral events, each re-encoded in the client's
 * format as soon as it is complete. The decoder belongs to one attempt; the encoder to the request (a continuation
 * feeds it from another attempt, through a splice). It also keeps the answer's text while it is plain text, for a
 * continuation should this attempt be cut.
 */
export class StreamConverter implements ResponseTransform {
  failure: LlmProxyError | null = null
  /** The answer so far is plain text: a continuation can take over from it. */
  continuable = true
  /** Text events seen (an estimate of the tokens generated). */
  textEvents = 0
  /** A replay's answer did not match what the client already had. */
  mismatch = false
  private readonly decoder: StreamDecoder
  private readonly encoder: StreamEncoder
  private readonly events: StreamEvent[] = []
  private readonly splice: Splice | null
  private text: string[] = []
  /** Characters in `text`. */
  private textLength = 0
  /** The events of the upstream body's end (drain), once it ended. */
  private tail: StreamEvent[] | null = null

  constructor(upstream: ApiFamily, encoder: StreamEncoder, splice: Splice | null = null) {
    this.decoder = createDecoder(upstream)
    this.encoder = encoder
    this.splice = splice
  }

  push(chunk: Buffer): string | null {
    const events = this.events
    try {
      this.decoder.push(chunk, events)
      return this.encodeAll(events)
    } catch (err) {
      if (!(err instanceof MalformedStreamError)) throw err
      // Nothing of a malformed chunk goes out.
      this.failure = errors.upstreamFailed(`The upstream sent malformed data: ${err.message}`)
      return null
    } finally {
      // Encoded: none is kept until the next chunk, seconds later in a slow stream.
      events.length = 0
    }
  }

  /**
   * The upstream's finish was seen, in its last event too (one its body ended without a blank line after):
   * a terminator alone ends no answer, the encoder would invent its finish.
   */
  finishedAtEnd(): boolean {
    this.drain()
    return this.decoder.finished
  }

  /** What the upstream's body left pending when it ended (a last event without its blank line), decoded once. */
  private drain(): StreamEvent[] {
    if (this.tail !== null) return this.tail
    const tail: StreamEvent[] = []
    if (this.failure === null) {
      try {
        this.decoder.end(tail)
      } catch {
        // A partial last event: the stream is incomplete anyway.
        tail.length = 0
      }
    }
    this.tail = tail
    return tail
  }

  end(complete: boolean): string | null {
    const out = this.encodeAll(this.drain()) ?? ''
    if (complete && this.failure === null) {
      try {
        return out + this.encoder.finish()
      } catch (err) {
        this.cannotCarry(err)
      }
    }
    return out === '' ? null : out
  }

  /** The encoder refused the answer (a tool call's arguments that are not a JSON object): the stream fails. */
  private cannotCarry(err: unknown): void {
    if (!(err instanceof MalformedStreamError)) throw err
    this.failure = errors.upstreamFailed(`The upstream sent an answer this API cannot carry: ${err.message}`)
  }

  errorEvent(error: LlmProxyError): string {
    return this.encoder.error(error)
  }

  /** The client format's heartbeat: bytes that keep its connection busy and add nothing to the answer. */
  keepAlive(): string {
    return this.encoder.keepAlive()
  }

  private mismatched(): void {
    this.mismatch = true
    this.failure = errors.upstreamFailed('The replayed answer did not match the part already sent.')
  }

  /** The answer text this attempt delivered (while continuable). */
  answerText(): string {
    return this.text.join('')
  }

  /** Keeps text for a continuation, up to MAX_TEXT_BYTES: a longer answer is not continued (its memory stays bounded). */
  private keepText(text: string): void {
    this.textLength += text.length
    if (this.textLength <= MAX_TEXT_BYTES) {
      this.text.push(text)
      return
    }
    this.continuable = false
    this.text = []
  }

  private encodeAll(events: readonly StreamEvent[]): string | null {
    let out = ''
    for (let i = 0; i < events.length && this.failure === null; i++) {
      const event = events[i] as StreamEvent
      if (event.type === 'error') {
        this.failure = errors.upstreamFailed(`The upstream failed: ${event.message}`)
        break
      }
      const spliced = this.splice === null ? event : this.spliced(event)
      if (spliced === null) continue
      if (spliced.type === 'text') {
        if (this.continuable) this.keepText(spliced.text)
        this.textEvents++
      } else if (spliced.type === 'reasoning' || spliced.type === 'redacted_reasoning' || spliced.type === 'tool_start') {
        this.continuable = false
      }
      try {
        out += this.encoder.encode(spliced)
      } catch (err) {
        this.cannotCarry(err)
      }
    }
    return out === '' ? null : out
  }

  /**
   * A continuation's event as it joins the client's stream, or null when it is dropped. Its `start` reaches the
   * encoder (which sends no second opening, and counts the new attempt's usage); reasoning does not (the client's
   * answer so far is plain text).
   */
  private spliced(event: StreamEvent): StreamEvent | null {
    const splice = this.splice as Splice
    if (event.type === 'reasoning' || event.type === 'redacted_reasoning') return null
    if (splice.prefix === '' || event.type === 'start' || event.type === 'usage') return event
    if (event.type !== 'text') {
      // A replay that finishes or calls a tool before repeating all the client has is another answer.
      if (splice.strict) this.mismatched()
      else splice.prefix = ''
      return splice.strict ? null : event
    }
    const prefix = splice.prefix
    const text = event.text
    if (text.length <= prefix.length ? prefix.startsWith(text) : text.startsWith(prefix)) {
      const rest = text.slice(prefix.length)
      splice.prefix = prefix.slice(Math.min(text.length, prefix.length))
      return rest === '' ? null : { type: 'text', text: rest }
    }
    if (splice.strict) {
      this.mismatched()
      return null
    }
    // A prefill's continuation that does not repeat the left-out whitespace: nothing to drop.
    splice.prefix = ''
    return event
  }
}

/**
 * A non-streamed upstream answer (its whole JSON body) in the client's format, or the error that says why it cannot
 * be one: not JSON, not its API's answer, or a failed generation (the upstream's reason kept).
 */
export function convertedAnswer(upstream: ApiFamily, client: ApiFamily, body: Buffer, opts: EncoderOptions): string | LlmProxyError {
  return wholeAnswer(body, (parsed) => JSON.stringify(convertResponse(upstream, client, parsed, opts)))
}

/** A non-streamed upstream answer as the client's whole stream (`encoder`'s), or the error that says why it cannot be. */
export function streamedAnswer(upstream: ApiFamily, body: Buffer, encoder: StreamEncoder): string | LlmProxyError {
  return wholeAnswer(body, (parsed) => streamResponse(upstream, parsed, encoder))
}

function wholeAnswer(body: Buffer, write: (parsed: unknown) => string): string | LlmProxyError {
  let parsed: unknown
  try {
    parsed = JSON.parse(body.toString('utf8'))
  } catch {
    return errors.upstreamFailed('The upstream answer could not be read as its API’s answer (not JSON).')
  }
  try {
    return write(parsed)
  } catch (err) {
    if (!(err instanceof MalformedStreamError)) throw err
    return errors.upstreamFailed(`The upstream answer could not be given: ${err.message}`)
  }
}

/** An upstream's error answer in the client's format, its status kept. */
export function convertedError(upstream: ApiFamily, client: ApiFamily, status: number, body: Buffer): string {
  return JSON.stringify(convertUpstreamError(upstream, client, status, body.toString('utf8')))
}
