import type { FastifyInstance } from 'fastify'
import { buildGateway, type GatewayOptions } from './app.js'
import type { Config } from './config.js'

export interface RunningGateway {
  app: FastifyInstance
  url: string
  /** Graceful stop: stop accepting, let in-flight requests finish within the grace period, then abort them. */
  shutdown(reason: string): Promise<void>
}

/** Builds, starts and installs graceful shutdown for a gateway. */
export async function startGateway(config: Config, options: GatewayOptions = {}): Promise<RunningGateway> {
  const app = await buildGateway(config, options)
  const url = await app.listen({ host: config.server.host, port: config.server.port })
  let stopping: Promise<void> | null = null
  const shutdown = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      app.log.info({ reason, graceMs: config.server.shutdownGraceMs }, 'shutting down')
      const grace = setTimeout(() => {
        app.log.warn('grace period over: aborting in-flight requests')
        app.server.closeAllConnections()
      }, config.server.shutdownGraceMs)
      grace.unref()
      await app.close()
      clearTimeout(grace)
      app.log.info('stopped')
    })()
    return stopping
  }
  return { app, url, shutdown }
}
