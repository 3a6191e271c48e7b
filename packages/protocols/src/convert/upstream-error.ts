import type { Json } from './fields.js'
import type { ApiFamily } from './types.js'

/** What an encoder's in-band error and a converted error answer say (the gateway's error fields). */
export interface ClientError {
  statusCode: number
  type: string
  code: string
  message: string
}

/** How much of a body that is not a known error shape is quoted in the message. */
const QUOTE_CHARS = 1000

/** OpenAI error `type` for an HTTP status. */
export function openAiErrorType(status: number): string {
  if (status === 401) return 'authentication_error'
  if (status === 403) return 'permission_error'
  if (status === 429) return 'rate_limit_error'
  return status >= 500 ? 'server_error' : 'invalid_request_error'
}

/** Anthropic error `type` for an HTTP status (the SDK also picks its error class by status). */
export function anthropicErrorType(status: number): string {
  switch (status) {
    case 400:
      return 'invalid_request_error'
    case 401:
      return 'authentication_error'
    case 403:
      return 'permission_error'
    case 404:
      return 'not_found_error'
    case 413:
      return 'request_too_large'
    case 429:
      return 'rate_limit_error'
    case 503:
    case 529:
      return 'overloaded_error'
    case 504:
      return 'timeout_error'
    default:
      return status >= 500 ? 'api_error' : 'invalid_request_error'
  }
}

/** The HTTP code a Gemini error body carries for a status: 529 is Anthropic's own (overloaded), Google's is 503. */
export function geminiCode(status: number): number {
  return status === 529 ? 503 : status
}

/** Google RPC status name for an HTTP status. */
export function geminiStatus(status: number): string {
  switch (status) {
    case 400:
      return 'INVALID_ARGUMENT'
    case 401:
      return 'UNAUTHENTICATED'
    case 403:
      return 'PERMISSION_DENIED'
    case 404:
      return 'NOT_FOUND'
    case 409:
      return 'ABORTED'
    case 429:
      return 'RESOURCE_EXHAUSTED'
    case 499:
      return 'CANCELLED'
    case 501:
      return 'UNIMPLEMENTED'
    case 502:
    case 503:
    case 529:
      return 'UNAVAILABLE'
    case 504:
      return 'DEADLINE_EXCEEDED'
    default:
      return status >= 500 ? 'INTERNAL' : 'INVALID_ARGUMENT'
  }
}

/** The HTTP statuses an upstream's error names stand for (Anthropic's types, Gemini's statuses, OpenAI's codes). */
const STATUS_OF_ERROR_NAME: Readonly<Record<string, number>> = {
  overloaded_error: 529,
  rate_limit_error: 429,
  rate_limit_exceeded: 429,
  timeout_error: 504,
  api_error: 500,
  server_error: 500,
  RESOURCE_EXHAUSTED: 429,
  UNAVAILABLE: 503,
  DEADLINE_EXCEEDED: 504,
  INTERNAL: 500,
}

/**
 * The HTTP status an upstream's error name stands for, among the transient ones a client treats apart (overloaded,
 * rate limited, timed out); undefined for another name. The inverse of the maps above, for an error reported inside
 * a stream (which has no status of its own).
 */
export function statusOfUpstreamError(name: string): number | undefined {
  return Object.hasOwn(STATUS_OF_ERROR_NAME, name) ? STATUS_OF_ERROR_NAME[name] : undefined
}

/** The client's error body for a status and message; `code` is the upstream's own error name when it gave one. */
export function clientErrorBody(client: ApiFamily, status: number, message: string, code: string | undefined): Json {
  switch (client) {
    case 'openai':
      return { error: { message, type: openAiErrorType(status), param: null, code: code ?? null } }
    case 'anthropic':
      return { type: 'error', error: { type: anthropicErrorType(status), message } }
    case 'gemini':
      return { error: { code: geminiCode(status), message, status: geminiStatus(status) } }
  }
}

/**
 * An upstream's error answer (its status kept) → the client's error body: OpenAI `{"error":{message,type,code}}`,
 * Anthropic `{"type":"error","error":{type,message}}`, Gemini `{"error":{code,message,status}}`. The message is
 * the upstream's own; the upstream's error name (Anthropic `overloaded_error`, Gemini `RESOURCE_EXHAUSTED`) becomes
 * an OpenAI client's `code`; the other formats take their type from the status. A body in no known shape is quoted.
 */
export function convertUpstreamError(upstream: ApiFamily, client: ApiFamily, status: number, body: string): unknown {
  const known = readUpstreamError(upstream, body)
  const message = known?.message ?? quoteBody(status, body)
  return clientErrorBody(client, status, message, known?.name)
}

/** What an upstream's error answer says: its own message, or the body quoted when it has none the gateway reads. */
export function upstreamErrorMessage(upstream: ApiFamily, status: number, body: string): string {
  return readUpstreamError(upstream, body)?.message ?? quoteBody(status, body)
}

function readUpstreamError(upstream: ApiFamily, body: string): { message: string; name?: string } | undefined {
  let parsed: unknown
  try {
    parsed = JSON.parse(body)
  } catch {
    return undefined
  }
  // Google's OpenAI-compatible and Vertex endpoints may wrap the error in an array.
  if (Array.isArray(parsed)) parsed = parsed[0]
  if (parsed === null || typeof parsed !== 'object') return undefined
  const obj = parsed as Json
  const error = obj.error
  if (error !== null && typeof error === 'object') {
    const inner = error as Json
    if (typeof inner.message !== 'string') return undefined
    // Anthropic names it `type`, Gemini `status`, OpenAI `code` (and a broad `type`).
    const name =
      upstream === 'gemini'
        ? inner.status
        : upstream === 'anthropic'
          ? inner.type
          : typeof inner.code === 'string'
            ? inner.code
            : inner.type
    return typeof name === 'string' ? { message: inner.message, name } : { message: inner.message }
  }
  if (upstream !== 'openai') return undefined
  // TGI: {"error": "…", "error_type": "…"}; vLLM: {"object": "error", "message": "…", "type": "…"}.
  if (typeof error === 'string') return typeof obj.error_type === 'string' ? { message: error, name: obj.error_type } : { message: error }
  if (typeof obj.message === 'string')
    return typeof obj.type === 'string' ? { message: obj.message, name: obj.type } : { message: obj.message }
  return undefined
}

function quoteBody(status: number, body: string): string {
  const text = body.trim()
  if (text === '') return `The upstream answered HTTP ${status} with no body.`
  return `The upstream answered HTTP ${status}: ${text.length > QUOTE_CHARS ? `${text.slice(0, QUOTE_CHARS)}…` : text}`
}
