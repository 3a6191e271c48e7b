// What an upstream's error answer means for the request: a prompt too long for the model, a model the upstream does
// not serve, a hold (429, a 503 with Retry-After), as each server says it. UpstreamAttempt acts on it.
import { errors, type LlmProxyError } from '@llmproxy/core'
import { type Endpoint, OPENAI_RESPONSES } from '@llmproxy/protocols'
import { holdsBack } from '@llmproxy/upstreams'

/**
 * A prompt longer than the model's context, as each server says it (a fallback model with a larger context may
 * take it); the statuses it comes with are PROMPT_TOO_LONG_STATUSES.
 * - OpenAI: the code `context_length_exceeded`.
 * - vLLM (400, `{"error":{…}}` or the older `{"object":"error",…}`): "This model's maximum context length is N
 *   tokens. However, your request has M input tokens." (vllm/entrypoints/renderer.py `_create_tokens_prompt`), or
 *   "… However, you requested M tokens (…)" (vllm/entrypoints/openai/serving_engine.py `_validate_prompt_and_tokenize`).
 * - TGI (422, router/src/validation.rs `ValidationError`): "`inputs` tokens + `max_new_tokens` must be <= N. Given:
 *   …" (MaxTotalTokens), "`inputs` must have less than N tokens. Given: …" (InputLength).
 * - Anthropic (400): "prompt is too long: N tokens > M maximum".
 * - Gemini (400 INVALID_ARGUMENT): "The input token count (N) exceeds the maximum number of tokens allowed (M)."
 */
const PROMPT_TOO_LONG =
  /context_length_exceeded|maximum context length is \d+ tokens|`inputs` tokens \+ `max_new_tokens` must be <=|`inputs` must have less than \d+ tokens|prompt is too long: \d+ tokens|input token count \(\d+\) exceeds the maximum number of tokens/
/** The statuses of a too-long prompt: 400, and TGI's 422 for every validation error. */
const PROMPT_TOO_LONG_STATUSES: ReadonlySet<number> = new Set([400, 422])

/** Whether an error answer with this status may say the prompt is too long (its text tells: isPromptTooLong). */
export function mayBePromptTooLong(status: number): boolean {
  return PROMPT_TOO_LONG_STATUSES.has(status)
}

/** Whether an error answer's text says the prompt is longer than the model's context. */
export function isPromptTooLong(text: string): boolean {
  return PROMPT_TOO_LONG.test(text)
}

/**
 * An upstream's 404 another upstream may not answer: on a generation route the upstream does not serve the model
 * there, by the gateway's mapping (a vLLM restarted with another `--served-model-name`) or the client's choice of
 * route (OpenAI's 404 for a chat model on /v1/completions; TGI has no /v1/embeddings). Token counting is no
 * generation (a server may lack it, and serve the rest), and a Responses 404 may name the client's own stored
 * response (`previous_response_id`).
 */
export function notServedBy(endpoint: Endpoint, status: number): boolean {
  return status === 404 && endpoint.metered && endpoint !== OPENAI_RESPONSES
}

/**
 * The error of an upstream status the request moves on from, should it reach the client after all (the last
 * attempt's): a hold keeps its Retry-After (1 s when it named none).
 */
export function statusError(status: number, retryAfter: number | undefined): LlmProxyError {
  const wait = { 'retry-after': String(Math.ceil((retryAfter ?? 1000) / 1000)) }
  if (status === 429) return errors.rateLimited('The upstream is rate limiting requests.', 'llmproxy_upstream_rate_limited', wait)
  return holdsBack(status, retryAfter)
    ? errors.upstreamUnavailable('The upstream is unavailable for now.', { headers: wait })
    : errors.upstreamFailed(`The upstream answered ${status}.`)
}

/** An upstream's Retry-After in ms, in seconds or as an HTTP date (undefined: none, or not one read). */
export function retryAfterMs(header: string | string[] | undefined): number | undefined {
  if (typeof header !== 'string') return undefined
  const seconds = Number(header)
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000)
  const date = Date.parse(header)
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now())
}
