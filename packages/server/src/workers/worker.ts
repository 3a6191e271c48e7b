// `server.workers` > 1: a worker process. It asks the primary for the config (validated there, once), runs the
// gateway on the shared port with its counters, admin views, metrics and reloads going through the primary, and
// answers the primary's questions about itself.
import type { Serializable } from 'node:child_process'
import { useCountersOfPrimary } from '@llmproxy/rate-limit'
import type { FastifyInstance } from 'fastify'
import { stdoutWritten, type WorkerLink } from '../app.js'
import { type RunningGateway, startGateway } from '../main.js'
import { type PrimaryOps, WORKER_ID_ENV, type WorkerOps } from './ops.js'
import { notice, Rpc } from './rpc.js'

/**
 * Runs this process as worker `LLMPROXY_WORKER_ID` of a primary (node:cluster); exits when the gateway stops.
 * `stopOnSignals` (the CLI's) installs the stop on SIGTERM and SIGINT once the gateway serves, and says whether one
 * came while it started.
 */
export async function runWorker(stopOnSignals: (stop: (reason: string) => void) => boolean): Promise<void> {
  const id = Number(process.env[WORKER_ID_ENV])
  // The primary reloads every worker (SIGHUP goes to it; a terminal's hangup reaches the whole group).
  process.on('SIGHUP', () => undefined)
  const send = (message: Serializable): void => {
    if (process.connected) process.send?.(message)
  }
  let app: FastifyInstance | null = null
  const gateway = (): FastifyInstance => {
    if (app === null) throw new Error('this worker is not serving yet')
    return app
  }
  const rpc = new Rpc<WorkerOps, PrimaryOps>(send, {
    snapshot: () => gateway().upstreams.snapshot(),
    upstream: ({ action, name }) => gateway().upstreams[action](name),
    usage: () => (gateway().hasDecorator('usage') ? gateway().usage.stats() : null),
    metrics: () => gateway().llmMetrics.registry.getMetricsAsJSON(),
    apply: (config) => gateway().llmConfig.apply(config),
    forgetInstances: (instances) => {
      if (gateway().hasDecorator('rateLimits')) gateway().rateLimits.forgetInstances(instances)
      return null
    },
  })
  process.on('message', (message: unknown) => {
    rpc.handle(message)
  })
  const config = await rpc.call('config', null)
  useCountersOfPrimary()
  const link: WorkerLink = {
    id,
    scope: {
      upstreams: () => rpc.call('upstreams', null),
      upstream: (action, name) => rpc.call('upstream', { action, name }),
      usage: () => rpc.call('usage', null),
    },
    metrics: () => rpc.call('metrics', null),
    reload: () => rpc.call('reload', null, 60_000),
    reloadHistory: () => rpc.call('reloadHistory', null),
  }
  let running: RunningGateway
  try {
    running = await startGateway(config, { worker: link })
  } catch (err) {
    // The primary reports it (once for all workers) and stops. This worker's log lines are written (or dropped) first,
    // as at a stop: pino's exit hook would retry them for ever on a stdout without a reader.
    const message = notice('failed', { message: err instanceof Error ? err.message : String(err) })
    process.send?.(message, undefined, {}, () => {
      void stdoutWritten().then(() => process.exit(1))
    })
    return
  }
  app = running.app
  const stop = (reason: string): void => {
    running.shutdown(reason).then(
      () => process.exit(0),
      () => process.exit(1),
    )
  }
  // The primary's stop (its SIGTERM) came while this worker started: it stops now, and does not say it is ready.
  if (stopOnSignals(stop)) return
  // node:cluster exits a worker at once (no drain) when the primary's channel closes, i.e. the primary died (kill -9):
  // it listens after this, so this line is the only trace of the requests it cuts.
  process.prependListener('disconnect', () => {
    running.app.log.error(
      'the primary is gone (its IPC channel closed): node:cluster exits this worker now, cutting its requests in flight',
    )
  })
  const instance = app.hasDecorator('rateLimits') ? app.rateLimits.instanceId : null
  send(notice('ready', { url: running.url, adminUrl: running.adminUrl, instance }))
}
