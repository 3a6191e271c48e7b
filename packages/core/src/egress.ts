import { type Agent, type Dispatcher, EnvHttpProxyAgent, Pool } from 'undici'

/**
 * Whether outbound connections (upstreams, their health checks, the usage webhook) go through an egress proxy: one of
 * the variables undici's EnvHttpProxyAgent reads is set (`HTTPS_PROXY`, `HTTP_PROXY`, either case; `NO_PROXY` then
 * names the hosts reached directly).
 */
function egressProxyConfigured(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env.HTTPS_PROXY || env.https_proxy || env.HTTP_PROXY || env.http_proxy)
}

/**
 * The dispatcher through the egress proxy the environment names, or null without one (connections stay direct, at no
 * per-request cost). `connectTimeoutMs` bounds each step of a connection through it, as it bounds a direct one: undici's
 * proxy agent builds its own connectors (the given `connect` is not theirs), and waits for the proxy's answer to
 * CONNECT as for any answer (300 s by default).
 */
export function egressProxyAgent(connectTimeoutMs: number, options: Agent.Options = {}): Dispatcher | null {
  if (!egressProxyConfigured()) return null
  const connect = { timeout: connectTimeoutMs }
  return new EnvHttpProxyAgent({
    ...options,
    connect,
    proxyTls: connect,
    requestTls: connect,
    clientFactory: (origin, opts) => new Pool(origin, { ...opts, connect, headersTimeout: connectTimeoutMs }),
  })
}
