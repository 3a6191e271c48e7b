/**
 * Every error the gateway itself produces: HTTP status, type, stable code, from one catalogue (CATALOGUE below).
 * All codes live here so that clients can rely on them; each API's shape of them is @llmproxy/protocols'.
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
      param: this.param,
    })
  }

  toJSON(): ErrorBody {
    // OpenAI's own shape: `param` is null when the error is about no one field.
    return { error: { message: this.message, type: this.type, param: this.param ?? null, code: this.code } }
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

/** One entry of the catalogue: the status and type every error with that code has, and when it happens. */
export interface CatalogueEntry {
  readonly status: number
  readonly type: ErrorType
  /** When the gateway answers with it, and what the client can do (docs/errors.md is generated from this). */
  readonly when: string
}

/**
 * The catalogue: every code the gateway itself answers with (in the client's API shape), its HTTP status and type.
 * Clients and operators rely on these codes; add one here before using it. `model_not_found` and `quota_exceeded`
 * keep the names OpenAI clients know.
 */
export const CATALOGUE = {
  llmproxy_invalid_request: {
    status: 400,
    type: 'invalid_request_error',
    when: 'The request is not what the route takes (a body that is no JSON object, a field of the wrong type, a Responses `background: true`, which the gateway does not serve). Fix the request.',
  },
  llmproxy_invalid_json: { status: 400, type: 'invalid_request_error', when: 'The body is empty or not valid JSON.' },
  llmproxy_json_too_deep: {
    status: 400,
    type: 'invalid_request_error',
    when: 'The body nests arrays and objects deeper than the limit (128).',
  },
  llmproxy_invalid_content_encoding: {
    status: 400,
    type: 'invalid_request_error',
    when: 'A body labelled gzip, deflate or br does not decode.',
  },
  llmproxy_missing_model: { status: 400, type: 'invalid_request_error', when: 'The body has no "model" string.' },
  llmproxy_not_convertible: {
    status: 400,
    type: 'invalid_request_error',
    when: 'The request uses something the upstream’s API cannot represent (the field is named in `param`); send it to a model served over the client’s own API, or drop the field.',
  },
  llmproxy_wrong_api: {
    status: 400,
    type: 'invalid_request_error',
    when: 'An OpenAI-only route (completions, embeddings, responses) for a model served over another API: only chat requests are converted.',
  },
  llmproxy_malformed_request: { status: 400, type: 'invalid_request_error', when: 'The request is not valid HTTP/1.1.' },
  llmproxy_invalid_url: { status: 400, type: 'invalid_request_error', when: 'The URL has bad percent-encoding.' },
  llmproxy_missing_api_key: {
    status: 401,
    type: 'authentication_error',
    when: 'No API key was sent (Authorization: Bearer, x-api-key, api-key or x-goog-api-key).',
  },
  llmproxy_invalid_api_key: { status: 401, type: 'authentication_error', when: 'The API key is not one the gateway knows.' },
  llmproxy_ip_denied: { status: 403, type: 'permission_error', when: 'The client address is not in the IP allowlist (or is denied).' },
  llmproxy_model_not_allowed: { status: 403, type: 'permission_error', when: 'The API key may not use this model.' },
  llmproxy_forbidden: { status: 403, type: 'permission_error', when: 'The request is refused by a custom access rule.' },
  llmproxy_not_found: { status: 404, type: 'invalid_request_error', when: 'No route (or admin object) by that name.' },
  model_not_found: { status: 404, type: 'invalid_request_error', when: 'No model or alias by that name: GET /v1/models lists them.' },
  llmproxy_thread_not_kept: {
    status: 404,
    type: 'invalid_request_error',
    when: 'An Anthropic `thread` of type `continue` for a model served over another API: the gateway keeps no message threads. Sent with Anthropic’s `error.details.error_code: "thread_not_found"`, from which @anthropic-ai/sdk’s `beta.messages.thread()` and `toolRunner()` recover by sending the whole conversation again (or pass `thread: false`). Nothing reached an upstream.',
  },
  llmproxy_request_timeout: {
    status: 408,
    type: 'invalid_request_error',
    when: 'The client did not send its request within the server’s timeouts.',
  },
  llmproxy_body_too_large: {
    status: 413,
    type: 'invalid_request_error',
    when: 'The body (or, compressed, its decoded size) exceeds bodyLimit.',
  },
  llmproxy_url_too_long: { status: 414, type: 'invalid_request_error', when: 'A segment of the request path is too long.' },
  llmproxy_unsupported_media_type: { status: 415, type: 'invalid_request_error', when: 'The body is not application/json.' },
  llmproxy_unsupported_content_encoding: {
    status: 415,
    type: 'invalid_request_error',
    when: 'The body is compressed with a coding other than gzip, deflate or br.',
  },
  llmproxy_headers_too_large: { status: 431, type: 'invalid_request_error', when: 'The request headers are too large.' },
  llmproxy_rate_limited: {
    status: 429,
    type: 'rate_limit_error',
    when: 'A request rate limit (gateway or key, per second or minute) is reached: retry after `retry-after`.',
  },
  llmproxy_token_limit: {
    status: 429,
    type: 'rate_limit_error',
    when: 'The key’s tokens-per-minute limit would be exceeded by this request: retry after `retry-after`. One that alone needs more than the limit gets `x-should-retry: false` and no `retry-after`: lower max_tokens or the prompt (embeddings: send less input).',
  },
  llmproxy_concurrency_limit: { status: 429, type: 'rate_limit_error', when: 'The key has as many requests in flight as it may.' },
  quota_exceeded: {
    status: 429,
    type: 'rate_limit_error',
    when: 'The key’s token quota for the day or month is used up: `retry-after` says when it resets (none for a request larger than the whole quota). Sent with `x-should-retry: false`: the SDKs fail at once instead of sleeping until then.',
  },
  llmproxy_upstream_rate_limited: {
    status: 429,
    type: 'rate_limit_error',
    when: 'Every upstream that could answer is rate limiting (429) for longer than retry.maxRetryAfterMs.',
  },
  llmproxy_internal_error: { status: 500, type: 'server_error', when: 'A bug in the gateway or a plugin hook: the log has the details.' },
  llmproxy_upstream_error: {
    status: 502,
    type: 'upstream_error',
    when: 'The upstream failed: connection lost, an error answer with nowhere left to retry, malformed data; after the first byte, as an in-band stream error, of the kind the upstream reported (Anthropic `overloaded_error`, Gemini `RESOURCE_EXHAUSTED`).',
  },
  llmproxy_upstream_unavailable: {
    status: 503,
    type: 'upstream_error',
    when: 'No upstream of the model (nor its fallbacks) could be reached; with `retry-after`, they answered 503 with a Retry-After longer than retry.maxRetryAfterMs: retry after it.',
  },
  llmproxy_upstreams_busy: {
    status: 503,
    type: 'upstream_error',
    when: 'Every upstream is at maxConcurrency and the queue is full, or the wait timed out.',
  },
  llmproxy_shutting_down: { status: 503, type: 'server_error', when: 'The gateway is shutting down: retry on another instance.' },
  llmproxy_upstream_timeout: {
    status: 504,
    type: 'upstream_error',
    when: 'No answer (or no first token) within the timeouts, or the retry budget ran out. When the attempts timed out, sent with `x-should-retry: false`: the gateway retried what its retry settings allow, and an SDK’s retry would send the prompt again, to wait as long.',
  },
  llmproxy_setup: {
    status: 500,
    type: 'server_error',
    when: 'Not an HTTP answer: a plugin was registered wrongly (a plugin it needs is missing, an unknown strategy); thrown at start-up.',
  },
} as const satisfies Record<string, CatalogueEntry>

export type ErrorCode = keyof typeof CATALOGUE

type ErrorOptionsWithParam = ErrorOptions & { param?: string }

/** An error of the catalogue: its status and type come with its code. */
export function coded(code: ErrorCode, message: string, opts?: ErrorOptionsWithParam): LlmProxyError {
  const entry: CatalogueEntry = CATALOGUE[code]
  return new LlmProxyError(entry.status, entry.type, code, message, opts)
}

/** The error factory: one function per stable code. */
export const errors = {
  invalidRequest: (message: string, opts?: ErrorOptionsWithParam) => coded('llmproxy_invalid_request', message, opts),
  invalidJson: (message: string, opts?: ErrorOptions) => coded('llmproxy_invalid_json', message, opts),
  jsonTooDeep: (maxDepth: number) =>
    coded('llmproxy_json_too_deep', `The request body nests arrays and objects more than ${maxDepth} levels deep.`),
  invalidContentEncoding: (coding: string) =>
    coded('llmproxy_invalid_content_encoding', `The request body is not valid ${quoted(coding)} data (Content-Encoding).`),
  missingModel: () => coded('llmproxy_missing_model', 'The request body must include a "model" string.'),
  bodyTooLarge: (limit: number, decoded = false) =>
    coded('llmproxy_body_too_large', `The request body exceeds the limit of ${limit} bytes${decoded ? ' once decompressed' : ''}.`),
  unsupportedMediaType: (contentType?: string) =>
    coded(
      'llmproxy_unsupported_media_type',
      contentType === undefined
        ? 'Unsupported content type: send application/json.'
        : `Unsupported content type ${quoted(contentType)}: send application/json.`,
    ),
  notConvertible: (param: string, message: string) => coded('llmproxy_not_convertible', `${message} (${param})`, { param }),
  unsupportedContentEncoding: (coding: string) =>
    coded(
      'llmproxy_unsupported_content_encoding',
      `Unsupported Content-Encoding ${quoted(coding)}: send the body uncompressed, or compressed with one of ${ACCEPTED_CONTENT_CODINGS}.`,
      { headers: { 'accept-encoding': ACCEPTED_CONTENT_CODINGS } },
    ),
  malformedRequest: () => coded('llmproxy_malformed_request', 'The request is not valid HTTP/1.1.'),
  invalidUrl: () => coded('llmproxy_invalid_url', 'The request URL is not valid (bad percent-encoding).'),
  requestTimeout: () => coded('llmproxy_request_timeout', 'The request was not received in time.'),
  urlTooLong: () => coded('llmproxy_url_too_long', 'A segment of the request path is too long.'),
  headersTooLarge: () => coded('llmproxy_headers_too_large', 'The request headers are too large.'),
  notFound: (method: string, url: string) => coded('llmproxy_not_found', `No route for ${echoed(method)} ${echoed(url)}.`),
  upstreamNotFound: (name: string) => coded('llmproxy_not_found', `No upstream named ${quoted(name)}.`),
  modelNotFound: (model: string) => coded('model_not_found', `The model ${quoted(model)} does not exist.`),
  wrongApi: (model: string, apis: string, path: string) =>
    coded(
      'llmproxy_wrong_api',
      `The model ${quoted(model)} is served over the ${apis} API; ${path} is passed through to an upstream of its own API only (chat requests are converted).`,
    ),
  unauthorized: (message = 'Missing or invalid API key.', opts?: ErrorOptions) => coded('llmproxy_invalid_api_key', message, opts),
  missingApiKey: () =>
    coded(
      'llmproxy_missing_api_key',
      'Missing API key: send it as "Authorization: Bearer <key>", "x-api-key: <key>", "api-key: <key>" or (Gemini) "x-goog-api-key: <key>".',
      challenge,
    ),
  invalidApiKey: () => coded('llmproxy_invalid_api_key', 'Invalid API key.', challenge),
  ipDenied: () => coded('llmproxy_ip_denied', 'Requests from this address are not allowed.'),
  modelNotAllowed: (model: string) => coded('llmproxy_model_not_allowed', `This API key may not use the model ${quoted(model)}.`),
  forbidden: (message: string) => coded('llmproxy_forbidden', message),
  rateLimited: (message: string, code: ErrorCode, headers?: Record<string, string>) =>
    coded(code, message, headers ? { headers } : undefined),
  upstreamsBusy: (message: string) => coded('llmproxy_upstreams_busy', message, { headers: { 'retry-after': '1' } }),
  upstreamUnavailable: (message: string, opts?: ErrorOptions) => coded('llmproxy_upstream_unavailable', message, opts),
  upstreamTimeout: (message: string, opts?: ErrorOptions) => coded('llmproxy_upstream_timeout', message, opts),
  upstreamFailed: (message: string, opts?: ErrorOptions) => coded('llmproxy_upstream_error', message, opts),
  /**
   * An upstream's error inside a stream the client already reads: `status` is the one its error's name stands for
   * (529 for Anthropic's overloaded_error), so that the client's in-band error says the same (its API's type for it).
   */
  upstreamFailedInBand: (status: number, message: string) =>
    new LlmProxyError(status, CATALOGUE.llmproxy_upstream_error.type, 'llmproxy_upstream_error', message),
  shuttingDown: () => coded('llmproxy_shutting_down', 'The gateway is shutting down; retry on another instance.'),
  internal: (opts?: ErrorOptions) => coded('llmproxy_internal_error', 'Internal gateway error.', opts),
  /** A plugin registered wrongly: thrown at start-up, never an HTTP answer. */
  setup: (message: string) => coded('llmproxy_setup', message),
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
      return errors.unsupportedMediaType()
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
  if (status === 404) return coded('llmproxy_not_found', echoed(e.message ?? 'Not found.'))
  if (status === 429) return errors.rateLimited(echoed(e.message ?? 'Rate limit exceeded.'), 'llmproxy_rate_limited')
  if (status >= 400 && status < 500) return errors.invalidRequest(echoed(e.message ?? 'Bad request.'), { cause: err })
  return errors.internal({ cause: err })
}
