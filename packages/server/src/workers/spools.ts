// Usage spools with `server.workers`: a spool takes one writer, so each worker has its own. Worker 1 uses
// `usage.spoolDir` itself (the spool of a single-process gateway, so going from one process to N and back keeps it);
// worker k uses `<usage.spoolDir>/worker-k`. A replacement worker gets its predecessor's id, and so its spool.
// When the gateway starts with fewer workers than before, the spools nobody uses any more are delivered by a sink of
// their own (in the primary, or in the single process), then removed.
import { readdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { llmMetrics } from '@llmproxy/metrics'
import { type UsageStats, usage } from '@llmproxy/usage'
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { Config } from '../config.js'
import { type MetricJson, RetiredCounts, sumUsage } from './aggregate.js'

const WORKER_DIR = /^worker-(\d+)$/
/** How often an orphaned spool's backlog is checked while it is delivered. */
const POLL_MS = 500

/** The spool directory of worker `id` (1 to N). */
export function workerSpoolDir(spoolDir: string, id: number): string {
  return id === 1 ? spoolDir : join(spoolDir, `worker-${id}`)
}

/** Spools of workers beyond `workers` (a gateway that ran with more workers before). */
export function formerWorkerSpools(spoolDir: string, workers: number): string[] {
  let names: string[]
  try {
    names = readdirSync(spoolDir)
  } catch {
    return []
  }
  return names
    .map((name) => ({ name, id: Number(WORKER_DIR.exec(name)?.[1] ?? 0) }))
    .filter(({ id }) => id > workers)
    .sort((a, b) => a.id - b.id)
    .map(({ name }) => join(spoolDir, name))
}

export interface FormerSpools {
  /** Resolves once every former spool was delivered and removed (tests). */
  readonly done: Promise<void>
  /**
   * Their sinks' stats summed: the backlog still spooled, what they delivered (counts of spools already removed
   * included); null when there were no former spools. Added to the gateway's (`/admin/usage`).
   */
  stats(): UsageStats | null
  /** Their usage metrics, as views for aggregateMetrics (counters of removed spools included); none without metrics. */
  metrics(): Promise<MetricJson[][]>
  /** Stops delivering (what is left stays spooled for the next start). */
  close(): Promise<void>
}

/**
 * Delivers the records left in the spools of former workers (see formerWorkerSpools) with the config's webhook, each
 * by a usage sink of its own (in the background), and removes each spool once it is empty. What they hold and
 * deliver is counted in the gateway's usage stats and metrics (stats(), metrics()), so that a backlog left by a
 * former worker shows in `/admin/usage` and `usage_queue_depth`.
 */
export function deliverFormerSpools(config: Config, workers: number, log: FastifyBaseLogger): FormerSpools {
  const spoolDir = config.usage?.spoolDir
  const dirs = config.usage?.webhook === undefined || spoolDir === undefined ? [] : formerWorkerSpools(spoolDir, workers)
  const apps: FastifyInstance[] = []
  /** The sinks delivering now (registered and ready). */
  const delivering = new Set<FastifyInstance>()
  /** The last stats of the sinks whose spool is delivered and removed (nothing left in them). */
  const finished: UsageStats[] = []
  const retiredMetrics = new RetiredCounts()
  let closing = false
  const deliver = async (dir: string): Promise<void> => {
    const app = Fastify({ loggerInstance: log.child({ spool: dir }) }) as unknown as FastifyInstance
    apps.push(app)
    await app.register(usage, { ...config.usage, spoolDir: dir })
    // Only the usage metrics are of interest: the process and route ones are the gateway's.
    if (config.metrics !== false) await app.register(llmMetrics, { ...config.metrics, defaultMetrics: false, routeMetrics: false })
    await app.ready()
    delivering.add(app)
    const records = app.usage.stats().queueDepth
    if (records > 0) app.log.warn({ records }, 'usage: delivering the spool of a former worker (the gateway runs fewer workers now)')
    while (!closing && app.usage.stats().queueDepth > 0) await new Promise((resolve) => setTimeout(resolve, POLL_MS).unref())
    if (closing) return
    const last = config.metrics === false ? null : await app.llmMetrics.registry.getMetricsAsJSON()
    // In one step, so that no scrape or stats() misses its counts or counts them twice.
    finished.push({ ...app.usage.stats(), queueDepth: 0, spoolBytes: 0, lastError: null })
    const retired = last === null ? null : retiredMetrics.retire(last)
    delivering.delete(app)
    await retired
    await app.close()
    rmSync(dir, { recursive: true, force: true })
    if (records > 0) app.log.info({ records }, 'usage: the spool of a former worker is delivered and removed')
  }
  const opened = dirs.map((dir) => deliver(dir))
  const done = Promise.all(opened).then(() => undefined)
  done.catch((err: unknown) => log.error({ err }, 'usage: could not deliver the spool of a former worker'))
  return {
    done,
    stats: () => (dirs.length === 0 ? null : sumUsage([...finished, ...[...delivering].map((app) => app.usage.stats())])),
    metrics: async () => {
      if (dirs.length === 0 || config.metrics === false) return []
      const live = await Promise.all([...delivering].map((app) => app.llmMetrics.registry.getMetricsAsJSON()))
      return [...live, ...retiredMetrics.views]
    },
    close: async () => {
      closing = true
      await Promise.allSettled(apps.map((app) => app.close()))
    },
  }
}
