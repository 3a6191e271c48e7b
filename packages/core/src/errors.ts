/**
 * Every error the gateway itself produces: OpenAI shape, HTTP status, stable `llmproxy_*` code.
 * All codes live here so that clients can rely on them.
 */
export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'rate_limit_error'
  | 'upstream_error'
  | 'server_error'

export interface ErrorBody {
  error: { message: string; type: ErrorType; code: string; param?: string | null }
}

export class LlmProxyError extends Error {
  readonly statusCode: number
  readonly type: ErrorType
  readonly code: string
  /** Extra response headers (e.g. retry-after, www-authenticate). */
  readonly headers: Record<string, string> | undefined
  /** The request field the error is about (OpenAI's `param`), when one is. */
  readonly param: string | undefined

  constructor(
    statusCode: number,
    type: ErrorType,
    code: string,
    message: string,
    options?: { cause?: unknown; headers?: Record<string, string>; param?: string },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'LlmProxyError'
    this.statusCode = statusCode
    this.type = type
    this.code = code
    this.headers = options?.headers
    this.param = options?.param
  }

  /** The same error with more response headers. */
  withHeaders(headers: Record<string, string>): LlmProxyError {
    return new LlmProxyError(this.statusCode, this.type, this.code, this.message, {
      cause: this.cause,
      headers: { ...this.headers, ...headers },
    })
  }

  toJSON(): ErrorBody {
    const body: ErrorBody = { error: { message: this.message, type: this.type, code: this.code } }
    if (this.param !== undefined) body.error.param = this.param
    return body
  }
}

type ErrorOptions = { cause?: unknown; headers?: Record<string, string> }

/** The most characters of client input an error message repeats: a 100 KB model name must not come back whole. */
export const MAX_ECHOED_CHARS = 128

/** Client input as an error message repeats it: cut to MAX_ECHOED_CHARS, the cut marked with the full length. */
export function echoed(value: string, quote = false): string {
  const kept = value.length <= MAX_ECHOED_CHARS ? value : value.slice(0, MAX_ECHOED_CHARS)
  const text = quote ? JSON.stringify(kept) : kept
  return kept === value ? text : `${text}… (${value.length} characters)`
}

const quoted = (value: string): string => echoed(value, true)

/** The content codings the router decodes (RFC 9110 §8.4.1); sent as `Accept-Encoding` with a 415 for any other. */
const ACCEPTED_CONTENT_CODINGS = 'gzip, deflate, br'

/** Sent with every 401 of an API key, as RFC 6750 asks. */
export const WWW_AUTHENTICATE = 'Bearer realm="llmproxy"'
const challenge = { headers: { 'www-authenticate': WWW_AUTHENTICATE } }

/** The error factory: one function per stable code. */
export const errors = {
  invalidRequest: (message: string, opts?: ErrorOptions) =>
    new LlmProxyError(400, 'invalid_request_error', 'llmproxy_invalid_request', message, opts),
  invalidJson: (message: string, opts?: ErrorOptions) =>
    new LlmProxyError(400, 'invalid_request_error', 'llmproxy_invalid_json', message, opts),
  jsonTooDeep: (maxDepth: number) =>
    new LlmProxyError(
      400,
      'invalid_request_error',
      'llmproxy_json_too_deep',
      `The request body nests arrays and objects more than ${maxDepth} levels deep.`,
    ),
  invalidContentEncoding: (coding: string) =>
    new LlmProxyError(
      400,
      'invalid_request_error',
      'llmproxy_invalid_content_encoding',
      `The request body is not valid ${quoted(coding)} data (Content-Encoding).`,
    ),
  missingModel: () =>
    new LlmProxyError(400, 'invalid_request_error', 'llmproxy_missing_model', 'The request body must include a "model" string.'),
  bodyTooLarge: (limit: number, decoded = false) =>
    new LlmProxyError(
      413,
      'invalid_request_error',
      'llmproxy_body_too_large',
      `The request body exceeds the limit of ${limit} bytes${decoded ? ' once decompressed' : ''}.`,
    ),
  unsupportedMediaType: (contentType: string | undefined) =>
    new LlmProxyError(
      415,
      'invalid_request_error',
      'llmproxy_unsupported_media_type',
      `Unsupported content type ${quoted(contentType ?? '')}: send application/json.`,
    ),
  notConvertible: (param: string, message: string) =>
    new LlmProxyError(400, 'invalid_request_error', 'llmproxy_not_convertible', `${message} (${param})`, { param }),
  unsupportedContentEncoding: (coding: string) =>
    new LlmProxyError(
      415,
      'invalid_request_error',
      'llmproxy_unsupported_content_encoding',
      `Unsupported Content-Encoding ${quoted(coding)}: send the body uncompressed, or compressed with one of ${ACCEPTED_CONTENT_CODINGS}.`,
      { headers: { 'accept-encoding': ACCEPTED_CONTENT_CODINGS } },
    ),
  malformedRequest: () =>
    new LlmProxyError(400, 'invalid_request_error', 'llmproxy_malformed_request', 'The request is not valid HTTP/1.1.'),
  invalidUrl: () =>
    new LlmProxyError(400, 'invalid_request_error', 'llmproxy_invalid_url', 'The request URL is not valid (bad percent-encoding).'),
  requestTimeout: () =>
    new LlmProxyError(408, 'invalid_request_error', 'llmproxy_request_timeout', 'The request was not received in time.'),
  urlTooLong: () => new LlmProxyError(414, 'invalid_request_error', 'llmproxy_url_too_long', 'A segment of the request path is too long.'),
  headersTooLarge: () =>
    new LlmProxyError(431, 'invalid_request_error', 'llmproxy_headers_too_large', 'The request headers are too large.'),
  notFound: (method: string, url: string) =>
    new LlmProxyError(404, 'invalid_request_error', 'llmproxy_not_found', `No route for ${echoed(method)} ${echoed(url)}.`),
  upstreamNotFound: (name: string) =>
    new LlmProxyError(404, 'invalid_request_error', 'llmproxy_not_found', `No upstream named ${quoted(name)}.`),
  modelNotFound: (model: string) =>
    new LlmProxyError(404, 'invalid_request_error', 'model_not_found', `The model ${quoted(model)} does not exist.`),
  wrongApi: (model: string, apis: string, path: string) =>
    new LlmProxyError(
      400,
      'invalid_request_error',
      'llmproxy_wrong_api',
      `The model ${quoted(model)} is served over the ${apis} API; ${path} is passed through to an upstream of its own API only (chat requests are converted).`,
    ),
  unauthorized: (message = 'Missing or invalid API key.', opts?: ErrorOptions) =>
    new LlmProxyError(401, 'authentication_error', 'llmproxy_invalid_api_key', message, opts),
  missingApiKey: () =>
    new LlmProxyError(
      401,
      'authentication_error',
      'llmproxy_missing_api_key',
      'Missing API key: send it as "Authorization: Bearer <key>", "x-api-key: <key>", "api-key: <key>" or (Gemini) "x-goog-api-key: <key>".',
      challenge,
    ),
  invalidApiKey: () => new LlmProxyError(401, 'authentication_error', 'llmproxy_invalid_api_key', 'Invalid API key.', challenge),
  ipDenied: () => new LlmProxyError(403, 'permission_error', 'llmproxy_ip_denied', 'Requests from this address are not allowed.'),
  modelNotAllowed: (model: string) =>
    new LlmProxyError(403, 'permission_error', 'llmproxy_model_not_allowed', `This API key may not use the model ${quoted(model)}.`),
  forbidden: (message: string, code = 'llmproxy_forbidden') => new LlmProxyError(403, 'permission_error', code, message),
  rateLimited: (message: string, code: string, headers?: Record<string, string>) =>
    new LlmProxyError(429, 'rate_limit_error', code, message, headers ? { headers } : undefined),
  upstreamUnavailable: (message: string, opts?: ErrorOptions) =>
    new LlmProxyError(503, 'upstream_error', 'llmproxy_upstream_unavailable', message, opts),
  upstreamTimeout: (message: string, opts?: ErrorOptions) =>
    new LlmProxyError(504, 'upstream_error', 'llmproxy_upstream_timeout', message, opts),
  upstreamFailed: (message: string, opts?: ErrorOptions) =>
    new LlmProxyError(502, 'upstream_error', 'llmproxy_upstream_error', message, opts),
  shuttingDown: () =>
    new LlmProxyError(503, 'server_error', 'llmproxy_shutting_down', 'The gateway is shutting down; retry on another instance.'),
  internal: (opts?: ErrorOptions) => new LlmProxyError(500, 'server_error', 'llmproxy_internal_error', 'Internal gateway error.', opts),
}

interface FastifyLikeError {
  code?: string
  statusCode?: number
  message?: string
  validation?: unknown
}

/**
 * Maps any error thrown inside a Fastify app (body parser, validation, plugins) to an LlmProxyError,
 * so every route answers in the OpenAI error shape.
 */
export function toLlmProxyError(err: unknown, bodyLimit?: number): LlmProxyError {
  if (err instanceof LlmProxyError) return err
  const e = (err ?? {}) as FastifyLikeError
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      // Keeping the connection overrides Fastify's `connection: close`: Node reads and drops the rest of the body
      // (within the server's request timeout), so a client still sending reads the 413 rather than EPIPE.
      return errors.bodyTooLarge(bodyLimit ?? 0).withHeaders({ connection: 'keep-alive' })
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new LlmProxyError(
        415,
        'invalid_request_error',
        'llmproxy_unsupported_media_type',
        'Unsupported content type: send application/json.',
      )
    case 'FST_ERR_BAD_URL':
      return errors.invalidUrl()
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return errors.urlTooLong()
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return errors.invalidJson('The request body is empty; send a JSON object.')
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return errors.invalidJson('The request body is not valid JSON.')
    default:
      break
  }
  if (e instanceof SyntaxError || e.code === 'FST_ERR_CTP_INVALID_JSON') return errors.invalidJson('The request body is not valid JSON.')
  // Fastify's messages may repeat client input (a 404 names the URL): echoed() caps them.
  if (e.validation !== undefined && e.message) return errors.invalidRequest(echoed(e.message))
  const status = typeof e.statusCode === 'number' ? e.statusCode : 500
  if (status === 404) return new LlmProxyError(404, 'invalid_request_error', 'llmproxy_not_found', echoed(e.message ?? 'Not found.'))
  if (status === 429) return errors.rateLimited(echoed(e.message ?? 'Rate limit exceeded.'), 'llmproxy_rate_limited')
  if (status >= 400 && status < 500) return errors.invalidRequest(echoed(e.message ?? 'Bad request.'), { cause: err })
  return errors.internal({ cause: err })
}
