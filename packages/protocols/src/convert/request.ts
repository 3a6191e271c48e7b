/**
 * Whole-request conversion between the client APIs: the client's body is parsed into the neutral request
 * (request-ir.ts) and rendered in the upstream's format. Requests are small and parsed once, so a neutral form costs
 * little and keeps the mapping to 3 parsers + 3 renderers. The mapping table is in docs/protocols.md.
 */
import { parseAnthropic, renderAnthropic, withoutTrailingWhitespace } from './request-anthropic.js'
import { parseGemini, renderGemini } from './request-gemini.js'
import { arrayAt, type ChatRequest, isObject, type JsonObject } from './request-ir.js'
import { parseOpenAI, renderOpenAI } from './request-openai.js'
import type { ApiFamily, RequestConversion } from './types.js'

const PARSERS: Record<ApiFamily, (body: JsonObject) => ChatRequest> = {
  openai: parseOpenAI,
  anthropic: parseAnthropic,
  gemini: parseGemini,
}

const RENDERERS: Record<ApiFamily, (req: ChatRequest, opts: RequestConversion) => JsonObject> = {
  openai: renderOpenAI,
  anthropic: renderAnthropic,
  gemini: renderGemini,
}

/**
 * The client's request body (its own format) → the upstream's body. Throws ConversionError (param = the client's field
 * path) for what the target cannot represent, and the gateway's `llmproxy_thread_not_kept` for an Anthropic message
 * thread continued (no upstream of another API holds it). Never called with from === to (that path is byte-for-byte
 * passthrough).
 */
export function convertRequest(
  from: ApiFamily,
  to: ApiFamily,
  body: Record<string, unknown>,
  opts: RequestConversion,
): Record<string, unknown> {
  return RENDERERS[to](PARSERS[from](body), opts)
}

/**
 * The upstream body (already in the upstream's format) extended so the upstream continues `partialText`: Anthropic a
 * final assistant turn; OpenAI-compatible a final assistant message + (when `vllmContinue`) `continue_final_message:
 * true, add_generation_prompt: false`; Gemini a final `model` content. The output cap is reduced by `generatedTokens`.
 * Text only: a stream that produced reasoning or tool calls is not continued. A final assistant turn the client sent
 * (a prefill of its own) is extended rather than followed. Anthropic rejects a prefill ending in whitespace, so that
 * is trimmed off (the continuation regenerates it), and drops `thinking`, which a prefill cannot go with.
 */
export function withAssistantPrefill(
  to: ApiFamily,
  upstreamBody: Record<string, unknown>,
  partialText: string,
  opts: { generatedTokens: number; vllmContinue: boolean },
): Record<string, unknown> {
  const body = { ...upstreamBody }
  const reduce = (cap: unknown) => (typeof cap === 'number' ? Math.max(1, cap - opts.generatedTokens) : cap)
  switch (to) {
    case 'anthropic': {
      body.messages = withoutTrailingWhitespace(withFinalText(arrayAt(body.messages, 'messages'), 'assistant', 'content', partialText))
      body.max_tokens = reduce(body.max_tokens)
      delete body.thinking
      return body
    }
    case 'openai': {
      // A final assistant message was a prefill only where the upstream was told to continue it (vLLM's
      // continue_final_message, the client's or set for a converted prefill); else it was a closed turn, and the
      // partial answer is a turn of its own after it, as the first attempt generated it.
      const continued = body.continue_final_message === true
      body.messages = withFinalText(arrayAt(body.messages, 'messages'), 'assistant', 'content', partialText, continued)
      if (body.max_completion_tokens !== undefined) body.max_completion_tokens = reduce(body.max_completion_tokens)
      if (body.max_tokens !== undefined) body.max_tokens = reduce(body.max_tokens)
      if (opts.vllmContinue) {
        body.continue_final_message = true
        body.add_generation_prompt = false
      }
      return body
    }
    case 'gemini': {
      body.contents = withFinalText(arrayAt(body.contents, 'contents'), 'model', 'parts', partialText)
      if (isObject(body.generationConfig) && body.generationConfig.maxOutputTokens !== undefined) {
        body.generationConfig = { ...body.generationConfig, maxOutputTokens: reduce(body.generationConfig.maxOutputTokens) }
      }
      return body
    }
  }
}

/**
 * A copy of `messages` whose final `role` message ends with `text`: the existing one extended (when `extend`), or a
 * new one.
 */
function withFinalText(messages: unknown[], role: string, key: 'content' | 'parts', text: string, extend = true): unknown[] {
  if (text === '') return messages
  const out = [...messages]
  const last = out.at(-1)
  if (!extend || !isObject(last) || last.role !== role) {
    out.push(key === 'parts' ? { role, parts: [{ text }] } : { role, content: text })
    return out
  }
  const content = last[key]
  const extended =
    typeof content === 'string'
      ? content + text
      : Array.isArray(content)
        ? [...content, key === 'parts' ? { text } : { type: 'text', text }]
        : text
  out[out.length - 1] = { ...last, [key]: extended }
  return out
}
