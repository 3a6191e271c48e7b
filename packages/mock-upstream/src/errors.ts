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

/** The OpenAI error type for an HTTP status. */
function errorType(status: number): string {
  if (status === 401) return 'authentication_error'
  if (status === 403) return 'permission_error'
  if (status === 404) return 'not_found_error'
  if (status === 429) return 'rate_limit_error'
  if (status >= 500) return 'server_error'
  return 'invalid_request_error'
}

/** Answers with `{"error":{"message","type","code"}}`. */
export function sendError(job: Job, status: number, message: string, code: string | null, retryAfter = -1): void {
  job.sendBody(status, 'application/json', JSON.stringify({ error: { message, type: errorType(status), code } }), retryAfter)
}
