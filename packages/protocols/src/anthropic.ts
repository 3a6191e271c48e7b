import { ByteNeedle, type ErrorType, type LlmProxyError } from '@llmproxy/core'
import { count, type Endpoint, noQuery, samePath, type WireFormat } from './wire.js'

export const ANTHROPIC_VERSION = '2023-06-01'

/** Anthropic Messages (`?beta=true` included: the query string is not part of the route). */
export const ANTHROPIC_MESSAGES: Endpoint = {
  path: '/v1/messages',
  family: 'anthropic',
  upstreamPath: samePath('/v1/messages'),
  modelInBody: true,
  queryString: noQuery,
  terminators: [new ByteNeedle('event: message_stop')],
  endsWithDone: false,
  endsAtTerminator: true,
  takesIncludeUsage: false,
}

/** Anthropic's error types by the gateway's (https://docs.anthropic.com/en/api/errors). */
function anthropicErrorType(error: LlmProxyError): string {
  const byType: Record<ErrorType, string> = {
    invalid_request_error: 'invalid_request_error',
    authentication_error: 'authentication_error',
    permission_error: 'permission_error',
    rate_limit_error: 'rate_limit_error',
    upstream_error: 'api_error',
    server_error: 'api_error',
  }
  if (error.statusCode === 404) return 'not_found_error'
  if (error.statusCode === 413) return 'request_too_large'
  if (error.statusCode === 503 || error.statusCode === 529) return 'overloaded_error'
  return byType[error.type]
}

function anthropicError(error: LlmProxyError): { type: 'error'; error: { type: string; message: string; code: string } } {
  // `code` is the gateway's catalogue code: an extra field Anthropic clients ignore and operators can rely on.
  return { type: 'error', error: { type: anthropicErrorType(error), message: error.message, code: error.code } }
}

export const anthropic: WireFormat = {
  family: 'anthropic',
  endpoints: [ANTHROPIC_MESSAGES],
  setCredential(headers, apiKey) {
    headers['x-api-key'] = apiKey
  },
  requiredHeaders: { 'anthropic-version': ANTHROPIC_VERSION },
  outputCap: (body) => ({ tokens: count(body.max_tokens), choices: 1 }),
  errorBody: anthropicError,
  streamErrorEvent: (error) => `event: error\ndata: ${JSON.stringify(anthropicError(error))}\n\n`,
}
