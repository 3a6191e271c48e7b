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
   * period; then they are aborted); then the gateway stops listening.
   */
  shutdown(reason: string): Promise<void>
}

/** Builds, starts and installs graceful shutdown for a gateway. */
export async function startGateway(config: Config, options: GatewayOptions = {}): Promise<RunningGateway> {
  const app = await buildGateway(config, options)
  const url = await app.listen({ host: config.server.host, port: config.server.port, backlog: config.server.backlog })
  let adminUrl: string | null = null
  if (app.hasDecorator('llmAdmin')) {
    try {
      adminUrl = await app.llmAdmin.listening()
    } catch (err) {
      // The separate admin server could not start (e.g. its port is taken): don't run half a gateway.
      await app.close()
      throw err
    }
  }
  let stopping: Promise<void> | null = null
  const shutdown = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      app.log.info({ reason, graceMs: config.server.shutdownGraceMs }, 'shutting down')
      const grace = setTimeout(() => {
        app.log.warn('grace period over: aborting in-flight requests')
        app.server.closeAllConnections()
      }, config.server.shutdownGraceMs)
      grace.unref()
      // Still listening: /readyz answers 503 (load balancers stop sending) until the requests in flight are done.
      await app.llmGateway.drain()
      await app.close()
      clearTimeout(grace)
      app.log.info('stopped')
    })()
    return stopping
  }
  return { app, url, adminUrl, shutdown }
}
