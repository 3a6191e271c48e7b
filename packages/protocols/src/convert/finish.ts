import type { FinishReason } from './types.js'

/** A finish as decoded: a neutral reason, or a generation that ended without a valid answer. */
export type DecodedFinish = FinishReason | 'error'

/** OpenAI `finish_reason` → neutral. vLLM's `abort` and an `error` reason end a generation that did not complete. */
export function finishFromOpenAi(reason: string): DecodedFinish {
  switch (reason) {
    case 'length':
      return 'length'
    case 'tool_calls':
    case 'function_call':
      return 'tool_calls'
    case 'content_filter':
      return 'content_filter'
    case 'abort':
    case 'error':
      return 'error'
    default:
      return 'stop'
  }
}

export const OPENAI_FINISH: Readonly<Record<FinishReason, string>> = {
  stop: 'stop',
  stop_sequence: 'stop',
  length: 'length',
  tool_calls: 'tool_calls',
  content_filter: 'content_filter',
  pause: 'stop',
}

/**
 * A plain stop after tool calls is a tool-call finish: vLLM says `stop` after a call the request forced by name,
 * Gemini says `STOP` after every call, and Anthropic-compatible servers may say `end_turn`. Clients that branch on
 * `tool_calls` / `tool_use` would otherwise not run the calls.
 */
export function finishWithTools(reason: FinishReason, calledTools: boolean): FinishReason {
  return reason === 'stop' && calledTools ? 'tool_calls' : reason
}

/** Anthropic `stop_reason` → neutral. */
export function finishFromAnthropic(reason: string, calledTools: boolean): FinishReason {
  switch (reason) {
    case 'max_tokens':
    case 'model_context_window_exceeded':
      return 'length'
    case 'stop_sequence':
      return 'stop_sequence'
    case 'tool_use':
      return 'tool_calls'
    case 'refusal':
      return 'content_filter'
    case 'pause_turn':
      return 'pause'
    default:
      return finishWithTools('stop', calledTools)
  }
}

export const ANTHROPIC_STOP: Readonly<Record<FinishReason, string>> = {
  stop: 'end_turn',
  stop_sequence: 'stop_sequence',
  length: 'max_tokens',
  tool_calls: 'tool_use',
  content_filter: 'refusal',
  pause: 'pause_turn',
}

/**
 * Gemini `finishReason` → neutral. `STOP` after functionCall parts means tool calls. Blocked output is a
 * content filter; a generation that failed (`MALFORMED_FUNCTION_CALL`, `OTHER`, `UNEXPECTED_TOOL_CALL`, …
 * and any reason not known here) is an error, never a normal stop.
 */
export function finishFromGemini(reason: string, calledTools: boolean): DecodedFinish {
  switch (reason) {
    case 'STOP':
      return finishWithTools('stop', calledTools)
    case 'MAX_TOKENS':
      return 'length'
    case 'SAFETY':
    case 'RECITATION':
    case 'LANGUAGE':
    case 'BLOCKLIST':
    case 'PROHIBITED_CONTENT':
    case 'SPII':
    case 'IMAGE_SAFETY':
    case 'IMAGE_PROHIBITED_CONTENT':
    case 'IMAGE_RECITATION':
      return 'content_filter'
    default:
      return 'error'
  }
}

export const GEMINI_FINISH: Readonly<Record<FinishReason, string>> = {
  stop: 'STOP',
  stop_sequence: 'STOP',
  length: 'MAX_TOKENS',
  tool_calls: 'STOP',
  content_filter: 'SAFETY',
  pause: 'STOP',
}

/** The error message of a Gemini generation that ended without a valid answer. */
export function geminiFailureMessage(reason: string, finishMessage: unknown): string {
  const detail = typeof finishMessage === 'string' && finishMessage !== '' ? `: ${finishMessage}` : ''
  return `The upstream ended the generation with ${reason}${detail}`
}
