import type { Answer } from './answer.js'
import { readAnthropicResponse } from './decode-anthropic.js'
import { readGeminiResponse } from './decode-gemini.js'
import { readOpenAiResponse } from './decode-openai.js'
import { writeAnthropicResponse } from './encode-anthropic.js'
import { writeGeminiResponse } from './encode-gemini.js'
import { writeOpenAiResponse } from './encode-openai.js'
import type { Json } from './fields.js'
import { type ApiFamily, type EncoderOptions, MalformedStreamError, type StreamEncoder, type StreamEvent } from './types.js'

/**
 * Non-streamed: the upstream's JSON answer → the client's JSON answer (model = `opts.model`, id = `opts.id` or one
 * generated in the client's format). Throws {@link MalformedStreamError} when the answer is not valid for its format
 * or is a failed generation (Gemini `MALFORMED_FUNCTION_CALL`, vLLM `abort`): the client gets an error, not a
 * truncated answer that looks complete.
 */
export function convertResponse(upstream: ApiFamily, client: ApiFamily, body: unknown, opts: EncoderOptions): unknown {
  const answer = readAnswer(upstream, body)
  switch (client) {
    case 'openai':
      return writeOpenAiResponse(answer, opts)
    case 'anthropic':
      return writeAnthropicResponse(answer, opts)
    case 'gemini':
      return writeGeminiResponse(answer, opts)
  }
}

/**
 * A non-streamed answer to a streamed request (an upstream that does not stream): the upstream's JSON answer as the
 * client's whole stream, its terminator included, through the client's `encoder`. Throws as {@link convertResponse}.
 */
export function streamResponse(upstream: ApiFamily, body: unknown, encoder: StreamEncoder): string {
  let out = ''
  for (const event of answerEvents(readAnswer(upstream, body))) out += encoder.encode(event)
  return out + encoder.finish()
}

/** The events a stream of `answer` would have carried: its opening, its blocks in order, its finish, its usage. */
function answerEvents(answer: Answer): StreamEvent[] {
  const { inputTokens, cacheReadTokens, cacheWriteTokens } = answer.usage
  const events: StreamEvent[] = [{ type: 'start', usage: { inputTokens, cacheReadTokens, cacheWriteTokens } }]
  let tools = 0
  for (const block of answer.blocks) {
    if (block.type !== 'tool') {
      events.push(block)
      continue
    }
    const index = tools++
    events.push({ type: 'tool_start', index, id: block.id, name: block.name, signature: block.signature })
    events.push({ type: 'tool_args', index, json: block.args })
  }
  events.push({ type: 'finish', reason: answer.finish, stopSequence: answer.stopSequence })
  events.push({ type: 'usage', usage: answer.usage })
  return events
}

function readAnswer(upstream: ApiFamily, body: unknown): Answer {
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    throw new MalformedStreamError('The upstream answer is not a JSON object')
  return readFamilyAnswer(upstream, body as Json)
}

function readFamilyAnswer(upstream: ApiFamily, body: Json): Answer {
  switch (upstream) {
    case 'openai':
      return readOpenAiResponse(body)
    case 'anthropic':
      return readAnthropicResponse(body)
    case 'gemini':
      return readGeminiResponse(body)
  }
}
