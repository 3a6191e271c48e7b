import type { IncomingHttpHeaders } from 'node:http'
import type { IncomingHttpHeaders as Http2IncomingHttpHeaders } from 'node:http2'
import type { UpstreamBody } from './upstream-response.js'

/** What reply-from's hooks deliver to the upstream attempt in progress. */
export interface UpstreamCallbacks {
  rewriteRequestHeaders(headers: IncomingHttpHeaders): IncomingHttpHeaders
  keepUpstreamHeaders(headers: IncomingHttpHeaders): void
  onUpstreamResponse(status: number, body: UpstreamBody): void
  onUpstreamError(error: Error): void
}

/** Where a request keeps its call, so reply-from's hooks are shared functions, not per-request closures. */
export const kProxyCall = Symbol('llmproxy.proxyCall')

type CallCarrier = { [kProxyCall]: { readonly attempt: UpstreamCallbacks | null } | null }

/** The request's attempt in progress; null once its call has finished (a late callback then has nothing to do). */
function attemptOf(request: unknown): UpstreamCallbacks | null {
  return (request as CallCarrier)[kProxyCall]?.attempt ?? null
}

export function setCall(request: unknown, call: { readonly attempt: UpstreamCallbacks | null } | null): void {
  ;(request as CallCarrier)[kProxyCall] = call
}

export function rewriteRequestHeaders(request: unknown, headers: IncomingHttpHeaders | Http2IncomingHttpHeaders): IncomingHttpHeaders {
  return attemptOf(request)?.rewriteRequestHeaders(headers as IncomingHttpHeaders) ?? (headers as IncomingHttpHeaders)
}

/** reply-from copies what this returns onto the reply; the proxy sets the headers itself at commit. */
export function keepUpstreamHeaders(headers: IncomingHttpHeaders | Http2IncomingHttpHeaders, request?: unknown): IncomingHttpHeaders {
  attemptOf(request)?.keepUpstreamHeaders(headers as IncomingHttpHeaders)
  return {}
}

/** reply-from's types call the third argument a server response; it is `{ statusCode, headers, stream }`. */
export function onResponse(request: unknown, _reply: unknown, response: unknown): void {
  const res = response as { statusCode: number; stream: UpstreamBody }
  const attempt = attemptOf(request)
  if (attempt === null) res.stream.destroy()
  else attempt.onUpstreamResponse(res.statusCode, res.stream)
}

export function onError(reply: { request: unknown }, { error }: { error: Error }): void {
  attemptOf(reply.request)?.onUpstreamError(error)
}
