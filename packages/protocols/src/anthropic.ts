import { ByteNeedle, type LlmProxyError } from '@llmproxy/core'
import { ANTHROPIC_PING } from './convert/sse.js'
import { anthropicErrorType } from './convert/upstream-error.js'
import { count, type Endpoint, noQuery, samePath, type WireFormat } from './wire.js'

export const ANTHROPIC_VERSION = '2023-06-01'

/** Anthropic's token counting: proxied to Anthropic upstreams, estimated for the others; free (never metered). */
export const ANTHROPIC_COUNT_TOKENS: Endpoint = {
  path: '/v1/messages/count_tokens',
  family: 'anthropic',
  upstreamPath: samePath('/v1/messages/count_tokens'),
  modelInBody: true,
  queryString: noQuery,
  terminators: [],
  terminatorDepth: 0,
  failedEnds: [],
  endsWithDone: false,
  finishMarkers: [],
  closing: '',
  endsAtTerminator: false,
  takesIncludeUsage: false,
  convertible: false,
  metered: false,
}

/** Anthropic Messages (`?beta=true` included: the query string is not part of the route). */
export const ANTHROPIC_MESSAGES: Endpoint = {
  path: '/v1/messages',
  family: 'anthropic',
  upstreamPath: samePath('/v1/messages'),
  modelInBody: true,
  queryString: noQuery,
  // The event line with its line end: the words alone also travel as text (a model explaining Anthropic's stream),
  // and a JSON string holds no raw line end. (`v`, the old needle's probe: both share one search.)
  terminators: [new ByteNeedle('event: message_stop\n', 'v'), new ByteNeedle('event: message_stop\r', 'v')],
  terminatorDepth: 0,
  failedEnds: [],
  endsWithDone: false,
  finishMarkers: [new ByteNeedle('"stop_reason":"')],
  closing: 'event: message_stop\ndata: {"type":"message_stop"}\n\n',
  endsAtTerminator: true,
  takesIncludeUsage: false,
  convertible: true,
  metered: true,
}

interface AnthropicErrorBody {
  type: 'error'
  error: { type: string; message: string; code: string; details?: { error_code: string } }
}

function anthropicError(error: LlmProxyError): AnthropicErrorBody {
  // `code` is the gateway's catalogue code: an extra field Anthropic clients ignore and operators can rely on.
  const body: AnthropicErrorBody = {
    type: 'error',
    error: { type: anthropicErrorType(error.statusCode), message: error.message, code: error.code },
  }
  // Anthropic's own code for it, which @anthropic-ai/sdk's message threads recover from (the whole conversation resent).
  if (error.code === 'llmproxy_thread_not_kept') body.error.details = { error_code: 'thread_not_found' }
  return body
}

export const anthropic: WireFormat = {
  family: 'anthropic',
  endpoints: [ANTHROPIC_MESSAGES],
  chat: ANTHROPIC_MESSAGES,
  setCredential(headers, apiKey) {
    headers['x-api-key'] = apiKey
  },
  requiredHeaders: { 'anthropic-version': ANTHROPIC_VERSION },
  // Counting tokens generates none.
  outputCap: (body, route) => ({ tokens: route.endsWith('/count_tokens') ? 0 : count(body.max_tokens), choices: 1 }),
  errorBody: anthropicError,
  streamErrorEvent: (error) => `event: error\ndata: ${JSON.stringify(anthropicError(error))}\n\n`,
  streamKeepAlive: ANTHROPIC_PING,
}
