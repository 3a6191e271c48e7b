import { ByteNeedle, type LlmProxyError } from '@llmproxy/core'
import { field, protobufInteger } from './convert/gemini-fields.js'
import { SSE_KEEP_ALIVE } from './convert/sse.js'
import { geminiCode, geminiStatus } from './convert/upstream-error.js'
import { choices, count, type Endpoint, type WireFormat } from './wire.js'

export const GEMINI_ACTIONS: ReadonlySet<string> = new Set(['generateContent', 'streamGenerateContent'])
const ALT = /[?&]alt=([^&]*)/

/** Gemini's stable API version: its generation and counting routes take the same requests (the gateway serves both). */
export const GEMINI_V1_GENERATE_PATH = '/v1/models/:target'
/** `/v1/models/<model>:generateContent` (streamGenerateContent, countTokens): Gemini's, where the rest of `/v1/` is OpenAI's. */
export const GEMINI_V1_ACTION = /\/v1\/models\/[^/]+:(?:generateContent|streamGenerateContent|countTokens)$/

/** Gemini generateContent / streamGenerateContent; the model and the action are in the URL. */
export const GEMINI_GENERATE: Endpoint = {
  path: '/v1beta/models/:target',
  family: 'gemini',
  upstreamPath: (upstreamModel, action) => `/v1beta/models/${encodeURIComponent(upstreamModel)}:${action}`,
  modelInBody: false,
  // Only `alt` (sse or json) goes upstream: a client's `key=` must never be forwarded.
  queryString: (_search, url) => {
    const alt = ALT.exec(url)
    return alt === null ? '' : `alt=${alt[1]}`
  },
  // A blocked prompt's answer has no candidates, so no finishReason: its promptFeedback.blockReason ends it. Each
  // counts only where Gemini puts it in an event (`candidates[i].finishReason` 3 levels down, `blockReason` 2): a
  // function call's `args`, deeper, may hold either key (the stream would look complete where it was cut).
  terminators: [new ByteNeedle('"finishReason"'), new ByteNeedle('"blockReason"')],
  terminatorDepth: 3,
  failedEnds: [],
  endsWithDone: false,
  // The finishReason is Gemini's terminator already.
  finishMarkers: [],
  closing: '',
  endsAtTerminator: false,
  takesIncludeUsage: false,
  convertible: true,
  metered: true,
}

/** Gemini countTokens: a Gemini-only model asks its upstream (the router estimates for any other). */
export const GEMINI_COUNT_TOKENS: Endpoint = {
  ...GEMINI_GENERATE,
  queryString: () => '',
  terminators: [],
  failedEnds: [],
  convertible: false,
  metered: false,
}

/** A `retry-after` in whole seconds, as the gateway sends it (an app's own error could carry an HTTP date). */
const RETRY_SECONDS = /^\d+$/

function geminiError(error: LlmProxyError): unknown {
  // The gateway's catalogue code, where Google APIs put a machine-readable reason.
  const details: Record<string, string>[] = [
    { '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: error.code, domain: 'llmproxy' },
  ]
  // The wait, also where Google's own 429s say it: Gemini tooling reads it from the body, not from the header.
  const retryAfter = error.headers?.['retry-after']
  if (retryAfter !== undefined && RETRY_SECONDS.test(retryAfter)) {
    details.push({ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${retryAfter}s` })
  }
  return { error: { code: geminiCode(error.statusCode), message: error.message, status: geminiStatus(error.statusCode), details } }
}

export const gemini: WireFormat = {
  family: 'gemini',
  endpoints: [GEMINI_GENERATE],
  chat: GEMINI_GENERATE,
  setCredential(headers, apiKey) {
    headers['x-goog-api-key'] = apiKey
  },
  requiredHeaders: {},
  outputCap(body, route) {
    // Counting tokens generates none.
    if (route.endsWith(':countTokens')) return { tokens: 0, choices: 1 }
    // Read as the converter reads them (and as Google takes them): either spelling, an integer as a string too.
    const config = field(body, 'generationConfig')
    if (config === null || typeof config !== 'object') return { tokens: undefined, choices: 1 }
    const fields = config as Record<string, unknown>
    return {
      tokens: count(protobufInteger(field(fields, 'maxOutputTokens'))),
      choices: choices(protobufInteger(field(fields, 'candidateCount'))),
    }
  },
  errorBody: geminiError,
  streamErrorEvent: (error) => `data: ${JSON.stringify(geminiError(error))}\n\n`,
  streamKeepAlive: SSE_KEEP_ALIVE,
}
