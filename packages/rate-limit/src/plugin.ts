import fastifyRateLimit, { type RateLimitPluginOptions } from '@fastify/rate-limit'
import { ensureCore } from '@llmproxy/core'
import Fastify, { type FastifyInstance, type FastifyPluginAsync, type FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { type Limiter, type LimiterPair, type LiveOptions, RateLimitEngine, type RateLimits, type RequestLimiters } from './engine.js'
import { UniqueIds } from './keys.js'
import { type RateLimitOptionsInput, resolveOptions } from './options.js'
import { localCounterStore, localRequestWindows } from './primary-counters.js'
import { RedisBackend } from './redis-backend.js'
import { createRedisClient } from './redis-client.js'
import { type RedisClient, RedisStore } from './redis-store.js'
import { kLimitState, type RequestLimitState } from './state.js'
import { QuotaStateFile } from './state-file.js'
import { MemoryStore } from './store.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Limits state and hot reload, for the admin API and metrics. */
    rateLimits: RateLimits
  }
  interface FastifyRequest {
    [kLimitState]: RequestLimitState | null
  }
}

/** At start, how long the plugin waits for Redis before serving with local limits (it keeps trying meanwhile). */
const REDIS_START_WAIT_MS = 2500
const STATE_FILE_INTERVAL_MS = 5000
/** Subjects of each local per-key request counter (beyond this many active keys/IPs, the oldest windows are forgotten). */
const LOCAL_KEY_CACHE = 10_000

/** The request's counter subject with its hash tag (`{key:<id>}`), which @fastify/rate-limit appends to its namespace. */
function tagOf(request: FastifyRequest): string {
  const state = request[kLimitState]
  return state === null ? '' : state.tag
}

/**
 * The request limits: counted in this process (request-windows.ts) and, with Redis, by @fastify/rate-limit instances
 * on Redis made in a private Fastify instance, one encapsulated context each: the app's own @fastify/rate-limit
 * (registered before or after this plugin, global or per route) never sees ours, and ours never picks up its
 * decorator, hooks or store. A limiter only reads the request it is given, so it works on the app's requests.
 */
async function createLimiters(live: LiveOptions, redis: RedisClient | null, host: FastifyInstance | null): Promise<RequestLimiters> {
  const limiter = async (settings: RateLimitPluginOptions): Promise<Limiter> => {
    const made: { limiter: Limiter | null } = { limiter: null }
    await host?.register(async (child) => {
      // @fastify/rate-limit's store types a single-node client; its script works on a cluster client alike (one key).
      await child.register(fastifyRateLimit, { ...settings, global: false, redis: redis as RateLimitPluginOptions['redis'] })
      made.limiter = child.createRateLimit()
    })
    if (made.limiter === null) throw new Error('@fastify/rate-limit did not provide createRateLimit')
    return made.limiter
  }
  const pair = async (name: string, subjects: number, settings: RateLimitPluginOptions & { timeWindow: number }): Promise<LimiterPair> => ({
    local: localRequestWindows(live.current.store, name, settings.timeWindow, subjects),
    shared: redis === null ? null : await limiter({ ...settings, nameSpace: `rl:${name}:` }),
  })
  const gateway = (): string => 'all'
  return {
    globalRps: await pair('global-rps', 1, { timeWindow: 1000, max: () => live.current.global.rps ?? 0, keyGenerator: gateway }),
    globalRpm: await pair('global-rpm', 1, { timeWindow: 60_000, max: () => live.current.global.rpm ?? 0, keyGenerator: gateway }),
    keyRps: await pair('rps', LOCAL_KEY_CACHE, { timeWindow: 1000, max: (request) => request[kLimitState]?.rps ?? 0, keyGenerator: tagOf }),
    keyRpm: await pair('rpm', LOCAL_KEY_CACHE, {
      timeWindow: 60_000,
      max: (request) => request[kLimitState]?.rpm ?? 0,
      keyGenerator: tagOf,
    }),
  }
}

const plugin: FastifyPluginAsync<RateLimitOptionsInput> = async (fastify, input) => {
  await ensureCore(fastify)
  const options = resolveOptions(input)
  const ids = new UniqueIds()
  const local = localCounterStore(options.store)
  let client: RedisClient | null = null
  let shared: RedisBackend | null = null
  if (options.store === 'redis' && options.redis !== undefined) {
    client = await createRedisClient(options.redis)
    shared = new RedisBackend(client, new RedisStore(client, options.redis.slotTtlMs), ids, fastify.log)
    await shared.ready(REDIS_START_WAIT_MS)
  }

  let stateFile: QuotaStateFile | null = null
  // A worker's counters (and its quota state file) are the primary's: then `local` is not a MemoryStore.
  if (options.store === 'memory' && options.quotaStateFile !== undefined && local instanceof MemoryStore) {
    stateFile = new QuotaStateFile(options.quotaStateFile, local, fastify.log)
    await stateFile.load()
    stateFile.start(STATE_FILE_INTERVAL_MS)
  }

  const live: LiveOptions = { current: options }
  const host = client === null ? null : Fastify()
  const engine = new RateLimitEngine(live, await createLimiters(live, client, host), local, shared, ids, fastify)

  // Auth registered after this plugin, or in a context inside this one's (the gateway's own, this plugin at the root),
  // identifies keys only after the limits ran: its keys' limits never apply.
  const authFirst = fastify.hasDecorator('llmAuth')
  fastify.addHook('onReady', async () => {
    if (authFirst) return
    const authInside = (context: FastifyInstance): boolean =>
      context.hasDecorator('llmAuth') && Object.prototype.isPrototypeOf.call(fastify, context)
    if (fastify.hasDecorator('llmAuth') || fastify.llm.contextsHeard().some(authInside)) {
      fastify.log.warn(
        '@llmproxy/rate-limit is registered before @llmproxy/auth, or around the context auth is in: limits count per client IP, and the keys’ own limits do not apply (register it after auth, in the same context or inside it)',
      )
    }
  })
  fastify.decorate('rateLimits', engine)
  fastify.decorateRequest(kLimitState, null)
  fastify.addHook('onRequest', engine.onRequest)
  fastify.addHook('preHandler', engine.preHandler)
  fastify.llm.addHook('onUsage', engine.onUsage)
  fastify.addHook('onClose', async () => {
    local.close()
    shared?.close()
    await host?.close()
    // The quota use since the last save is lost: logged, and app.close() rejects (the gateway's process exits 1).
    await stateFile?.close().catch((err: unknown) => {
      fastify.log.error({ err }, 'rate-limit: could not save the quota state file at shutdown; the quota use since the last save is lost')
      throw err
    })
  })
}

/**
 * Global and per-key request limits (on @fastify/rate-limit), per-key tokens per minute, concurrency and token quotas;
 * memory store, or Redis (single node, Sentinel or Cluster) shared by every gateway instance. Register after
 * @llmproxy/auth. Coexists with the app's own @fastify/rate-limit.
 */
export const rateLimit = fp(plugin, { name: '@llmproxy/rate-limit', fastify: '5.x' })
