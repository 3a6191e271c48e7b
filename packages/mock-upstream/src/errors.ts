import type { Job } from './job.js'

/** The `error.code` of every error the mock produces itself (a `status` behavior uses its own `errorCode`). */
export const ERROR_CODES = {
  /** Unknown route or method (404). */
  notFound: 'mock_not_found',
  /** GET /health or /v1/models after setHealthy(false) (503). */
  unhealthy: 'mock_unhealthy',
  /** A generation route whose body is not a JSON object (400). */
  invalidBody: 'mock_invalid_body',
  /** An invalid behavior in program(), the body `mock` field or the x-mock-behavior header (400). */
  invalidBehavior: 'mock_invalid_behavior',
} as const

/** Which API's error shape a route answers with. */
export type ErrorShape = 'openai' | 'anthropic' | 'gemini'

/** The OpenAI error type for an HTTP status. */
function openaiType(status: number): string {
  if (status === 401) return 'authentication_error'
  if (status === 403) return 'permission_error'
  if (status === 404) return 'not_found_error'
  if (status === 429) return 'rate_limit_error'
  if (status >= 500) return 'server_error'
  return 'invalid_request_error'
}

/** Anthropic's error type for an HTTP status (https://docs.anthropic.com/en/api/errors). */
function anthropicType(status: number): string {
  switch (status) {
    case 401:
      return 'authentication_error'
    case 402:
      return 'billing_error'
    case 403:
      return 'permission_error'
    case 404:
      return 'not_found_error'
    case 409:
      return 'conflict_error'
    case 413:
      return 'request_too_large'
    case 429:
      return 'rate_limit_error'
    case 504:
      return 'timeout_error'
    case 529:
      return 'overloaded_error'
    default:
      return status >= 500 ? 'api_error' : 'invalid_request_error'
  }
}

/** Gemini's (google.rpc) status for an HTTP status. */
function geminiStatus(status: number): string {
  switch (status) {
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
    case 503:
      return 'UNAVAILABLE'
    case 504:
      return 'DEADLINE_EXCEEDED'
    default:
      return status >= 500 ? 'INTERNAL' : 'INVALID_ARGUMENT'
  }
}

/** What an error says besides its status. */
export interface ErrorDetails {
  message: string
  /** OpenAI `error.code` (the mock's own errors and `errorCode`); null when there is none. */
  code: string | null
  /** `errorCode` of a behavior: also Anthropic's `error.type` and Gemini's `error.status`. */
  override: string | null
  /** OpenAI `error.param`: the request field at fault. */
  param: string | null
  /** Seconds to wait (Gemini: a `RetryInfo` detail); -1: none. */
  retryAfter: number
}

/** The error object of a shape: the body of an HTTP error, and the payload of an in-stream error event. */
export function errorObject(job: Job, shape: ErrorShape, status: number, details: ErrorDetails): object {
  if (shape === 'anthropic') {
    return {
      type: 'error',
      error: { type: details.override ?? anthropicType(status), message: details.message },
      request_id: `req_mock_${job.rec.seq}`,
    }
  }
  if (shape === 'gemini') {
    const error: Record<string, unknown> = { code: status, message: details.message, status: details.override ?? geminiStatus(status) }
    if (details.retryAfter >= 0) {
      error.details = [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${details.retryAfter}s` }]
    }
    return { error }
  }
  return { error: { message: details.message, type: openaiType(status), param: details.param, code: details.code } }
}

/** Answers with an error in the shape of the job's route (`job.shape`). */
export function sendError(job: Job, status: number, message: string, code: string | null, param: string | null = null): void {
  const details: ErrorDetails = { message, code, override: null, param, retryAfter: -1 }
  job.sendBody(status, 'application/json', JSON.stringify(errorObject(job, job.shape, status, details)))
}

/** Answers with the error a `status` behavior asks for (its `errorCode`, its `Retry-After`). */
export function sendStatusError(job: Job): void {
  const status = job.status
  const details: ErrorDetails = {
    message: `Mock error (status ${status})`,
    code: job.errorCode,
    override: job.errorCode,
    param: null,
    retryAfter: job.retryAfter,
  }
  job.sendBody(status, 'application/json', JSON.stringify(errorObject(job, job.shape, status, details)), job.retryAfter)
}

/** What each API says when it fails mid-answer (the `error-event` fault): OpenAI's 500, Anthropic's 529, Gemini's 503. */
const FAULT_ERRORS: Readonly<Record<ErrorShape, { status: number; message: string }>> = {
  openai: { status: 500, message: 'The server had an error while processing your request. Sorry about that!' },
  anthropic: { status: 529, message: 'Overloaded' },
  gemini: { status: 503, message: 'The model is overloaded. Please try again later.' },
}

/** The error of the `error-event` fault: its status and its error object (the in-stream event's payload). */
export function faultError(job: Job, shape: ErrorShape): { status: number; body: object } {
  const { status, message } = FAULT_ERRORS[shape]
  const details: ErrorDetails = { message, code: job.errorCode, override: job.errorCode, param: null, retryAfter: -1 }
  return { status, body: errorObject(job, shape, status, details) }
}
