import type { ConfigProblem } from '@llmproxy/core'
import { Value } from '@llmproxy/core/typebox'
import { checkOptions as checkRateLimitOptions } from '@llmproxy/rate-limit'
import { deliveryProblems, webhookProblems } from '@llmproxy/usage'
import type { Config, ConfigSchema } from './config.js'

// Settings that only work together with another section. Each is either made to work (a key's limits turn rate
// limiting on) or refused with its path, so that nothing a config file declares is silently ignored.

type Raw = Record<string, unknown>

/** The mapping at `key` of the file as written (before defaults), if it is one. */
export function section(raw: Raw, key: string): Raw | undefined {
  const value = raw[key]
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Raw) : undefined
}

/** True when some key declares its own request, token or concurrency limits, or a quota. */
export function keysDeclareLimits(config: Config): boolean {
  return config.auth?.keys?.some((key) => key.rateLimit !== undefined || key.quota !== undefined) === true
}

/**
 * Turns rate limiting on (with its defaults) when the config has no `rateLimit` section but a key declares limits
 * or a quota: they are enforced as declared (memory store). `rateLimitSchema` is the config's `rateLimit` schema.
 */
export function enableKeyLimits(config: Config, rateLimitSchema: (typeof ConfigSchema)['properties']['rateLimit']): void {
  if (config.rateLimit === undefined && keysDeclareLimits(config)) {
    config.rateLimit = Value.Default(rateLimitSchema, {}) as Config['rateLimit']
  }
}

/** Problems of settings that do nothing without another section. `raw`: the file as written (before defaults). */
export function checkDependencies(config: Config, raw: Raw): ConfigProblem[] {
  const problems: ConfigProblem[] = []

  // Rate limiting and Redis.
  if (config.rateLimit === undefined) {
    if (config.redis !== undefined) {
      problems.push({ path: '/redis', message: 'set, but nothing uses it: rate limiting is off (add rateLimit: { store: redis })' })
    }
  } else {
    for (const problem of checkRateLimitOptions({ ...config.rateLimit, redis: config.redis })) {
      // The plugin's `redis` option is the config's top-level `redis` section.
      problems.push({ path: problem.path.startsWith('/redis') ? problem.path : `/rateLimit${problem.path}`, message: problem.message })
    }
  }

  // Usage: the spool and delivery settings belong to the webhook sink.
  const usage = config.usage
  if (usage !== undefined) {
    // What the usage plugin would refuse at start, caught by `llmproxy check` and reload too.
    problems.push(...webhookProblems(usage.webhook, '/usage/webhook'))
    if (usage.webhook !== undefined) problems.push(...deliveryProblems(usage, '/usage'))
    if (usage.webhook !== undefined && usage.spoolDir === undefined) {
      problems.push({ path: '/usage/spoolDir', message: 'required when usage.webhook is set (records wait there until delivered)' })
    }
    const written = section(raw, 'usage') ?? {}
    if (usage.webhook === undefined) {
      for (const key of ['spoolDir', 'batch', 'retry', 'spool', 'shutdownFlushMs']) {
        if (key in written) {
          problems.push({ path: `/usage/${key}`, message: 'only used with usage.webhook (the webhook delivery), which is not set' })
        }
      }
    }
  }

  // Upstreams: a per-upstream active check needs the master switch on; the queue needs an upstream with a cap.
  if (config.healthChecks.enabled === false) {
    config.upstreams.forEach((upstream, i) => {
      const check = upstream.healthCheck
      if (check !== undefined && check.enabled !== false && (check.enabled === true || check.path !== undefined)) {
        problems.push({
          path: `/upstreams/${i}/healthCheck`,
          message: 'active health checks are off (healthChecks.enabled: false), so this check would never run',
        })
      }
    })
  }
  if ('queue' in raw && !config.upstreams.some((upstream) => upstream.maxConcurrency !== undefined)) {
    problems.push({ path: '/queue', message: 'only used by upstreams with maxConcurrency, and none has one' })
  }

  // Auth: every request must present a key, and the server's keys come from auth.keys (a config file cannot set
  // resolveKey). Without them, IP lists alone let no request through: refused, rather than made an IP-only mode that
  // a reload dropping the keys would turn on. `keys: []` is written on purpose (every key revoked) and stays valid.
  if (config.auth !== undefined && config.auth.keys === undefined) {
    problems.push({
      path: '/auth',
      message:
        'has no keys: every request would get 401 (the IP lists only narrow who may present a key); add auth.keys, or write keys: [] to refuse every request',
    })
  }
  // The key cache holds what a resolveKey callback returns.
  if (section(raw, 'auth')?.cache !== undefined) {
    problems.push({
      path: '/auth/cache',
      message: 'caches keys found by a resolveKey callback, which a config file cannot set (its keys are auth.keys)',
    })
  }
  return problems
}
