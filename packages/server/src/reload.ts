import { readFile } from 'node:fs/promises'
import { isDeepStrictEqual } from 'node:util'
import type { KeyConfig } from '@llmproxy/auth'
import { ConfigError, type ConfigProblem } from '@llmproxy/core'
import { resolveUpstreamList } from '@llmproxy/upstreams'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import { Counter, type Registry } from 'prom-client'
import { type Config, parseConfig } from './config.js'
import { keysDeclareLimits } from './config-dependencies.js'

/** What a successful reload did. */
export interface ReloadResult {
  reloaded: true
  /** Live sections that changed and are now in force (`upstreams`, `models`, `auth.keys`, `rateLimit.global`, …). */
  applied: string[]
  /** Sections that changed in the file but only take effect after a restart (`server`, `retry`, `auth.ipAllowlist`, …). */
  restartRequired: string[]
}

/** A reload's outcome, as `GET /admin/reload` shows the last one (`problems` is empty when it applied). */
export interface ReloadStatus {
  /** When it ended (ISO 8601). */
  at: string
  reloaded: boolean
  applied: string[]
  restartRequired: string[]
  problems: ConfigProblem[]
}

/** What `GET /admin/reload` answers: the file a reload reads, and how the last reload since the start went. */
export interface ReloadHistory {
  file: string | null
  last: ReloadStatus | null
}

/**
 * A reload that the config file did not fail but the gateway could not apply everywhere (with workers: a worker that
 * did not answer or exited meanwhile); the workers are back on the config in force. A server error, not the file's.
 */
export class ReloadNotAppliedError extends Error {
  override name = 'ReloadNotAppliedError'
}

/**
 * Where reloads end, in the process that reads the file (the gateway, or with workers the primary): one log line
 * each, the last one kept for `GET /admin/reload`, and `counted` (the `config_reloads_total` metric).
 */
export class ReloadOutcomes {
  last: ReloadStatus | null = null
  private readonly log: FastifyBaseLogger
  private readonly file: string | null
  private readonly counted: (reloaded: boolean) => void

  constructor(log: FastifyBaseLogger, file: string | null, counted: (reloaded: boolean) => void = () => {}) {
    this.log = log
    this.file = file
    this.counted = counted
  }

  /** `notInForce`: access control the new file asks for that the gateway does not enforce until a restart. */
  applied(result: ReloadResult, logFields: Record<string, unknown> = {}, notInForce: readonly string[] = []): ReloadResult {
    const { applied, restartRequired } = result
    this.log.info({ file: this.file, applied, restartRequired, ...logFields }, 'config reloaded')
    if (restartRequired.length > 0) this.log.warn({ restartRequired }, 'config reload: these changes take effect after a restart')
    // An error, not a note, so that it is not read as done.
    if (notInForce.length > 0) {
      this.log.error({ restartRequired: notInForce }, 'config reload: the access control in the file is not in force until a restart')
    }
    this.keep({ at: new Date().toISOString(), reloaded: true, applied, restartRequired, problems: [] })
    return result
  }

  /** The error to throw: a ReloadNotAppliedError as it is, else a ConfigError naming the problems. */
  failed(err: unknown): ConfigError | ReloadNotAppliedError {
    const problems = problemsOf(err, '')
    this.log.error({ file: this.file, problems }, 'config reload failed: nothing changed')
    this.keep({ at: new Date().toISOString(), reloaded: false, applied: [], restartRequired: [], problems })
    if (err instanceof ReloadNotAppliedError) return err
    return err instanceof ConfigError ? err : new ConfigError('reload', problems)
  }

  history(): ReloadHistory {
    return { file: this.file, last: this.last }
  }

  private keep(status: ReloadStatus): void {
    this.last = status
    this.counted(status.reloaded)
  }
}

/**
 * `config_reloads_total{outcome}`, counted where the file is read (the gateway, or with workers the primary): returns
 * what counts one reload, applied or not.
 */
export function configReloadsCounter(prefix: string, registers: Registry[]): (reloaded: boolean) => void {
  const counter = new Counter({
    name: `${prefix}config_reloads_total`,
    help: 'Config reloads (SIGHUP, POST /admin/reload), by outcome: applied, or failed (nothing changed).',
    labelNames: ['outcome'],
    registers,
  })
  // Both series from the start, so that an alert on `failed` has a series to watch before the first failure.
  counter.inc({ outcome: 'applied' }, 0)
  counter.inc({ outcome: 'failed' }, 0)
  return (reloaded) => counter.inc({ outcome: reloaded ? 'applied' : 'failed' })
}

/** `fastify.llmConfig`: the config in force and hot reload. */
export interface ConfigReloader {
  /** The config file the gateway was started with; null when it has none (demo, `buildGateway` without `configFile`). */
  readonly file: string | null
  /** The config in force: live sections as of the last reload, restart-only sections as at start. */
  current(): Config
  /**
   * Re-reads `file`, validates it fully, then applies the live sections (each atomically, in order: upstreams,
   * models, auth keys, rate limits). Rejects with a ConfigError, changing nothing, when the file is missing or
   * invalid or a plugin refuses the change. Reloads run one at a time.
   */
  reload(): Promise<ReloadResult>
  /** Applies an already validated config with the same rules as `reload()` (throws a ConfigError, changing nothing). */
  apply(next: Config): ReloadResult
  /** The file a reload reads and the last reload's outcome (with workers, the primary's). */
  history(): Promise<ReloadHistory>
}

declare module 'fastify' {
  interface FastifyInstance {
    llmConfig: ConfigReloader
  }
}

export interface ReloadOptions {
  /** The config file; null = reload answers "no config file". */
  file: string | null
  /** Applied to every config read from `file` before it is compared and applied (e.g. the CLI's `--port`). */
  adjustConfig?: ((config: Config) => void) | undefined
  /** Environment for `${VAR}` interpolation (default: process.env at reload time). */
  env?: NodeJS.ProcessEnv | undefined
  /**
   * Does the reload instead (a worker of `server.workers`: the primary reads and validates the file once and has
   * every worker apply it).
   */
  reloadVia?: (() => Promise<ReloadResult>) | undefined
  /** Reads the reload history instead (a worker: the primary reloads). */
  historyVia?: (() => Promise<ReloadHistory>) | undefined
  /** Called with each reload's outcome (the gateway's `config_reloads_total`; a worker has none: the primary counts). */
  counted?: ((reloaded: boolean) => void) | undefined
}

/**
 * Reads and validates a config file for a reload (`adjust` applied): what `reload()` applies. Throws a ConfigError
 * naming the problems; `file` null is the gateway without a config file (the demo).
 */
export async function readConfigForReload(
  file: string | null,
  env: NodeJS.ProcessEnv,
  adjust: ((config: Config) => void) | undefined,
): Promise<Config> {
  if (file === null) {
    throw new ConfigError('reload', [
      { path: '', message: 'no config file: this gateway was not started from one (the demo, or buildGateway without configFile)' },
    ])
  }
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`config ${file}`, [
      { path: '', message: `cannot read the file: ${(err as NodeJS.ErrnoException).code ?? String(err)}` },
    ])
  }
  const next = parseConfig(text, file, env)
  adjust?.(next)
  return next
}

/** Sections no plugin can change while running: a change is reported in `restartRequired`, not applied. */
const RESTART_ONLY = [
  'server',
  'retry',
  'timeouts',
  'healthChecks',
  'passiveHealth',
  'queue',
  'bodyLimit',
  'redis',
  'usage',
  'metrics',
  'admin',
] as const satisfies readonly (keyof Config)[]

/** Auth settings only a restart changes (auth.update() takes the keys). */
const AUTH_RESTART_ONLY = ['ipAllowlist', 'ipDenylist', 'cache', 'keyInQuery'] as const
/** Rate-limit settings rateLimits.update() takes; the others (store, quotaStateFile) need a restart. */
const RATE_LIMIT_LIVE = ['global', 'perKey', 'reserveTokens'] as const
const RATE_LIMIT_RESTART_ONLY = ['store', 'quotaStateFile'] as const

type Section<K extends keyof Config> = NonNullable<Config[K]>

export interface ReloadPlan {
  /** The config in force once applied. */
  inForce: Config
  applied: string[]
  restartRequired: string[]
  /**
   * Of those, the access control the new file asks for and the gateway does not enforce until a restart: auth added
   * to an open gateway, an IP list changed, rate limiting turned on. (Auth or limits removed stay enforced until a
   * restart: stricter, not looser.)
   */
  notInForce: string[]
  upstreams: boolean
  models: boolean
  authKeys: boolean
  rateLimit: boolean
}

/** Compares the config in force with a new one: what can be applied live, what needs a restart, and the resulting config. */
export function planReload(current: Config, next: Config): ReloadPlan {
  const applied: string[] = []
  const restartRequired: string[] = []
  const notInForce: string[] = []
  const inForce: Config = { ...current }
  for (const key of RESTART_ONLY) if (!isDeepStrictEqual(current[key], next[key])) restartRequired.push(key)

  const upstreams = !isDeepStrictEqual(current.upstreams, next.upstreams)
  if (upstreams) applied.push('upstreams')
  inForce.upstreams = next.upstreams
  const models = !isDeepStrictEqual(current.models, next.models)
  if (models) applied.push('models')
  inForce.models = next.models

  let authKeys = false
  if ((current.auth === undefined) !== (next.auth === undefined)) {
    restartRequired.push('auth')
    if (current.auth === undefined) notInForce.push('auth')
  } else if (current.auth !== undefined && next.auth !== undefined) {
    for (const key of AUTH_RESTART_ONLY) {
      if (isDeepStrictEqual(current.auth[key], next.auth[key])) continue
      restartRequired.push(`auth.${key}`)
      if (key === 'ipAllowlist' || key === 'ipDenylist') notInForce.push(`auth.${key}`)
    }
    // Rate limiting starts with the process: keys' limits given while it is off are not in force (not in the key
    // table, /admin/keys or /admin/config, nor in what a replacement worker starts from) until a restart.
    const nextKeys = current.rateLimit === undefined ? next.auth.keys?.map(withoutLimits) : next.auth.keys
    authKeys = !isDeepStrictEqual(current.auth.keys ?? [], nextKeys ?? [])
    if (authKeys) applied.push('auth.keys')
    const auth: Section<'auth'> = { ...current.auth }
    if (nextKeys === undefined) delete auth.keys
    else auth.keys = nextKeys
    inForce.auth = auth
  }

  let rateLimit = false
  if ((current.rateLimit === undefined) !== (next.rateLimit === undefined)) {
    // A key's limits turn rate limiting on (enableKeyLimits): the file may have no rateLimit section, so say why.
    const turnedOn = current.rateLimit === undefined
    if (turnedOn) notInForce.push('rateLimit')
    restartRequired.push(
      turnedOn && keysDeclareLimits(next)
        ? 'rateLimit (the keys’ limits turn it on; it was off at start)'
        : !turnedOn && keysDeclareLimits(current)
          ? 'rateLimit (on at start for the keys’ limits)'
          : 'rateLimit',
    )
  } else if (current.rateLimit !== undefined && next.rateLimit !== undefined) {
    for (const key of RATE_LIMIT_RESTART_ONLY) {
      if (!isDeepStrictEqual(current.rateLimit[key], next.rateLimit[key])) restartRequired.push(`rateLimit.${key}`)
    }
    for (const key of RATE_LIMIT_LIVE) {
      if (!isDeepStrictEqual(current.rateLimit[key], next.rateLimit[key])) {
        applied.push(`rateLimit.${key}`)
        rateLimit = true
      }
    }
    inForce.rateLimit = {
      ...current.rateLimit,
      global: next.rateLimit.global,
      perKey: next.rateLimit.perKey,
      reserveTokens: next.rateLimit.reserveTokens,
    }
  }
  return { inForce, applied, restartRequired, notInForce, upstreams, models, authKeys, rateLimit }
}

function withoutLimits(key: KeyConfig): KeyConfig {
  const { rateLimit: _rateLimit, quota: _quota, ...rest } = key
  return rest
}

/** Problems of a ConfigError thrown by a plugin's update(), with their paths made relative to the config file. */
export function problemsOf(err: unknown, prefix: string): ConfigProblem[] {
  if (err instanceof ConfigError) return err.problems.map((p) => ({ path: `${prefix}${p.path}`, message: p.message }))
  return [{ path: prefix, message: err instanceof Error ? err.message : String(err) }]
}

class Reloader implements ConfigReloader {
  readonly file: string | null
  private readonly app: FastifyInstance
  private readonly adjust: ((config: Config) => void) | undefined
  private readonly env: NodeJS.ProcessEnv | undefined
  private readonly reloadVia: (() => Promise<ReloadResult>) | undefined
  private readonly historyVia: (() => Promise<ReloadHistory>) | undefined
  private readonly outcomes: ReloadOutcomes
  private config: Config
  private queue: Promise<unknown> = Promise.resolve()

  constructor(app: FastifyInstance, config: Config, options: ReloadOptions) {
    this.app = app
    this.config = config
    this.file = options.file
    this.adjust = options.adjustConfig
    this.env = options.env
    this.reloadVia = options.reloadVia
    this.historyVia = options.historyVia
    this.outcomes = new ReloadOutcomes(app.log, options.file, options.counted)
  }

  history(): Promise<ReloadHistory> {
    return this.historyVia === undefined ? Promise.resolve(this.outcomes.history()) : this.historyVia()
  }

  current(): Config {
    return this.config
  }

  reload(): Promise<ReloadResult> {
    if (this.reloadVia !== undefined) return this.reloadVia()
    const run = this.queue.then(() => this.reloadFile())
    this.queue = run.catch(() => undefined)
    return run
  }

  private async reloadFile(): Promise<ReloadResult> {
    let next: Config
    try {
      next = await readConfigForReload(this.file, this.env ?? process.env, this.adjust)
    } catch (err) {
      throw this.outcomes.failed(err)
    }
    return this.apply(next)
  }

  apply(next: Config): ReloadResult {
    try {
      const plan = planReload(this.config, next)
      return this.outcomes.applied(this.applyLive(next, plan), {}, plan.notInForce)
    } catch (err) {
      throw this.outcomes.failed(err)
    }
  }

  /** Applies the live sections of `next`, each atomically, putting back the earlier ones when a later one refuses. */
  private applyLive(next: Config, plan: ReloadPlan): ReloadResult {
    const app = this.app
    const current = this.config
    const hasAuth = app.hasDecorator('llmAuth')
    const hasRateLimit = app.hasDecorator('rateLimits')

    // Checked before anything changes, so that the usual mistakes never need a rollback.
    if (plan.upstreams) {
      try {
        resolveUpstreamList(next.upstreams)
      } catch (err) {
        throw new ConfigError('reload', problemsOf(err, '/upstreams'))
      }
    }

    // Each update is atomic; if a later one refuses, the earlier ones are put back.
    const undo: (() => void)[] = []
    let step = ''
    try {
      if (plan.upstreams) {
        step = '/upstreams'
        app.upstreams.update(next.upstreams)
        undo.push(() => app.upstreams.update(current.upstreams))
      }
      if (plan.upstreams || plan.models) {
        // Also after an upstream change, so that every route gets its pools from the updated registry.
        step = ''
        app.llmRouter.update(next.models)
        undo.push(() => app.llmRouter.update(current.models))
      }
      if (plan.authKeys && hasAuth) {
        step = '/auth'
        app.llmAuth.update(plan.inForce.auth?.keys ?? [])
        undo.push(() => app.llmAuth.update(current.auth?.keys ?? []))
      }
      if (plan.rateLimit && hasRateLimit && plan.inForce.rateLimit !== undefined) {
        step = '/rateLimit'
        // The store settings stay those in force (as registered in app.ts), so only the live ones change.
        app.rateLimits.update({ ...plan.inForce.rateLimit, ...(current.redis === undefined ? {} : { redis: current.redis }) })
      }
    } catch (err) {
      // Upstreams first: the old models may name upstreams the new list does not have.
      for (const restore of undo) {
        try {
          restore()
        } catch (restoreErr) {
          app.log.error({ err: restoreErr }, 'config reload: could not restore a section')
        }
      }
      throw new ConfigError('reload', problemsOf(err, step))
    }

    this.config = plan.inForce
    return { reloaded: true, applied: plan.applied, restartRequired: plan.restartRequired }
  }
}

/** Decorates the gateway with `llmConfig` (the config in force, hot reload). */
export function installReload(app: FastifyInstance, config: Config, options: ReloadOptions): ConfigReloader {
  const reloader = new Reloader(app, config, options)
  app.decorate('llmConfig', reloader)
  return reloader
}
