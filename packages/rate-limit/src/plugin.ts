import fastifyRateLimit, { type RateLimitPluginOptions } from '@fastify/rate-limit'
import { ensureCore } from '@llmproxy/core'
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Redis } from 'ioredis'
import {
  type Limiter,
  type LimiterPair,
  type LiveOptions,
  RateLimitEngine,
  type RateLimits,
  type RequestLimiters,
  type SharedBackend,
} from './engine.js'
import { type RateLimitOptionsInput, resolveOptions } from './options.js'
import { RedisHealth, RedisStore, waitForRedis } from './redis-store.js'
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

const CONNECT_TIMEOUT_MS = 2000
const STATE_FILE_INTERVAL_MS = 5000
/** Entries of each local per-key request counter (an LRU: beyond this many active keys/IPs, the oldest are forgotten). */
const LOCAL_KEY_CACHE = 10_000

function subjectOf(request: FastifyRequest): string {
  const state = request[kLimitState]
  return state === null ? '' : state.subject
}

/** One @fastify/rate-limit instance per limiter, each in its own encapsulated context (its `createRateLimit` decorator stays there). */
async function createLimiter(fastify: FastifyInstance, settings: RateLimitPluginOptions): Promise<Limiter> {
  const made: { limiter: Limiter | null } = { limiter: null }
  await fastify.register(async (child) => {
    await child.register(fastifyRateLimit, { ...settings, global: false })
    made.limiter = child.createRateLimit()
  })
  if (made.limiter === null) throw new Error('@fastify/rate-limit did not provide createRateLimit')
  return made.limiter
}

async function createLimiters(fastify: FastifyInstance, live: LiveOptions, redis: Redis | null): Promise<RequestLimiters> {
  const pair = async (name: string, settings: RateLimitPluginOptions): Promise<LimiterPair> => ({
    local: await createLimiter(fastify, settings),
    shared: redis === null ? null : await createLimiter(fastify, { ...settings, redis, nameSpace: `rl:${name}:` }),
  })
  const gateway = (): string => 'all'
  return {
    globalRps: await pair('global-rps', { timeWindow: 1000, max: () => live.current.global.rps ?? 0, keyGenerator: gateway }),
    globalRpm: await pair('global-rpm', { timeWindow: 60_000, max: () => live.current.global.rpm ?? 0, keyGenerator: gateway }),
    keyRps: await pair('rps', {
      timeWindow: 1000,
      max: (request) => request[kLimitState]?.rps ?? 0,
      keyGenerator: subjectOf,
      cache: LOCAL_KEY_CACHE,
    }),
    keyRpm: await pair('rpm', {
      timeWindow: 60_000,
      max: (request) => request[kLimitState]?.rpm ?? 0,
      keyGenerator: subjectOf,
      cache: LOCAL_KEY_CACHE,
    }),
  }
}

const plugin: FastifyPluginAsync<RateLimitOptionsInput> = async (fastify, input) => {
  await ensureCore(fastify)
  const options = resolveOptions(input)
  if (fastify.hasDecorator('createRateLimit')) {
    throw new Error(
      '@llmproxy/rate-limit must be registered before @fastify/rate-limit in the same context (it creates its own @fastify/rate-limit instances)',
    )
  }

  const local = new MemoryStore()
  let redis: Redis | null = null
  let shared: SharedBackend | null = null
  if (options.store === 'redis' && options.redis !== undefined) {
    // Loaded only when used: ioredis costs a process ~10 MB of RSS.
    const { Redis } = await import('ioredis')
    redis = new Redis(options.redis.url, {
      keyPrefix: options.redis.keyPrefix,
      enableOfflineQueue: false,
      connectTimeout: CONNECT_TIMEOUT_MS,
      commandTimeout: options.redis.commandTimeoutMs,
      maxRetriesPerRequest: 1,
    })
    const health = new RedisHealth(redis, fastify.log)
    shared = { store: new RedisStore(redis), health, slotTtlMs: options.redis.slotTtlMs }
    await waitForRedis(redis, CONNECT_TIMEOUT_MS + 500)
  }

  let stateFile: QuotaStateFile | null = null
  if (options.store === 'memory' && options.quotaStateFile !== undefined) {
    stateFile = new QuotaStateFile(options.quotaStateFile, local, fastify.log)
    await stateFile.load()
    stateFile.start(STATE_FILE_INTERVAL_MS)
  }

  const live: LiveOptions = { current: options }
  const engine = new RateLimitEngine(live, await createLimiters(fastify, live, redis), local, shared, fastify)

  fastify.decorate('rateLimits', engine)
  fastify.decorateRequest(kLimitState, null)
  fastify.addHook('onRequest', engine.onRequest)
  fastify.addHook('preHandler', engine.preHandler)
  fastify.llm.addHook('onUsage', engine.onUsage)
  fastify.addHook('onClose', async () => {
    local.close()
    if (stateFile !== null) {
      await stateFile.close().catch((err: unknown) => fastify.log.error({ err }, 'rate-limit: could not save the quota state file'))
    }
    if (shared !== null) shared.health.close()
    if (redis !== null) redis.disconnect()
  })
}

/**
 * Global and per-key request limits (on @fastify/rate-limit), per-key tokens per minute, concurrency and token quotas;
 * memory store, or Redis shared by every gateway instance. Register after @llmproxy/auth.
 */
export const rateLimit = fp(plugin, { name: '@llmproxy/rate-limit', fastify: '5.x' })
