/**
 * The contract of format conversion (OpenAI Chat ⇄ Anthropic Messages ⇄ Gemini). Requests are converted
 * whole (they are parsed anyway); responses are converted event by event: a decoder per upstream format
 * turns upstream bytes into {@link StreamEvent}s, an encoder per client format turns those into client
 * bytes. Six pairs come from three decoders and three encoders. An encoder outlives the decoders that feed
 * it: a stream continued on another upstream (mid-stream continuation) feeds a second decoder's events
 * into the same encoder, so the client still sees one stream.
 */

/** The three API families a client or an upstream speaks (vLLM and TGI speak OpenAI's). */
export type ApiFamily = 'openai' | 'anthropic' | 'gemini'

/** Why a generation stopped, in neutral terms (each format names them its own way). */
export type FinishReason =
  /** A natural end (OpenAI `stop`, Anthropic `end_turn`, Gemini `STOP`). */
  | 'stop'
  /** One of the request's stop sequences matched (Anthropic `stop_sequence`; OpenAI and Gemini say `stop`/`STOP`). */
  | 'stop_sequence'
  /** The output token cap (`length`, `max_tokens`, `MAX_TOKENS`). */
  | 'length'
  /** The model called tools (`tool_calls`, `tool_use`; Gemini says `STOP` with functionCall parts). */
  | 'tool_calls'
  /** Refused or filtered (`content_filter`, `refusal`, `SAFETY` / `RECITATION` / `BLOCKLIST` / `PROHIBITED_CONTENT` / `SPII`). */
  | 'content_filter'
  /** Anthropic `pause_turn` (a long-running server tool turn paused). */
  | 'pause'

/**
 * Token usage in neutral terms. `inputTokens` excludes cache reads and writes (Anthropic's semantics); an
 * OpenAI `prompt_tokens` is `inputTokens + cacheReadTokens + cacheWriteTokens`. `outputTokens` includes
 * reasoning tokens (OpenAI's and Gemini's semantics: Gemini `candidatesTokenCount + thoughtsTokenCount`).
 */
export interface NeutralUsage {
  inputTokens: number
  outputTokens: number
  cacheReadTokens?: number
  cacheWriteTokens?: number
  reasoningTokens?: number
}

/** One event of the neutral stream vocabulary. */
export type StreamEvent =
  /** The answer begins (once per decoder). `id`/`model` as the upstream gave them; usage known at the start (Anthropic input). */
  | { type: 'start'; id?: string; model?: string; usage?: Partial<NeutralUsage> }
  | { type: 'text'; text: string }
  /** Reasoning ("thinking") text; `signature` when the upstream signs it (Anthropic `signature_delta`, Gemini `thoughtSignature`). */
  | { type: 'reasoning'; text: string; signature?: string }
  /** Anthropic `redacted_thinking` (opaque data, kept for the next turn when the client speaks Anthropic). */
  | { type: 'redacted_reasoning'; data: string }
  /** A tool call starts: its name and id are known. `index` keeps parallel calls apart (0, 1, … in order of appearance). */
  | { type: 'tool_start'; index: number; id: string; name: string; signature?: string }
  /** A fragment of the JSON arguments of tool call `index` (fragments concatenate to the arguments JSON). */
  | { type: 'tool_args'; index: number; json: string }
  /** Generation ended. `stopSequence`: which one matched, when known. */
  | { type: 'finish'; reason: FinishReason; stopSequence?: string; rawReason?: string }
  /** Usage as reported so far (fields present override earlier ones; reports are cumulative, as every format's are). */
  | { type: 'usage'; usage: Partial<NeutralUsage> }
  /**
   * The upstream failed inside the stream: an Anthropic `event: error`, an OpenAI `{"error":…}` data line, or a
   * generation that ended without a valid answer (Gemini `MALFORMED_FUNCTION_CALL`, `OTHER`, …) — never a normal stop.
   * The router ends the client's stream with the encoder's in-band error (or continues it elsewhere).
   */
  | { type: 'error'; message: string; errorType?: string }

/** Turns an upstream's streamed bytes into events. One per upstream attempt; O(1) state besides a partial event. */
export interface StreamDecoder {
  /** Feeds bytes as they arrive; pushes the events they complete onto `out`. Throws {@link MalformedStreamError} on bad data. */
  push(chunk: Buffer, out: StreamEvent[]): void
  /** The upstream body ended cleanly: pushes what a trailing partial event completes. */
  end(out: StreamEvent[]): void
  /** A finish (and, for formats that have one, the terminator) was seen: the answer is complete. */
  readonly complete: boolean
  /** The upstream's finish (its stop or finish reason) was seen, terminator or not. */
  readonly finished: boolean
}

/** Renders events in the client's format. One per client request; lives across upstream attempts. */
export interface StreamEncoder {
  /**
   * Client bytes for one event ('' when the event produces nothing yet, e.g. held until usage comes). Throws
   * {@link MalformedStreamError} when the answer cannot be carried in the client's format (an Anthropic tool_use
   * whose arguments are not a JSON object): the stream then ends with `error()`.
   */
  encode(event: StreamEvent): string
  /**
   * The upstream stream is complete: anything still held, then the format's terminator (`[DONE]`, `message_stop`,
   * `]`). Throws as `encode` does.
   */
  finish(): string
  /** An in-band error event in the client's format (after the commit point); the stream then ends without a terminator. */
  error(error: { statusCode: number; type: string; code: string; message: string }): string
  /**
   * Heartbeat bytes that add nothing to the answer, once the stream has begun: an SSE comment, Anthropic's `ping`
   * event, whitespace between a Gemini JSON array's elements.
   */
  keepAlive(): string
}

export interface EncoderOptions {
  /** The model name the client asked for (every response names it). */
  model: string
  /** The response id the client sees (generated in the client's id format when absent). */
  id?: string
  /** OpenAI clients: they asked for `stream_options.include_usage` (then a usage chunk precedes `[DONE]`). */
  includeUsage?: boolean
  /** Gemini clients: `alt=sse` (SSE events) or not (one JSON array, written element by element). */
  geminiSse?: boolean
  /**
   * Anthropic clients: `false` when the request did not turn thinking on. Then the upstream's reasoning (a vLLM
   * reasoning model thinks unasked) is left out, as Claude sends no thinking block unasked: code reading
   * `content[0].text` would otherwise find a thinking block there.
   */
  reasoning?: boolean
}

/**
 * Where a client's stream stands when its first part went to it byte for byte from an upstream of its own format
 * and the rest comes converted from another (a continuation). The id the client saw goes in
 * {@link EncoderOptions.id}. The encoder then sends no opening (role chunk, `message_start`, `[`) and continues
 * the open text or thinking block.
 */
export interface EncoderResume {
  /** OpenAI: the `created` of the chunks already sent, so that every chunk keeps it. */
  created?: number
  /** Anthropic: the last content block the client saw; `open` while its content_block_stop has not gone out. */
  block?: { index: number; type: 'text' | 'thinking'; open: boolean }
  /** What the part already sent consumed (when known): added to the usage the client sees at the end. */
  usage?: Partial<NeutralUsage>
}

/** Options of a whole-request conversion. */
export interface RequestConversion {
  /** The model name to send upstream (for Gemini it goes in the path, not the body). */
  upstreamModel: string
  /** Whether the client asked for a stream (for Gemini clients: the `:streamGenerateContent` action). */
  stream: boolean
  /** Anthropic upstreams require `max_tokens`: used when the client sent no cap. */
  defaultMaxTokens: number
  /**
   * The OpenAI-compatible upstream continues a final assistant message when asked (vLLM's `continue_final_message`):
   * a request ending with one (the client's prefill) asks for it, as Anthropic and Gemini continue one unasked.
   */
  continueFinalMessage?: boolean
}

/** What cannot be represented on the target: a 400 in the client's format naming the field. */
export class ConversionError extends Error {
  /** JSON path of the offending field in the client's request, e.g. `messages[2].content[1].image_url`. */
  readonly param: string
  constructor(param: string, message: string) {
    super(message)
    this.name = 'ConversionError'
    this.param = param
  }
}

/** A field of the wrong type in the client's request: its own mistake (a 400 invalid request), whatever the upstream. */
export class InvalidFieldError extends ConversionError {
  constructor(param: string, message: string) {
    super(param, message)
    this.name = 'InvalidFieldError'
  }
}

/** Upstream data that is not valid for its format (after the commit point: an in-band error). */
export class MalformedStreamError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'MalformedStreamError'
  }
}

/**
 * Tool-call ids carry what a client in another format would otherwise lose and the upstream needs back on the next
 * turn (a Gemini `thoughtSignature`, an Anthropic thinking `signature`): `<id>__sig__<signature>`. Clients echo tool
 * call ids verbatim, so the request converter can restore the signature from the id.
 */
const SIGNATURE_SEPARATOR = '__sig__'

export function toolCallIdWithSignature(id: string, signature: string | undefined): string {
  return signature === undefined || signature === '' ? id : `${id}${SIGNATURE_SEPARATOR}${signature}`
}

export function splitToolCallId(id: string): { id: string; signature?: string } {
  const at = id.indexOf(SIGNATURE_SEPARATOR)
  return at === -1 ? { id } : { id: id.slice(0, at), signature: id.slice(at + SIGNATURE_SEPARATOR.length) }
}
