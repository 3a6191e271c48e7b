import type { ClientApi, Protocol, Usage } from './usage-record.js'

/** Per-key limits, written by auth (from config or a custom key store), read by rate-limit. */
export interface KeyLimits {
  rpm?: number
  rps?: number
  /** Tokens per minute. */
  tpm?: number
  /** Concurrent requests in flight. */
  concurrency?: number
  quota?: { tokens: number; per: 'day' | 'month' }
}

/** Why a request was turned away (reported to `onReject` listeners): before routing, or by a pool's full queue (`queue_full`). */
export interface Rejection {
  reason: 'auth' | 'ip' | 'model_access' | 'rate_limit' | 'token_limit' | 'concurrency' | 'quota' | 'queue_full'
  keyId: string | null
  statusCode: number
}

export type Outcome = 'pending' | 'ok' | 'upstream_error' | 'client_aborted' | 'rejected' | 'gateway_error'

/** One try of one upstream, reported to `onAttempt` listeners (metrics, health). */
export interface Attempt {
  upstream: string
  upstreamModel: string
  /** `ok` (its answer reached the client whole), or why not (reported when the attempt is over). */
  result: 'ok' | 'connect_error' | 'timeout' | 'stall' | 'status' | 'error' | 'aborted'
  status?: number
  durationMs: number
  ttftMs?: number
}

/**
 * `request.llm`: the facts of one LLM request. Each field has one writer:
 * core (ids, timings start/end; outcome 'rejected' when a plugin refuses the request, which the router then never
 * sees), auth (keyId), router (models, upstream, attempts, usage, outcome, error), `sendError` (refusedWith).
 */
export class LlmContext {
  readonly requestId: string
  /** performance.now() at arrival. */
  readonly startedAt: number
  keyId: string | null = null
  /** Models (route names or aliases) the key may use; null = any. Written by auth, enforced by the router. */
  allowedModels: ReadonlySet<string> | null = null
  /** The key's own limits, if any. Written by auth, read by rate-limit. */
  keyLimits: KeyLimits | null = null
  model: string | null = null
  /**
   * The model name or alias, as configured, that `model` resolved by: `model` itself, or the alias pattern it matched
   * (`gpt-*`). Metrics label by it: a client may send any of the names a pattern matches.
   */
  configuredModel: string | null = null
  upstreamModel: string | null = null
  upstream: string | null = null
  protocol: Protocol = 'openai'
  /** The API the client speaks (its route's). */
  clientApi: ClientApi = 'openai'
  stream = false
  attempts = 0
  /** A stream cut after its first byte was finished by another attempt. */
  resumed = false
  /** Continuations started for this request's stream (each after a cut past the first byte). */
  resumes = 0
  /** performance.now() values; 0 = not yet. */
  upstreamHeadersAt = 0
  firstTokenAt = 0
  endedAt = 0
  usage: Usage | null = null
  estimated = false
  outcome: Outcome = 'pending'
  clientAborted = false
  error: { code: string; message: string } | null = null
  /** The catalogue code of the error a plugin answered the request with (`sendError`: a refusal); null when none. */
  refusedWith: string | null = null
  /** Free-form data that listeners copy into the usage record (e.g. from custom hooks). */
  metadata: Record<string, unknown> | null = null

  constructor(requestId: string, startedAt: number) {
    this.requestId = requestId
    this.startedAt = startedAt
  }

  get ttftMs(): number | null {
    return this.firstTokenAt === 0 ? null : round(this.firstTokenAt - this.startedAt)
  }

  get durationMs(): number {
    return round((this.endedAt === 0 ? performance.now() : this.endedAt) - this.startedAt)
  }
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000
}
