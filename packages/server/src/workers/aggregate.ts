// What the primary makes of its workers' views: one upstream list, one usage report, one metrics exposition for
// the whole gateway (the admin API and /metrics answer the same whichever worker serves them).
import type { UpstreamSnapshot, UpstreamState } from '@llmproxy/upstreams'
import type { UsageStats } from '@llmproxy/usage'
import { AggregatorRegistry, Counter, Gauge, type PrometheusContentType, Registry } from 'prom-client'
import type { AdminUpstream, AdminUsage } from '../admin.js'
import { configReloadsCounter } from '../reload.js'

/** One worker's answer. */
export interface FromWorker<T> {
  worker: number
  value: T
}

/** From the most available to the least: a tie between states goes to the later one. */
const AVAILABILITY: readonly UpstreamState[] = ['healthy', 'half-open', 'draining', 'unhealthy', 'ejected']

/** The state most workers see; a tie goes to the less available state. */
function commonState(states: readonly UpstreamState[]): UpstreamState {
  let best: UpstreamState = states[0] ?? 'healthy'
  let bestCount = 0
  for (const state of AVAILABILITY) {
    const count = states.filter((s) => s === state).length
    if (count > 0 && count >= bestCount) {
      best = state
      bestCount = count
    }
  }
  return best
}

/**
 * The upstream list of the whole gateway: per upstream, requests in flight, ejections, recent errors and panic picks
 * summed over the workers; the longest failure streak and hold; the mean TTFT average; the state most workers see
 * (each worker runs its own health checks and circuit breaker), with every worker's own in `workers`.
 */
export function combineSnapshots(perWorker: readonly FromWorker<readonly UpstreamSnapshot[]>[]): AdminUpstream[] {
  const byName = new Map<string, FromWorker<UpstreamSnapshot>[]>()
  for (const { worker, value } of perWorker) {
    for (const entry of value) {
      const list = byName.get(entry.name)
      if (list === undefined) byName.set(entry.name, [{ worker, value: entry }])
      else list.push({ worker, value: entry })
    }
  }
  const combined: AdminUpstream[] = []
  for (const entries of byName.values()) {
    const first = (entries[0] as FromWorker<UpstreamSnapshot>).value
    const all = entries.map((e) => e.value)
    const sum = (read: (u: UpstreamSnapshot) => number): number => all.reduce((total, u) => total + read(u), 0)
    const ewmas = all.map((u) => u.ewmaTtftMs).filter((v): v is number => v !== null)
    const held = all.map((u) => u.heldUntil).filter((v): v is number => v !== null)
    combined.push({
      ...first,
      state: commonState(all.map((u) => u.state)),
      inFlight: sum((u) => u.inFlight),
      ewmaTtftMs: ewmas.length === 0 ? null : ewmas.reduce((a, b) => a + b, 0) / ewmas.length,
      ejections: sum((u) => u.ejections),
      consecutiveFailures: Math.max(...all.map((u) => u.consecutiveFailures)),
      recentErrors: sum((u) => u.recentErrors),
      lastError: all.find((u) => u.lastError !== null)?.lastError ?? null,
      heldUntil: held.length === 0 ? null : Math.max(...held),
      panicPicks: sum((u) => u.panicPicks),
      workers: entries.map(({ worker, value }) => ({ worker, state: value.state, inFlight: value.inFlight })),
    })
  }
  return combined
}

/** The counters of a usage sink's stats (what only goes up, and outlives the worker that counted it). */
export type UsageCounts = Pick<UsageStats, 'delivered' | 'deliveryFailures' | 'dropped' | 'notSpooled'>

export const NO_USAGE_COUNTS: UsageCounts = { delivered: 0, deliveryFailures: 0, dropped: 0, notSpooled: 0 }

/** Usage sinks' stats as one: backlogs and counts summed (plus `retired`), the latest delivery, an error of one. */
export function sumUsage(stats: readonly UsageStats[], retired: UsageCounts = NO_USAGE_COUNTS): UsageStats {
  const sum = (read: (s: UsageStats) => number): number => stats.reduce((total, s) => total + read(s), 0)
  const deliveries = stats.map((s) => s.lastDeliveryAt).filter((v): v is string => v !== null)
  return {
    queueDepth: sum((s) => s.queueDepth),
    spoolBytes: sum((s) => s.spoolBytes),
    delivered: retired.delivered + sum((s) => s.delivered),
    deliveryFailures: retired.deliveryFailures + sum((s) => s.deliveryFailures),
    dropped: retired.dropped + sum((s) => s.dropped),
    notSpooled: retired.notSpooled + sum((s) => s.notSpooled),
    // ISO times: the latest sorts last.
    lastDeliveryAt: deliveries.sort().at(-1) ?? null,
    lastError: stats.find((s) => s.lastError !== null)?.lastError ?? null,
  }
}

/**
 * The usage sink of the whole gateway: every worker's spool and counters summed, the latest delivery, each worker's
 * own in `workers`. `retired`: the counts of workers gone, as last read from them (the totals do not go down when one
 * is replaced). `former`: the spools of former workers being delivered (see workers/spools.ts), in the totals.
 */
export function combineUsage(
  perWorker: readonly FromWorker<UsageStats | null>[],
  retired: UsageCounts = NO_USAGE_COUNTS,
  former: UsageStats | null = null,
): AdminUsage {
  const stats = perWorker.filter((w): w is FromWorker<UsageStats> => w.value !== null)
  if (stats.length === 0) return { enabled: false }
  const sinks = stats.map((s) => s.value)
  return {
    enabled: true,
    ...sumUsage(former === null ? sinks : [...sinks, former], retired),
    workers: stats.map(({ worker, value }) => ({ worker, ...value })),
  }
}

/** A metric as `registry.getMetricsAsJSON()` gives it (what crosses the IPC channel). */
export type MetricJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>[number]

/**
 * Gauges of a state rather than an amount: averaged over the workers (the share of workers that see it so) instead
 * of summed. Everything else is summed (prom-client's default), and prom-client's own process metrics keep their
 * aggregators (e.g. the version info is the first worker's).
 */
const AVERAGED = ['upstream_up', 'upstream_state', 'upstream_ttft_ewma_seconds', 'ratelimit_redis_up']

/** The primary's own metrics: how many workers serve, how often one was replaced, and the config reloads. */
export class SupervisorMetrics {
  readonly registry = new Registry()
  private readonly workers: Gauge
  private readonly restarts: Counter
  /** Counts one config reload, applied or not. */
  readonly reloaded: (applied: boolean) => void

  constructor(prefix: string) {
    const registers = [this.registry]
    this.workers = new Gauge({ name: `${prefix}workers`, help: 'Worker processes serving requests.', registers })
    this.restarts = new Counter({
      name: `${prefix}worker_restarts_total`,
      help: 'Workers that exited unexpectedly and were replaced.',
      registers,
    })
    this.reloaded = configReloadsCounter(prefix, registers)
  }

  set(workers: number): void {
    this.workers.set(workers)
  }

  restarted(): void {
    this.restarts.inc()
  }
}

const GROWING = new Set(['counter', 'histogram'])

/**
 * The counters and histograms of workers that are gone, as last scraped: added to every later exposition, so that
 * the gateway's totals never go down when a worker is replaced (Prometheus would read the drop as a reset and
 * `rate()` would spike). What a worker counted after its last scrape was never seen, and is not missed.
 */
export class RetiredCounts {
  private kept: MetricJson[] = []
  /** Retired snapshots not folded into `kept` yet: shown meanwhile, so that no scrape misses them. */
  private readonly unfolded: MetricJson[][] = []
  private folding: Promise<void> = Promise.resolve()

  /** What a scrape adds, as workers' views (none until a worker has gone). */
  get views(): MetricJson[][] {
    return [this.kept, ...this.unfolded]
  }

  /** Keeps what only grows (counters, histograms) of a gone worker's last scrape; its gauges go with it. */
  retire(last: readonly MetricJson[]): Promise<void> {
    // prom-client types `type` as a numeric enum; its JSON holds the name.
    const growing = last.filter((metric) => GROWING.has(String(metric.type)))
    this.unfolded.push(growing)
    this.folding = this.folding.then(async () => {
      const folded = await AggregatorRegistry.aggregate([this.kept, growing]).getMetricsAsJSON()
      // One step: the snapshot leaves `unfolded` as it enters `kept`.
      this.kept = folded
      this.unfolded.splice(this.unfolded.indexOf(growing), 1)
    })
    return this.folding
  }
}

/** One exposition for the whole gateway: the workers' metrics aggregated (see AVERAGED), then the primary's own. */
export async function aggregateMetrics(perWorker: readonly MetricJson[][], prefix: string, supervisor: SupervisorMetrics): Promise<string> {
  const averaged = new Set(AVERAGED.map((name) => `${prefix}${name}`))
  const adjusted = perWorker.map((metrics) =>
    metrics.map((metric) => (averaged.has(metric.name) ? { ...metric, aggregator: 'average' as const } : metric)),
  )
  const workers = AggregatorRegistry.aggregate<PrometheusContentType>(adjusted)
  return Registry.merge([workers, supervisor.registry]).metrics()
}
