// `server.workers` > 1: the primary process. It serves no request itself: it forks the workers (node:cluster, one
// shared port), replaces a worker that dies, holds the memory store's rate-limit counters for all of them, validates
// a reload once and has every worker apply it, answers the admin API's and /metrics' questions about the whole
// gateway, and drains every worker on SIGTERM.
import cluster, { type Worker } from 'node:cluster'
import { ConfigError } from '@llmproxy/core'
import { CounterHost } from '@llmproxy/rate-limit'
import { keepsUpstream } from '@llmproxy/upstreams'
import type { UsageStats } from '@llmproxy/usage'
import type pino from 'pino'
import type { DestinationStream } from 'pino'
import { asConfigSection, gatewayLogger, logWritten } from '../app.js'
import type { Config } from '../config.js'
import { planReload, ReloadNotAppliedError, ReloadOutcomes, type ReloadResult, readConfigForReload } from '../reload.js'
import {
  aggregateMetrics,
  combineSnapshots,
  combineUsage,
  type FromWorker,
  type MetricJson,
  NO_USAGE_COUNTS,
  RetiredCounts,
  SupervisorMetrics,
  type UsageCounts,
} from './aggregate.js'
import type { PrimaryOps, WorkerOps } from './ops.js'
import { WORKER_ID_ENV } from './ops.js'
import { asNotice, type Handlers, NoAnswerError, Rpc } from './rpc.js'
import { deliverFormerSpools, type FormerSpools } from './spools.js'

export interface PrimaryOptions {
  /** Validated (and adjusted: the CLI's --port and --workers). */
  config: Config
  workers: number
  /** What a reload re-reads; null: reloads are refused (the demo). */
  configFile: string | null
  adjustConfig?: ((config: Config) => void) | undefined
  logDestination?: DestinationStream | undefined
  /**
   * Aborted (its reason: the stop's) when a stop is asked for while the workers start: the start ends, every worker is
   * told to stop (one still starting stops once it has), and startPrimary resolves with the shutdown under way.
   */
  stopWhileStarting?: AbortSignal | undefined
}

export interface RunningPrimary {
  /** The gateway's URL (every worker listens on it). */
  readonly url: string
  readonly adminUrl: string | null
  /** What SIGHUP does: the config file read and validated once, applied by every worker. */
  reload(): Promise<ReloadResult>
  /** SIGTERM: every worker drains (see the single-process shutdown) and exits; then the primary's own state is saved. */
  shutdown(reason: string): Promise<void>
}

/** A worker could not start (its own error message, e.g. the port is taken): the gateway does not start. */
export class WorkerStartError extends Error {
  override name = 'WorkerStartError'
}

/** A worker that dies within this long of its start counts as a quick exit: replacements of quick exits back off. */
const QUICK_EXIT_MS = 10_000
const MAX_RESTART_DELAY_MS = 30_000
/** How long the primary waits for a worker's view (admin API, metrics). */
const VIEW_TIMEOUT_MS = 5000
const APPLY_TIMEOUT_MS = 30_000

/** One of the N worker places: its current process, replaced when it dies. */
interface Slot {
  readonly id: number
  worker: Worker | null
  rpc: Rpc<PrimaryOps, WorkerOps> | null
  ready: boolean
  /** The config generation the worker runs (the primary's goes up with each reload). */
  generation: number
  startedAt: number
  /** Quick exits in a row. */
  quickExits: number
  /** What the worker said when it could not start. */
  failure: string | null
  restartTimer: NodeJS.Timeout | null
  /** The worker's metrics as last scraped: its counters outlive it (RetiredCounts). */
  lastMetrics: MetricJson[] | null
  /** Its id in the rate limits' Redis store (the prefix of its concurrency slots), said when it is ready. */
  instance: string | null
  /** Its usage sink's stats as last read (`/admin/usage`): its counts outlive it (retiredUsage). */
  lastUsage: UsageStats | null
}

class Primary {
  readonly log: pino.Logger
  url = ''
  adminUrl: string | null = null
  private config: Config
  private generation = 0
  private readonly file: string | null
  private readonly adjust: ((config: Config) => void) | undefined
  private readonly slots: Slot[]
  private readonly supervisor: SupervisorMetrics
  private readonly retired = new RetiredCounts()
  /** The usage counts of workers gone, as last read: /admin/usage totals do not go down when a worker is replaced. */
  private readonly retiredUsage: UsageCounts = { ...NO_USAGE_COUNTS }
  private readonly handlers: Handlers<PrimaryOps>
  private counters: CounterHost | null = null
  private former: FormerSpools | null = null
  /**
   * Workers that died, by their rate-limit instance id (store: redis), until their slots would have expired: every
   * worker drops their slots (RateLimits.forgetInstances) instead of counting them for `redis.slotTtlMs`.
   */
  private gone: { instance: string; until: number }[] = []
  /** Upstreams drained through the admin API: a replacement worker drains them too. */
  private readonly drained = new Set<string>()
  private reloads: Promise<unknown> = Promise.resolve()
  private readonly reloadOutcomes: ReloadOutcomes
  private starting: { resolve(): void; reject(err: Error): void } | null = null
  private stopping: Promise<void> | null = null

  constructor(options: PrimaryOptions) {
    this.config = options.config
    this.file = options.configFile
    this.adjust = options.adjustConfig
    this.log = gatewayLogger(options.config.server.logLevel, options.logDestination, { role: 'primary' })
    this.slots = Array.from({ length: options.workers }, (_, i) => ({
      id: i + 1,
      worker: null,
      rpc: null,
      ready: false,
      generation: 0,
      startedAt: 0,
      quickExits: 0,
      failure: null,
      restartTimer: null,
      lastMetrics: null,
      instance: null,
      lastUsage: null,
    }))
    const metrics = options.config.metrics
    const prefix = metrics === false ? 'llmproxy_' : metrics.prefix
    this.supervisor = new SupervisorMetrics(prefix)
    this.reloadOutcomes = new ReloadOutcomes(this.log, this.file, this.supervisor.reloaded)
    this.handlers = {
      config: () => this.config,
      upstreams: async () => combineSnapshots(await this.everyWorker('snapshot', null)),
      upstream: async (arg) => {
        const found = await this.everyWorker('upstream', arg)
        if (!found.some((w) => w.value)) return null
        if (arg.action === 'drain') this.drained.add(arg.name)
        else this.drained.delete(arg.name)
        return combineSnapshots(await this.everyWorker('snapshot', null)).find((u) => u.name === arg.name) ?? null
      },
      usage: async () => {
        const answers = await this.everyWorker('usage', null)
        for (const { worker, value } of answers) {
          const slot = this.slots[worker - 1]
          if (slot !== undefined) slot.lastUsage = value
        }
        return combineUsage(answers, this.retiredUsage, this.former?.stats() ?? null)
      },
      metrics: async () => {
        const asked = this.slots.map((slot) => slot.worker)
        const answers = await this.everyWorker('metrics', null)
        for (const { worker, value } of answers) {
          const slot = this.slots[worker - 1] as Slot
          // Kept only while the process that answered is the slot's: one that exited meanwhile was retired already.
          if (slot.worker !== null && slot.worker === asked[worker - 1]) slot.lastMetrics = value
        }
        const former = (await this.former?.metrics()) ?? []
        return aggregateMetrics([...answers.map((w) => w.value), ...this.retired.views, ...former], prefix, this.supervisor)
      },
      reload: () => this.reload(),
      reloadHistory: async () => this.reloadOutcomes.history(),
    }
  }

  async start(stopWhileStarting: AbortSignal | undefined): Promise<void> {
    const rateLimit = this.config.rateLimit
    if (rateLimit?.store === 'memory') {
      await asConfigSection(
        async () => {
          this.counters = await CounterHost.create({ quotaStateFile: rateLimit.quotaStateFile, log: this.log })
        },
        (path) => `/rateLimit${path}`,
        this.file ?? undefined,
      )
    }
    this.former = deliverFormerSpools(this.config, this.slots.length, this.log)
    const started = new Promise<void>((resolve, reject) => {
      this.starting = { resolve, reject }
    })
    // Its outcome is the caller's shutdown()'s (the same stop).
    const stopNow = (): void => {
      this.shutdown(String(stopWhileStarting?.reason)).catch(() => undefined)
    }
    if (stopWhileStarting?.aborted === true) stopNow()
    else {
      stopWhileStarting?.addEventListener('abort', stopNow, { once: true })
      for (const slot of this.slots) this.fork(slot)
    }
    try {
      await started
    } catch (err) {
      await this.stop().catch(() => undefined)
      throw err
    } finally {
      stopWhileStarting?.removeEventListener('abort', stopNow)
    }
    this.starting = null
    if (this.stopping !== null) return
    this.log.info({ url: this.url, workers: this.slots.length }, `gateway listening at ${this.url} with ${this.slots.length} workers`)
  }

  shutdown(reason: string): Promise<void> {
    if (this.stopping === null) this.log.info({ reason, graceMs: this.config.server.shutdownGraceMs }, 'shutting down: every worker drains')
    return this.stop()
  }

  reload(): Promise<ReloadResult> {
    const run = this.reloads.then(() => this.reloadOnce())
    this.reloads = run.catch(() => undefined)
    return run
  }

  private stop(): Promise<void> {
    this.stopping ??= (async () => {
      // A start still waiting for its workers ends here.
      this.starting?.resolve()
      const live: Worker[] = []
      for (const slot of this.slots) {
        if (slot.restartTimer !== null) clearTimeout(slot.restartTimer)
        if (slot.worker !== null && !slot.worker.isDead()) live.push(slot.worker)
      }
      const exited = live.map((worker) => new Promise((resolve) => (worker.isDead() ? resolve(null) : worker.once('exit', resolve))))
      for (const worker of live) worker.process.kill('SIGTERM')
      // Each worker stops within its grace period and usage flush; past those (and a margin) it is killed.
      const usageFlushMs = this.config.usage?.shutdownFlushMs ?? 0
      const kill = setTimeout(
        () => {
          for (const worker of live) if (!worker.isDead()) worker.process.kill('SIGKILL')
        },
        this.config.server.shutdownGraceMs + usageFlushMs + 10_000,
      )
      await Promise.all(exited)
      clearTimeout(kill)
      await this.former?.close()
      // The quota use since the last save is lost: logged, and the stop fails (the process exits 1).
      await this.counters?.close().catch((err: unknown) => {
        this.log.error({ err }, 'rate-limit: could not save the quota state file at shutdown; the quota use since the last save is lost')
        throw err
      })
      this.log.info('stopped')
    })().finally(() => logWritten(this.log))
    return this.stopping
  }

  private fork(slot: Slot): void {
    slot.restartTimer = null
    const worker = cluster.fork({ [WORKER_ID_ENV]: String(slot.id) })
    const rpc = new Rpc<PrimaryOps, WorkerOps>((message) => {
      if (worker.isConnected()) worker.send(message)
    }, this.handlers)
    Object.assign(slot, { worker, rpc, ready: false, generation: this.generation, startedAt: Date.now(), failure: null })
    worker.on('message', (message: unknown) => {
      if (this.counters?.handle(worker, message) === true || rpc.handle(message)) return
      const said = asNotice(message)
      if (said?.kind === 'ready') {
        slot.instance = typeof said.instance === 'string' ? said.instance : null
        this.ready(slot, String(said.url), typeof said.adminUrl === 'string' ? said.adminUrl : null)
      } else if (said?.kind === 'failed') slot.failure = String(said.message)
    })
    worker.on('exit', (code: number | null, signal: string | null) => this.exited(slot, worker, code, signal))
  }

  private ready(slot: Slot, url: string, adminUrl: string | null): void {
    // Told to stop already: neither a start to complete nor a replacement to bring up to date.
    if (this.stopping !== null) return
    slot.ready = true
    slot.failure = null
    if (this.url === '') {
      this.url = url
      this.adminUrl = adminUrl
    }
    this.supervisor.set(this.readySlots().length)
    if (this.starting !== null) {
      if (this.slots.every((s) => s.ready)) this.starting.resolve()
      return
    }
    this.log.info({ worker: slot.id, workerPid: slot.worker?.process.pid }, 'replacement worker ready')
    void this.catchUp(slot)
  }

  /** A worker started before the last reload, or before upstreams were drained, is brought up to date. */
  private async catchUp(slot: Slot): Promise<void> {
    const rpc = slot.rpc
    if (rpc === null) return
    try {
      if (slot.generation !== this.generation) {
        const generation = this.generation
        await rpc.call('apply', this.config, APPLY_TIMEOUT_MS)
        slot.generation = generation
      }
      for (const name of this.drained) await rpc.call('upstream', { action: 'drain', name }, VIEW_TIMEOUT_MS)
      if (this.gone.length > 0) await rpc.call('forgetInstances', this.goneInstances(), VIEW_TIMEOUT_MS)
    } catch (err) {
      this.log.error({ err, worker: slot.id }, 'could not bring a replacement worker up to date')
    }
  }

  private exited(slot: Slot, worker: Worker, code: number | null, signal: string | null): void {
    this.counters?.forget(worker)
    if (slot.worker !== worker) return
    slot.rpc?.close(`worker ${slot.id} exited`)
    if (slot.lastMetrics !== null) void this.retired.retire(slot.lastMetrics)
    const used = slot.lastUsage
    if (used !== null) for (const key of Object.keys(NO_USAGE_COUNTS) as (keyof UsageCounts)[]) this.retiredUsage[key] += used[key]
    const instance = slot.instance
    Object.assign(slot, { worker: null, rpc: null, ready: false, lastMetrics: null, instance: null, lastUsage: null })
    this.supervisor.set(this.readySlots().length)
    if (this.stopping !== null) return
    if (this.starting !== null) {
      const why = slot.failure ?? `worker ${slot.id} exited (${signal ?? `code ${code}`}) before it listened`
      this.starting.reject(new WorkerStartError(why))
      return
    }
    this.supervisor.restarted()
    slot.quickExits = Date.now() - slot.startedAt < QUICK_EXIT_MS ? slot.quickExits + 1 : 0
    const delay = slot.quickExits <= 1 ? 0 : Math.min(MAX_RESTART_DELAY_MS, 500 * 2 ** (slot.quickExits - 2))
    this.log.error(
      { worker: slot.id, workerPid: worker.process.pid, code, signal, restartInMs: delay, failure: slot.failure ?? undefined },
      'worker exited unexpectedly; starting a replacement',
    )
    if (instance !== null) this.forgetInstance(instance)
    slot.restartTimer = setTimeout(() => {
      if (this.stopping === null) this.fork(slot)
    }, delay)
  }

  /** A dead worker's concurrency slots in Redis: dropped by the others now, by its replacement once ready. */
  private forgetInstance(instance: string): void {
    const slotTtlMs = this.config.redis?.slotTtlMs
    if (this.config.rateLimit?.store !== 'redis' || slotTtlMs === undefined) return
    this.gone.push({ instance, until: Date.now() + slotTtlMs })
    void this.everyWorker('forgetInstances', this.goneInstances())
  }

  /** The dead workers' instance ids whose slots may still be in Redis (older ones have expired there). */
  private goneInstances(): string[] {
    const now = Date.now()
    this.gone = this.gone.filter((g) => g.until > now)
    return this.gone.map((g) => g.instance)
  }

  private readySlots(): Slot[] {
    return this.slots.filter((s) => s.ready && s.rpc !== null)
  }

  /** Asks every ready worker; a worker that fails or does not answer in time is left out (and logged). */
  private async everyWorker<K extends keyof WorkerOps & string>(op: K, arg: WorkerOps[K][0]): Promise<FromWorker<WorkerOps[K][1]>[]> {
    const slots = this.readySlots()
    const results = await Promise.allSettled(slots.map((slot) => (slot.rpc as Rpc<PrimaryOps, WorkerOps>).call(op, arg, VIEW_TIMEOUT_MS)))
    const answers: FromWorker<WorkerOps[K][1]>[] = []
    results.forEach((result, i) => {
      const worker = (slots[i] as Slot).id
      if (result.status === 'fulfilled') answers.push({ worker, value: result.value })
      else this.log.warn({ err: result.reason, worker, op }, 'a worker did not answer; left out')
    })
    return answers
  }

  private async reloadOnce(): Promise<ReloadResult> {
    try {
      const next = await readConfigForReload(this.file, process.env, this.adjust)
      const plan = planReload(this.config, next)
      const slots = this.readySlots()
      await applyEverywhere(
        slots.map((slot) => ({ id: slot.id, rpc: slot.rpc as Rpc<PrimaryOps, WorkerOps> })),
        next,
        this.config,
        APPLY_TIMEOUT_MS,
      )
      this.forgetUndoneDrains(next)
      this.config = plan.inForce
      this.generation++
      for (const slot of slots) slot.generation = this.generation
      for (const slot of this.readySlots()) if (slot.generation !== this.generation) void this.catchUp(slot)
      return this.reloadOutcomes.applied(
        { reloaded: true, applied: plan.applied, restartRequired: plan.restartRequired },
        { workers: slots.length },
        plan.notInForce,
      )
    } catch (err) {
      throw this.reloadOutcomes.failed(err)
    }
  }

  /**
   * A drain lasts as long as its upstream: one the reload applied (to every worker) removed or started fresh (its url
   * changed) is drained by no worker now, and a replacement must not drain it again.
   */
  private forgetUndoneDrains(next: Config): void {
    for (const name of this.drained) {
      const before = this.config.upstreams.find((u) => u.name === name)
      const after = next.upstreams.find((u) => u.name === name)
      if (before === undefined || after === undefined || !keepsUpstream(before.url, after.url)) this.drained.delete(name)
    }
  }
}

/** A worker as a reload addresses it. */
export interface ApplyTarget {
  id: number
  rpc: Rpc<PrimaryOps, WorkerOps>
}

/**
 * Has every worker apply `next`. If one refuses it or gives no answer within `timeoutMs`, the others go back to
 * `current` and this throws: the refusal's ConfigError, else a ReloadNotAppliedError naming the workers. A worker that
 * gave no answer (stalled) is sent `current` as well: its channel delivers in order, so when it resumes it runs the
 * queued `apply` and then this one, and ends on the config in force like the others.
 */
export async function applyEverywhere(targets: ApplyTarget[], next: Config, current: Config, timeoutMs: number): Promise<void> {
  const results = await Promise.allSettled(targets.map((target) => target.rpc.call('apply', next, timeoutMs)))
  const failures = targets.flatMap((target, i) => {
    const result = results[i]
    return result?.status === 'rejected' ? [{ id: target.id, reason: result.reason as unknown }] : []
  })
  if (failures.length === 0) return
  const rollbacks = targets.flatMap((target, i) => {
    const result = results[i]
    if (result?.status === 'fulfilled') return [target.rpc.call('apply', current, timeoutMs)]
    // Not awaited: it answers once the worker resumes (or never, if it does not).
    if (result?.reason instanceof NoAnswerError) target.rpc.call('apply', current, timeoutMs).catch(() => undefined)
    return []
  })
  await Promise.allSettled(rollbacks)
  // Same config, same code: a worker refusing what another took is unexpected, but then the config is at fault.
  const refused = failures.find((f) => f.reason instanceof ConfigError)
  if (refused !== undefined) throw refused.reason
  const why = failures.map((f) => `worker ${f.id}: ${f.reason instanceof Error ? f.reason.message : String(f.reason)}`).join('; ')
  throw new ReloadNotAppliedError(
    `Not every worker applied the reload (${why}). The workers that did went back to the config in force; a worker that did not answer goes back to it when it resumes.`,
  )
}

/** Starts the workers; resolves once every one listens, rejects (everything stopped) if one cannot start. */
export async function startPrimary(options: PrimaryOptions): Promise<RunningPrimary> {
  const primary = new Primary(options)
  await primary.start(options.stopWhileStarting)
  return {
    url: primary.url,
    adminUrl: primary.adminUrl,
    reload: () => primary.reload(),
    shutdown: (reason) => primary.shutdown(reason),
  }
}
