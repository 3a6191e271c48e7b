import { LlmProxyError } from '@llmproxy/core'

/** Sent with every 401, as RFC 6750 asks. */
export const WWW_AUTHENTICATE = 'Bearer realm="llmproxy"'

/** Stable codes of the errors this package answers with. */
export const AUTH_ERROR_CODES = {
  missingApiKey: 'llmproxy_missing_api_key',
  invalidApiKey: 'llmproxy_invalid_api_key',
  ipDenied: 'llmproxy_ip_denied',
} as const

const challenge = { headers: { 'www-authenticate': WWW_AUTHENTICATE } }

/** The error factory of @llmproxy/auth. None of these messages ever contains the presented key. */
export const authErrors = {
  missingApiKey: () =>
    new LlmProxyError(
      401,
      'authentication_error',
      AUTH_ERROR_CODES.missingApiKey,
      'Missing API key: send it as "Authorization: Bearer <key>", "x-api-key: <key>" or "api-key: <key>".',
      challenge,
    ),
  invalidApiKey: () => new LlmProxyError(401, 'authentication_error', AUTH_ERROR_CODES.invalidApiKey, 'Invalid API key.', challenge),
  ipDenied: () => new LlmProxyError(403, 'permission_error', AUTH_ERROR_CODES.ipDenied, 'Requests from this address are not allowed.'),
}
