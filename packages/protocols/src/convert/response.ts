import type { Answer } from './answer.js'
import { readAnthropicResponse } from './decode-anthropic.js'
import { readGeminiResponse } from './decode-gemini.js'
import { readOpenAiResponse } from './decode-openai.js'
import { writeAnthropicResponse } from './encode-anthropic.js'
import { writeGeminiResponse } from './encode-gemini.js'
import { writeOpenAiResponse } from './encode-openai.js'
import type { Json } from './fields.js'
import { type ApiFamily, type EncoderOptions, MalformedStreamError } from './types.js'

/**
 * Non-streamed: the upstream's JSON answer → the client's JSON answer (model = `opts.model`, id = `opts.id` or one
 * generated in the client's format). Throws {@link MalformedStreamError} when the answer is not valid for its format
 * or is a failed generation (Gemini `MALFORMED_FUNCTION_CALL`, vLLM `abort`): the client gets an error, not a
 * truncated answer that looks complete.
 */
export function convertResponse(upstream: ApiFamily, client: ApiFamily, body: unknown, opts: EncoderOptions): unknown {
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    throw new MalformedStreamError('The upstream answer is not a JSON object')
  const answer = readAnswer(upstream, body as Json)
  switch (client) {
    case 'openai':
      return writeOpenAiResponse(answer, opts)
    case 'anthropic':
      return writeAnthropicResponse(answer, opts)
    case 'gemini':
      return writeGeminiResponse(answer, opts)
  }
}

function readAnswer(upstream: ApiFamily, body: Json): Answer {
  switch (upstream) {
    case 'openai':
      return readOpenAiResponse(body)
    case 'anthropic':
      return readAnthropicResponse(body)
    case 'gemini':
      return readGeminiResponse(body)
  }
}
