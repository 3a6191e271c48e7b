import { ByteNeedle, type LlmProxyError, type Protocol } from '@llmproxy/core'
import { SSE_KEEP_ALIVE } from './convert/sse.js'
import { choices, count, type Endpoint, noQuery, type OutputCap, samePath, type WireFormat } from './wire.js'

const DONE = [new ByteNeedle('data: [DONE]')]
/** A non-null finish reason (`"finish_reason":null` is on every other chunk). */
const FINISH = [new ByteNeedle('"finish_reason":"'), new ByteNeedle('"finish_reason": "')]
/** How servers end a line (LF, CRLF), and space a JSON key from its value or an SSE field from its value (none, one). */
const LINE_ENDS = ['\n', '\r']
const SPACING = ['', ' ']

/**
 * The Responses API's last events (`response.completed`, `.incomplete`, `.failed`). Their names also travel as
 * text — the client's `metadata` and `instructions`, which OpenAI echoes in `response.created`; an answer whose
 * whole text is the word — so a name counts only where it is the event's type: on its `event:` line (OpenAI and vLLM
 * send one), else on its data line as the object's own `type`, the first key or the last (openai-python's models,
 * which vLLM serialises, put `type` last). Each shape's needles share their probe: one search per shape and chunk.
 */
function responsesEnd(type: string): ByteNeedle[] {
  return [
    // The event line with its line end: a JSON string holds no raw line end, and a data line ends with its object.
    ...SPACING.flatMap((field) => LINE_ENDS.map((end) => new ByteNeedle(`event:${field}${type}${end}`, 'v'))),
    // The data object's first key: `data: {"` stands nowhere inside JSON (a quote in a string is escaped).
    ...SPACING.flatMap((field) => SPACING.map((space) => new ByteNeedle(`data:${field}{"type":${space}"${type}"`, 'y'))),
    // Its last key: the object closing at the line's end is the event's (a nested one closes before it).
    ...SPACING.flatMap((space) => LINE_ENDS.map((end) => new ByteNeedle(`"type":${space}"${type}"}${end}`, 'y'))),
  ]
}
const RESPONSES_FAILED = responsesEnd('response.failed')
const RESPONSES_END = [...responsesEnd('response.completed'), ...responsesEnd('response.incomplete'), ...RESPONSES_FAILED]

function endpoint(
  path: string,
  terminators: readonly ByteNeedle[],
  takesIncludeUsage: boolean,
  convertible = false,
  failedEnds: readonly ByteNeedle[] = [],
): Endpoint {
  return {
    path,
    family: 'openai',
    upstreamPath: samePath(path),
    modelInBody: true,
    queryString: noQuery,
    terminators,
    terminatorDepth: 0,
    failedEnds,
    endsWithDone: terminators === DONE,
    finishMarkers: terminators === DONE ? FINISH : [],
    closing: terminators === DONE ? 'data: [DONE]\n\n' : '',
    endsAtTerminator: terminators.length > 0,
    takesIncludeUsage,
    convertible,
    metered: true,
  }
}

export const OPENAI_CHAT = endpoint('/v1/chat/completions', DONE, true, true)
export const OPENAI_RESPONSES = endpoint('/v1/responses', RESPONSES_END, false, false, RESPONSES_FAILED)

/** The OpenAI-compatible endpoints, each proxied to the same path upstream. */
export const OPENAI_ENDPOINTS: readonly Endpoint[] = [
  OPENAI_CHAT,
  endpoint('/v1/completions', DONE, true),
  endpoint('/v1/embeddings', [], false),
  OPENAI_RESPONSES,
]

/** The prompts of a legacy completions request, each answered on its own: an array of strings or of token arrays (one string, or one array of token ids, is one). */
function prompts(prompt: unknown): number {
  return Array.isArray(prompt) && prompt.length > 1 && typeof prompt[0] !== 'number' ? prompt.length : 1
}

/** The active health-check path of an OpenAI-compatible server when the upstream names none. */
export function openaiHealthPath(protocol: Protocol): string {
  return protocol === 'openai' ? '/v1/models' : '/health'
}

export const openai: WireFormat = {
  family: 'openai',
  endpoints: OPENAI_ENDPOINTS,
  chat: OPENAI_CHAT,
  setCredential(headers, apiKey) {
    headers.authorization = `Bearer ${apiKey}`
  },
  requiredHeaders: {},
  outputCap(body, route): OutputCap {
    // An embedding is no generated token: the input is all it uses.
    if (route.endsWith('/v1/embeddings')) return { tokens: 0, choices: 1 }
    // Legacy completions generate best_of candidates server-side (billed) and return n of them, for each prompt.
    const perPrompt = Math.max(choices(body.n), choices(body.best_of))
    const answers = route.endsWith('/v1/completions') ? perPrompt * prompts(body.prompt) : perPrompt
    // The largest of the caps given: which one an upstream honours when several are set differs (the conversion to
    // Anthropic and Gemini takes max_completion_tokens; a small max_tokens beside it must not shrink the reservation).
    const a = count(body.max_tokens)
    const b = count(body.max_completion_tokens)
    const c = count(body.max_output_tokens)
    const tokens = a === undefined && b === undefined && c === undefined ? undefined : Math.max(a ?? 0, b ?? 0, c ?? 0)
    return { tokens, choices: answers }
  },
  errorBody: (error: LlmProxyError) => error.toJSON(),
  streamErrorEvent: (error: LlmProxyError) => `event: error\ndata: ${JSON.stringify(error.toJSON())}\n\n`,
  streamKeepAlive: SSE_KEEP_ALIVE,
}
