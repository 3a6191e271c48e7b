/** Faults the mock can inject (see README). */
export type MockFault = 'reset-before-headers' | 'no-response' | 'cut' | 'stall' | 'malformed' | 'no-done'

/** How the mock answers a request. Every field is optional; see README for the defaults. */
export interface MockBehavior {
  /** Delay before the first token, in ms (streamed: after the headers; non-streamed: before the whole answer). */
  ttftMs?: number
  /** Delay between tokens, in ms (0 = all at once). */
  gapMs?: number
  /** Completion tokens to generate (default 8); the request's max-tokens field caps it. */
  tokens?: number
  /** Answer with this HTTP error status (400-599) and an OpenAI-style error body instead; 0 = none (overrides a lower layer). */
  status?: number
  /** Seconds, sent as `Retry-After` with `status`. */
  retryAfter?: number
  /** `error.code` of the error body sent with `status`. */
  errorCode?: string
  fault?: MockFault
  /** Tokens written before `cut` / `stall` / `malformed` (default 2). */
  faultAfter?: number
  /** false: never report usage. Default true. */
  usage?: boolean
}

const FAULTS: ReadonlySet<string> = new Set<MockFault>(['reset-before-headers', 'no-response', 'cut', 'stall', 'malformed', 'no-done'])

/** The longest delay a Node timer takes (ms). */
const MAX_DELAY = 2 ** 31 - 1
const NUMBER_FIELDS = ['ttftMs', 'gapMs', 'retryAfter'] as const
const INTEGER_FIELDS = ['tokens', 'faultAfter'] as const

/**
 * Checks an untrusted behavior (body `mock` field, `x-mock-behavior` header, options).
 * Returns the problem as a message, or null when the value is a valid MockBehavior. Unknown keys are ignored.
 */
export function behaviorProblem(value: unknown): string | null {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return 'mock behavior must be an object'
  const b = value as Record<string, unknown>
  for (const field of NUMBER_FIELDS) {
    const v = b[field]
    if (v !== undefined && (typeof v !== 'number' || !(v >= 0 && v <= MAX_DELAY))) return `${field} must be a number from 0 to ${MAX_DELAY}`
  }
  for (const field of INTEGER_FIELDS) {
    const v = b[field]
    if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)) return `${field} must be an integer >= 0`
  }
  const status = b.status
  if (
    status !== undefined &&
    (typeof status !== 'number' || !Number.isInteger(status) || (status !== 0 && (status < 400 || status > 599)))
  ) {
    return 'status must be 0 (none) or an integer from 400 to 599'
  }
  if (b.errorCode !== undefined && typeof b.errorCode !== 'string') return 'errorCode must be a string'
  if (b.usage !== undefined && typeof b.usage !== 'boolean') return 'usage must be a boolean'
  if (b.fault !== undefined && (typeof b.fault !== 'string' || !FAULTS.has(b.fault)))
    return `fault must be one of ${[...FAULTS].join(', ')}`
  return null
}

/** Throws a TypeError when `value` is not a valid MockBehavior (for programmatic input). */
export function assertBehavior(value: unknown, subject: string): asserts value is MockBehavior {
  const problem = behaviorProblem(value)
  if (problem !== null) throw new TypeError(`${subject}: ${problem}`)
}
