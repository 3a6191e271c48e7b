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

  toJSON(): ErrorBody {
    const body: ErrorBody = { error: { message: this.message, type: this.type, code: this.code } }
    if (this.param !== undefined) body.error.param = this.param
    return body
  }
}

type ErrorOptions = { cause?: unknown; headers?: Record<string, string> }

/** The error factory: one function per stable code. */
export const errors = {
  invalidRequest: (message: string, opts?: ErrorOptions) =>
    new LlmProxyError(400, 'invalid_request_error', 'llmproxy_invalid_request', message, opts),
  invalidJson: (message: string, opts?: ErrorOptions) =>
    new LlmProxyError(400, 'invalid_request_error', 'llmproxy_invalid_json', message, opts),
  missingModel: () =>
    new LlmProxyError(400, 'invalid_request_error', 'llmproxy_missing_model', 'The request body must include a "model" string.'),
  bodyTooLarge: (limit: number) =>
    new LlmProxyError(413, 'invalid_request_error', 'llmproxy_body_too_large', `The request body exceeds the limit of ${limit} bytes.`),
  unsupportedMediaType: (contentType: string | undefined) =>
    new LlmProxyError(
      415,
      'invalid_request_error',
      'llmproxy_unsupported_media_type',
      `Unsupported content type ${JSON.stringify(contentType ?? '')}: send application/json.`,
    ),
  notConvertible: (param: string, message: string) =>
    new LlmProxyError(400, 'invalid_request_error', 'llmproxy_not_convertible', `${message} (${param})`, { param }),
  notFound: (method: string, url: string) =>
    new LlmProxyError(404, 'invalid_request_error', 'llmproxy_not_found', `No route for ${method} ${url}.`),
  modelNotFound: (model: string) =>
    new LlmProxyError(404, 'invalid_request_error', 'model_not_found', `The model ${JSON.stringify(model)} does not exist.`),
  wrongApi: (model: string, apis: string, path: string) =>
    new LlmProxyError(
      400,
      'invalid_request_error',
      'llmproxy_wrong_api',
      `The model ${JSON.stringify(model)} is served over the ${apis} API; ${path} is passed through to an upstream of its own API only (chat requests are converted).`,
    ),
  unauthorized: (message = 'Missing or invalid API key.', opts?: ErrorOptions) =>
    new LlmProxyError(401, 'authentication_error', 'llmproxy_invalid_api_key', message, opts),
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
      return errors.bodyTooLarge(bodyLimit ?? 0)
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new LlmProxyError(
        415,
        'invalid_request_error',
        'llmproxy_unsupported_media_type',
        'Unsupported content type: send application/json.',
      )
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return errors.invalidJson('The request body is empty; send a JSON object.')
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return errors.invalidJson('The request body is not valid JSON.')
    default:
      break
  }
  if (e instanceof SyntaxError || e.code === 'FST_ERR_CTP_INVALID_JSON') return errors.invalidJson('The request body is not valid JSON.')
  if (e.validation !== undefined && e.message) return errors.invalidRequest(e.message)
  const status = typeof e.statusCode === 'number' ? e.statusCode : 500
  if (status === 404) return new LlmProxyError(404, 'invalid_request_error', 'llmproxy_not_found', e.message ?? 'Not found.')
  if (status === 429) return errors.rateLimited(e.message ?? 'Rate limit exceeded.', 'llmproxy_rate_limited')
  if (status >= 400 && status < 500) return errors.invalidRequest(e.message ?? 'Bad request.', { cause: err })
  return errors.internal({ cause: err })
}
