import { AnthropicDecoder } from './decode-anthropic.js'
import { GeminiDecoder } from './decode-gemini.js'
import { OpenAiDecoder } from './decode-openai.js'
import { AnthropicEncoder } from './encode-anthropic.js'
import { GeminiEncoder } from './encode-gemini.js'
import { OpenAiEncoder } from './encode-openai.js'
import type { ApiFamily, EncoderOptions, NeutralUsage, StreamDecoder, StreamEncoder } from './types.js'

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

/**
 * A decoder of an upstream's streamed bytes: OpenAI chat chunks and `[DONE]`, Anthropic events, Gemini `alt=sse`
 * data events (a Gemini upstream must be asked for `alt=sse`).
 */
export function createDecoder(upstream: ApiFamily): StreamDecoder {
  switch (upstream) {
    case 'openai':
      return new OpenAiDecoder()
    case 'anthropic':
      return new AnthropicDecoder()
    case 'gemini':
      return new GeminiDecoder()
  }
}

/** An encoder of events in the client's format; `resume` when the stream's first part already went out unconverted. */
export function createEncoder(client: ApiFamily, opts: EncoderOptions, resume?: EncoderResume): StreamEncoder {
  switch (client) {
    case 'openai':
      return new OpenAiEncoder(opts, resume)
    case 'anthropic':
      return new AnthropicEncoder(opts, resume)
    case 'gemini':
      return new GeminiEncoder(opts, resume)
  }
}
