import { once } from 'node:events'
import type { TestContext } from 'node:test'
import { buildUsageRecord, type KeyLimits, llmCore, type Rejection } from '@llmproxy/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { type RateLimitOptionsInput, RedisStore, rateLimit } from '../src/index.js'
import type { RedisOptions } from '../src/options.js'
import { createRedisClient } from '../src/redis-client.js'
import type { RedisClient } from '../src/redis-store.js'

export interface Harness {
  app: FastifyInstance
  rejections: Rejection[]
  /** Warn/error log lines (parsed JSON). */
  logs: Array<{ level: number; msg: string }>
  /** Resolves every request held by `/v1/hold`. */
  releaseHeld: () => void
  /** Number of requests currently waiting in `/v1/hold`. */
  held: () => number
}

export interface ChatBody {
  model?: string
  max_tokens?: number
  /** Test only: the total tokens the fake upstream "uses" (emitted in the usage record). */
  use?: number
}

/**
 * An app with a fake auth (header `x-key` → keyId and the limits of `keys`), the rate-limit plugin and routes:
 * `POST /v1/chat` (emits a usage record of `body.use` tokens), `POST /v1/hold` (waits for `releaseHeld()`, then emits
 * a usage record of `body.use` tokens if given),
 * `POST /v1/refused` (a later preHandler answers 400, no usage record), `GET /health` (opted out).
 */
export async function build(options: RateLimitOptionsInput, keys: Record<string, KeyLimits | null> = {}): Promise<Harness> {
  const logs: Harness['logs'] = []
  const app = Fastify({
    logger: {
      level: 'info',
      stream: {
        write(line: string) {
          const entry = JSON.parse(line) as { level: number; msg: string }
          if (entry.level >= 30) logs.push(entry)
        },
      },
    },
  })
  await app.register(llmCore)
  app.addHook('onRequest', async (request) => {
    const key = request.headers['x-key']
    if (typeof key === 'string') {
      request.llm.keyId = key
      request.llm.keyLimits = keys[key] ?? null
    }
  })
  await app.register(rateLimit, options)
  const rejections: Rejection[] = []
  app.llm.addHook('onReject', (rejection) => {
    rejections.push(rejection)
  })

  let waiting: Array<() => void> = []
  app.post<{ Body: ChatBody }>('/v1/chat', async (request) => {
    const total = request.body.use ?? 0
    request.llm.usage = { promptTokens: 0, completionTokens: total, totalTokens: total }
    const during = request.llm.keyId === null ? null : await app.rateLimits.usage(request.llm.keyId)
    app.llm.emitUsage(buildUsageRecord(request.llm, 200), request)
    return { ok: true, during }
  })
  app.post<{ Body: ChatBody }>('/v1/hold', async (request) => {
    await new Promise<void>((resolve) => waiting.push(resolve))
    const total = request.body.use
    if (total !== undefined) {
      request.llm.usage = { promptTokens: 0, completionTokens: total, totalTokens: total }
      app.llm.emitUsage(buildUsageRecord(request.llm, 200), request)
    }
    return { ok: true }
  })
  app.post('/v1/refused', { preHandler: async (_request, reply) => reply.code(400).send({ error: 'refused' }) }, async () => ({ ok: true }))
  app.get('/health', { config: { rateLimit: false } }, async () => ({ ok: true }))
  await app.ready()
  return {
    app,
    rejections,
    logs,
    releaseHeld: () => {
      for (const resolve of waiting) resolve()
      waiting = []
    },
    held: () => waiting.length,
  }
}

export function chat(app: FastifyInstance, key: string | null, body: ChatBody = {}, path = '/v1/chat') {
  return app.inject({
    method: 'POST',
    url: path,
    headers: key === null ? {} : { 'x-key': key },
    payload: { model: 'm', ...body },
  })
}

/** Lets fire-and-forget store updates (give-backs on response close) land. */
export function settle(ms = 20): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export async function until(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not reached in time')
    await settle(10)
  }
}

/** Waits, if needed, until at least `marginMs` remain in the current UTC minute (TPM windows are minute-aligned). */
export async function awayFromMinuteBoundary(marginMs = 3000): Promise<void> {
  const left = 60_000 - (Date.now() % 60_000)
  if (left < marginMs) await settle(left + 50)
}

/** Log lines of `level` (30 info, 40 warn, 50 error) whose message matches. */
export function logged(h: Harness, level: number, message: RegExp): number {
  return h.logs.filter((l) => l.level === level && message.test(l.msg)).length
}

/** The one warning of an outage, and the one info line when Redis is used again. */
export const REDIS_DOWN = /Redis is unreachable/
export const REDIS_BACK = /Redis answers again/

/**
 * A RedisStore on a client made as the plugin makes it (`createRedisClient`), once connected; disconnected after the
 * test. The client's errors are ignored: the tests that use it cut its connections on purpose.
 */
export async function storeOnGatewayClient(
  t: TestContext,
  options: Partial<RedisOptions>,
): Promise<{ client: RedisClient; store: RedisStore }> {
  const client = await createRedisClient(options as RedisOptions)
  t.after(() => client.disconnect())
  client.on('error', () => {})
  if (client.status !== 'ready') await once(client, 'ready')
  return { client, store: new RedisStore(client, 60_000) }
}
