import { errors, type LlmProxyError } from '@llmproxy/core'

/** Stable codes of the 429s this plugin answers (type `rate_limit_error`). */
export const RATE_LIMIT_CODES = {
  requests: 'llmproxy_rate_limited',
  tokens: 'llmproxy_token_limit',
  concurrency: 'llmproxy_concurrency_limit',
  quota: 'quota_exceeded',
} as const

export const rateLimitErrors = {
  requests: (scope: 'gateway' | 'key', limit: number, per: 'second' | 'minute', headers: Record<string, string>): LlmProxyError =>
    errors.rateLimited(
      `Rate limit reached for ${scope === 'gateway' ? 'the gateway' : 'this key'}: ${limit} requests per ${per}. Retry after ${headers['retry-after']} s.`,
      RATE_LIMIT_CODES.requests,
      headers,
    ),
  /** `shrink`: what the request can lower to fit (see `shrinkable`). */
  tokens: (limit: number, requested: number, used: number, headers: Record<string, string>, shrink: string): LlmProxyError =>
    errors.rateLimited(
      requested > limit
        ? `This request may use up to ${requested} tokens, more than this key's limit of ${limit} tokens per minute: ${shrink}.`
        : `Token rate limit reached for this key: ${limit} tokens per minute, ${used} used, this request may use up to ${requested}. Retry after ${headers['retry-after']} s.`,
      RATE_LIMIT_CODES.tokens,
      headers,
    ),
  concurrency: (limit: number, headers: Record<string, string>): LlmProxyError =>
    errors.rateLimited(`Too many requests in flight for this key: the limit is ${limit}.`, RATE_LIMIT_CODES.concurrency, headers),
  quota: (
    limit: number,
    per: 'day' | 'month',
    used: number,
    requested: number,
    headers: Record<string, string>,
    shrink: string,
  ): LlmProxyError =>
    errors.rateLimited(
      requested > limit
        ? `This request may use up to ${requested} tokens, more than this key's whole quota of ${limit} tokens per ${per}: ${shrink}.`
        : `Token quota exceeded for this key: ${limit} tokens per ${per}, ${used} used, this request may use up to ${requested}. The quota resets in ${headers['retry-after']} s.`,
      RATE_LIMIT_CODES.quota,
      headers,
    ),
}
