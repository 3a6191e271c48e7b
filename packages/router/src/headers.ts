import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import { type ApiFamily, setUpstreamCredential } from '@llmproxy/protocols'
import type { Upstream } from '@llmproxy/upstreams'

/**
 * Request headers that never reach an upstream: hop-by-hop headers (RFC 9110 §7.6.1; reply-from
 * already drops `connection` and the headers it names), `expect` (Node answered the client's
 * `100-continue` already; undici refuses to send it), the client's own credentials (the upstream
 * gets its configured key instead), the provider account selectors (which organisation or project
 * the operator's key bills is the operator's choice: set them in the upstream's `headers`), and
 * accept-encoding (the gateway reads usage from the body, so upstreams answer uncompressed; the
 * client gets the same bytes, which are small and streamed).
 */
const DROPPED_REQUEST_HEADERS = [
  'keep-alive',
  'expect',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'authorization',
  'x-api-key',
  'api-key',
  'x-goog-api-key',
  'cookie',
  'openai-organization',
  'openai-project',
  'x-goog-user-project',
  'accept-encoding',
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-real-ip',
]

/**
 * The headers of a client API and its SDKs (Claude Code's among Anthropic's): they describe a request of that API —
 * its version, betas, the SDK's retry count, a session id — and are dropped when the request is converted to another.
 */
const CLIENT_API_HEADER_PREFIXES: Record<ApiFamily, readonly string[]> = {
  anthropic: ['anthropic-', 'x-stainless-', 'x-claude-code-'],
  openai: ['openai-', 'x-stainless-'],
  gemini: ['x-goog-'],
}

/** `convertedFrom`: the client's API when the upstream speaks another (its own headers are dropped then). */
export function upstreamRequestHeaders(
  headers: IncomingHttpHeaders,
  upstream: Upstream,
  requestId: string,
  convertedFrom: ApiFamily | null,
): IncomingHttpHeaders {
  for (let i = 0; i < DROPPED_REQUEST_HEADERS.length; i++) delete headers[DROPPED_REQUEST_HEADERS[i] as string]
  if (convertedFrom !== null) {
    const prefixes = CLIENT_API_HEADER_PREFIXES[convertedFrom]
    for (const name in headers) if (prefixes.some((prefix) => name.startsWith(prefix))) delete headers[name]
  }
  headers['x-request-id'] = requestId
  // The gateway reads usage from the bytes: plain ones (an upstream that compresses anyway is decoded, see encoding.ts).
  headers['accept-encoding'] = 'identity'
  setUpstreamCredential(headers, upstream.protocol, upstream.apiKey)
  if (upstream.headers !== undefined) Object.assign(headers, upstream.headers)
  return headers
}

/**
 * Response headers not passed back to the client: hop-by-hop, what the gateway recomputes, and what would act on
 * the gateway's own origin or the client's session with it (cookies, HSTS, Alt-Svc, CORS, the upstream's
 * authentication challenges).
 */
const DROPPED_RESPONSE_HEADERS = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'trailer',
  'te',
  'date',
  'server',
  'x-request-id',
  'openai-organization',
  'openai-project',
  'set-cookie',
  'strict-transport-security',
  'alt-svc',
  'www-authenticate',
  'proxy-authenticate',
  'content-security-policy',
  'access-control-allow-origin',
  'access-control-allow-credentials',
  'access-control-allow-headers',
  'access-control-allow-methods',
  'access-control-expose-headers',
  'access-control-max-age',
])

/**
 * Copies the upstream's response headers the client should see. The upstream's own rate-limit headers
 * describe the gateway's account with that provider, not the client's limits (which the rate-limit
 * plugin reports under the same names), so they are not passed on; nor is the provider organisation.
 */
export function clientResponseHeaders(upstream: IncomingHttpHeaders, bodyRewritten: boolean): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {}
  for (const name in upstream) {
    if (DROPPED_RESPONSE_HEADERS.has(name) || name.startsWith('x-ratelimit-')) continue
    if (bodyRewritten && name === 'content-length') continue
    out[name] = upstream[name]
  }
  // Hop-by-hop too: the headers the upstream's `connection` names (RFC 9110 §7.6.1), for its hop only.
  const connection = upstream.connection
  if (connection !== undefined && connection !== 'keep-alive' && connection !== 'close') {
    for (const name of connection.split(',')) delete out[name.trim().toLowerCase()]
  }
  return out
}
