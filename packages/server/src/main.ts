import { ConfigError, errors } from '@llmproxy/core'
import type { FastifyInstance } from 'fastify'
import { buildGateway, type GatewayOptions } from './app.js'
import type { Config } from './config.js'

export interface RunningGateway {
  app: FastifyInstance
  url: string
  /** Where the admin API's `/admin/...` routes are served (the gateway's url, or the separate admin server's); null without `admin`. */
  adminUrl: string | null
  /**
   * Graceful stop: `/readyz` turns 503 and new requests are refused while in-flight requests finish (within the grace
   * period; then they end with llmproxy_shutting_down); then the gateway stops listening.
   */
  shutdown(reason: string): Promise<void>
}

/** How long the connections of requests ended at the grace's end get to send their error before they are closed. */
const ABORT_FLUSH_MS = 1000

/** Why a listen failed, by error code, when it is the config's to fix: the setting and the problem. */
const LISTEN_PROBLEMS: Record<string, (host: string, port: number) => ['host' | 'port', string]> = {
  EADDRINUSE: (host, port) => ['port', `${port} is already in use on ${host}`],
  EACCES: (_host, port) => ['port', `not allowed to listen on ${port} (ports below 1024 need privileges)`],
  EADDRNOTAVAIL: (host) => ['host', `${host} is not an address of this machine`],
  ENOTFOUND: (host) => ['host', `${host} does not resolve to an address`],
  EAI_AGAIN: (host) => ['host', `${host} does not resolve to an address`],
}

/**
 * A listen failure as a ConfigError naming the setting (`/server/port`, `/admin/host`, …), the system error as its
 * `cause` (`err.cause.code === 'EADDRINUSE'`); null when it is not the config's to fix.
 */
function listenProblem(err: unknown, section: '/server' | '/admin', host: string, port: number): ConfigError | null {
  const problem = LISTEN_PROBLEMS[(err as NodeJS.ErrnoException | null)?.code ?? '']
  if (problem === undefined) return null
  const [field, message] = problem(host, port)
  return new ConfigError('listen address', [{ path: `${section}/${field}`, message }], { cause: err })
}

/** Builds, starts and installs graceful shutdown for a gateway. */
export async function startGateway(config: Config, options: GatewayOptions = {}): Promise<RunningGateway> {
  const app = await buildGateway(config, options)
  const { host, port, backlog } = config.server
  let url: string
  try {
    url = await app.listen({ host, port, backlog })
  } catch (err) {
    await app.close()
    throw listenProblem(err, '/server', host, port) ?? err
  }
  let adminUrl: string | null = null
  // Mounted, the admin API is served at `url` itself: an address to connect to (127.0.0.1 for host 0.0.0.0), where
  // the server's own origin would be 0.0.0.0.
  if (app.hasDecorator('llmAdmin')) {
    try {
      adminUrl = app.llmAdmin.separate ? await app.llmAdmin.listening() : url
    } catch (err) {
      // The separate admin server could not start (e.g. its port is taken): don't run half a gateway.
      await app.close()
      throw listenProblem(err, '/admin', config.admin?.host ?? '127.0.0.1', config.admin?.port ?? 0) ?? err
    }
  }
  let stopping: Promise<void> | null = null
  const shutdown = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      app.log.info({ reason, graceMs: config.server.shutdownGraceMs }, 'shutting down')
      const grace = setTimeout(() => {
        // Each client reads why its answer stops (a stream: an in-band error), and its record says so: not a cut
        // that looks like the client leaving. Connections still open a moment later (a client not reading) are closed.
        const ended = app.hasDecorator('llmRouter') ? app.llmRouter.abortInFlight(errors.shuttingDown()) : 0
        app.log.warn({ ended }, 'grace period over: ending in-flight requests with llmproxy_shutting_down')
        setTimeout(() => app.server.closeAllConnections(), ABORT_FLUSH_MS).unref()
      }, config.server.shutdownGraceMs)
      grace.unref()
      // Still listening: /readyz answers 503 (load balancers stop sending) until the requests in flight are done.
      await app.llmGateway.drain()
      // Nothing in flight any more: what closing still waits for (the usage spool's flush) is not theirs.
      clearTimeout(grace)
      await app.close()
      app.log.info('stopped')
    })().finally(() => app.llmGateway.logWritten())
    return stopping
  }
  return { app, url, adminUrl, shutdown }
}
