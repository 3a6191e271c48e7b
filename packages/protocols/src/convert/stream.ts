import { AnthropicDecoder } from './decode-anthropic.js'
import { GeminiDecoder } from './decode-gemini.js'
import { OpenAiDecoder } from './decode-openai.js'
import { AnthropicEncoder } from './encode-anthropic.js'
import { GeminiEncoder } from './encode-gemini.js'
import { OpenAiEncoder } from './encode-openai.js'
import type { ApiFamily, EncoderOptions, EncoderResume, StreamDecoder, StreamEncoder } from './types.js'

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
