import { LlmProxyError } from '@llmproxy/core'

/** Stable error codes of @llmproxy/upstreams. */
export const UPSTREAMS_BUSY = 'llmproxy_upstreams_busy'

/** 503: every upstream of a pool is at its concurrency limit, and the queue is full or the wait timed out. */
export function upstreamsBusy(message: string): LlmProxyError {
  return new LlmProxyError(503, 'upstream_error', UPSTREAMS_BUSY, message, { headers: { 'retry-after': '1' } })
}
