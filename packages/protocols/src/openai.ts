import { ByteNeedle, type LlmProxyError, type Protocol } from '@llmproxy/core'
import { choices, count, type Endpoint, noQuery, type OutputCap, samePath, type WireFormat } from './wire.js'

const DONE = [new ByteNeedle('data: [DONE]')]
/** A non-null finish reason (`"finish_reason":null` is on every other chunk). */
const FINISH = [new ByteNeedle('"finish_reason":"'), new ByteNeedle('"finish_reason": "')]

function endpoint(path: string, terminators: readonly ByteNeedle[], takesIncludeUsage: boolean, convertible = false): Endpoint {
  return {
    path,
    family: 'openai',
    upstreamPath: samePath(path),
    modelInBody: true,
    queryString: noQuery,
    terminators,
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

/** The OpenAI-compatible endpoints, each proxied to the same path upstream. */
export const OPENAI_ENDPOINTS: readonly Endpoint[] = [
  OPENAI_CHAT,
  endpoint('/v1/completions', DONE, true),
  endpoint('/v1/embeddings', [], false),
  endpoint(
    '/v1/responses',
    [new ByteNeedle('"response.completed"'), new ByteNeedle('"response.incomplete"'), new ByteNeedle('"response.failed"')],
    false,
  ),
]

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
  outputCap(body): OutputCap {
    // Legacy completions generate best_of candidates server-side (billed) and return n of them.
    const answers = Math.max(choices(body.n), choices(body.best_of))
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
}
