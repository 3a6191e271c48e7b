/** Faults the mock can inject (see README). */
export type MockFault = 'reset-before-headers' | 'no-response' | 'cut' | 'stall' | 'malformed' | 'no-done' | 'hold-open' | 'error-event'

/**
 * A finish reason to force, in neutral terms; each format reports its own value (see README):
 * `stop`, `length`, `content_filter` (OpenAI `content_filter`, Anthropic `refusal`, Gemini `SAFETY`),
 * `stop_sequence` (Anthropic `stop_sequence`), `malformed_function_call` (Gemini `MALFORMED_FUNCTION_CALL`),
 * `pause` (Anthropic `pause_turn`).
 */
export type MockFinish = 'stop' | 'length' | 'content_filter' | 'stop_sequence' | 'malformed_function_call' | 'pause'

/** A tool call the answer makes (after its text). */
export interface MockToolCall {
  name: string
  arguments: Record<string, unknown>
}

/** How the mock answers a request. Every field is optional; see README for the defaults. */
export interface MockBehavior {
  /** Delay before the first token, in ms (streamed: after the headers; non-streamed: before the whole answer). */
  ttftMs?: number
  /** Delay between tokens, in ms (0 = all at once). */
  gapMs?: number
  /** Completion tokens to generate (default 8); the request's max-tokens field caps it. */
  tokens?: number
  /** A literal answer instead of the WORDS, split into tokens after each space (`tokens` is then ignored). */
  text?: string
  /** The generated words start this many places further in WORDS (another upstream, another text). */
  shift?: number
  /** Reasoning tokens before the answer text (chat, Anthropic, Gemini). */
  reasoning?: number
  /** Anthropic: a `redacted_thinking` block follows the thinking block (with `reasoning` > 0). */
  redactedThinking?: boolean
  /** Tool calls after the answer text; several are parallel calls (chat, Anthropic, Gemini). */
  toolCalls?: MockToolCall[]
  /** Forces the finish reason. */
  finish?: MockFinish
  /** Prompt tokens read from the cache (reported in each format's cache fields). */
  cachedTokens?: number
  /** Prompt tokens written to the cache (Anthropic `cache_creation_input_tokens`). */
  cacheWriteTokens?: number
  /** true: a request that ends with an assistant/model turn gets a 400 (as models without prefill answer). */
  rejectPrefill?: boolean
  /** Answer with this HTTP error status (400-599) and an error body in the route's format instead; 0 = none (overrides a lower layer). */
  status?: number
  /** Seconds, sent as `Retry-After` with `status`. */
  retryAfter?: number
  /** The error's code (OpenAI `error.code`, Anthropic `error.type`, Gemini `error.status`) sent with `status` or `error-event`. */
  errorCode?: string
  fault?: MockFault
  /** Tokens written before `cut` / `stall` / `malformed` / `error-event` (default 2). */
  faultAfter?: number
  /** false: never report usage. Default true. */
  usage?: boolean
  /** `gzip`: the response body is gzip-compressed (`Content-Encoding: gzip`) whatever the request accepts; `identity` cancels it. */
  contentEncoding?: 'gzip' | 'identity'
  /** SSE line endings: `crlf` or `cr` instead of each format's own (`lf` forces LF, Gemini's CRLF included). */
  lineEnding?: 'lf' | 'crlf' | 'cr'
  /** `tgi`: /v1/chat/completions answers as Hugging Face TGI writes it (see README); `openai`, the default, cancels it. */
  dialect?: MockDialect
}

/** The server whose bytes the OpenAI chat route writes. */
export type MockDialect = 'openai' | 'tgi'

const FAULTS: ReadonlySet<string> = new Set<MockFault>([
  'reset-before-headers',
  'no-response',
  'cut',
  'stall',
  'malformed',
  'no-done',
  'hold-open',
  'error-event',
])
const FINISHES: ReadonlySet<string> = new Set<MockFinish>([
  'stop',
  'length',
  'content_filter',
  'stop_sequence',
  'malformed_function_call',
  'pause',
])
const ENCODINGS: ReadonlySet<string> = new Set(['gzip', 'identity'])
const LINE_ENDINGS: ReadonlySet<string> = new Set(['lf', 'crlf', 'cr'])
const DIALECTS: ReadonlySet<string> = new Set<MockDialect>(['openai', 'tgi'])

/** The longest delay a Node timer takes (ms). */
const MAX_DELAY = 2 ** 31 - 1
const NUMBER_FIELDS = ['ttftMs', 'gapMs', 'retryAfter'] as const
const INTEGER_FIELDS = ['tokens', 'faultAfter', 'shift', 'reasoning', 'cachedTokens', 'cacheWriteTokens'] as const
const BOOLEAN_FIELDS = ['usage', 'rejectPrefill', 'redactedThinking'] as const

function oneOf(field: string, value: unknown, allowed: ReadonlySet<string>): string | null {
  if (value === undefined || (typeof value === 'string' && allowed.has(value))) return null
  return `${field} must be one of ${[...allowed].join(', ')}`
}

function toolCallsProblem(value: unknown): string | null {
  if (!Array.isArray(value)) return 'toolCalls must be an array'
  for (let i = 0; i < value.length; i++) {
    const call: unknown = value[i]
    if (call === null || typeof call !== 'object' || Array.isArray(call)) return `toolCalls[${i}] must be an object`
    const { name, arguments: args } = call as Record<string, unknown>
    if (typeof name !== 'string' || name === '') return `toolCalls[${i}].name must be a non-empty string`
    if (args === null || typeof args !== 'object' || Array.isArray(args)) return `toolCalls[${i}].arguments must be an object`
  }
  return null
}

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
  for (const field of BOOLEAN_FIELDS) {
    if (b[field] !== undefined && typeof b[field] !== 'boolean') return `${field} must be a boolean`
  }
  const status = b.status
  if (
    status !== undefined &&
    (typeof status !== 'number' || !Number.isInteger(status) || (status !== 0 && (status < 400 || status > 599)))
  ) {
    return 'status must be 0 (none) or an integer from 400 to 599'
  }
  if (b.errorCode !== undefined && typeof b.errorCode !== 'string') return 'errorCode must be a string'
  if (b.text !== undefined && typeof b.text !== 'string') return 'text must be a string'
  if (b.toolCalls !== undefined) {
    const problem = toolCallsProblem(b.toolCalls)
    if (problem !== null) return problem
  }
  return (
    oneOf('fault', b.fault, FAULTS) ??
    oneOf('finish', b.finish, FINISHES) ??
    oneOf('contentEncoding', b.contentEncoding, ENCODINGS) ??
    oneOf('lineEnding', b.lineEnding, LINE_ENDINGS) ??
    oneOf('dialect', b.dialect, DIALECTS)
  )
}

/** Throws a TypeError when `value` is not a valid MockBehavior (for programmatic input). */
export function assertBehavior(value: unknown, subject: string): asserts value is MockBehavior {
  const problem = behaviorProblem(value)
  if (problem !== null) throw new TypeError(`${subject}: ${problem}`)
}
