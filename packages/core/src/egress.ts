/**
 * Whether outbound connections (upstreams, their health checks, the usage webhook) go through an egress proxy: one of
 * the variables undici's EnvHttpProxyAgent reads is set (`HTTPS_PROXY`, `HTTP_PROXY`, either case; `NO_PROXY` then
 * names the hosts reached directly). Without one the gateway keeps its direct connections (no per-request check).
 */
export function egressProxyConfigured(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env.HTTPS_PROXY || env.https_proxy || env.HTTP_PROXY || env.http_proxy)
}
