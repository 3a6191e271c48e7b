import { strict as assert } from 'node:assert'
import { randomUUID } from 'node:crypto'
import { createServer } from 'node:net'
import { after, test } from 'node:test'
import { Redis } from 'ioredis'
import { RedisStore } from '../src/index.js'
import { awayFromMinuteBoundary, build, chat, type Harness, logged, REDIS_DOWN, settle, until } from './helpers.js'

const REDIS_URL = process.env.LLMPROXY_TEST_REDIS_URL ?? 'redis://127.0.0.1:6390'
/** Unique per run, so concurrent runs (and reruns) never share counters. */
const PREFIX = `llmproxy-test:${randomUUID()}:`

function quietClient(url: string): Redis {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 1000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  })
  client.on('error', () => undefined)
  return client
}

async function reachable(): Promise<boolean> {
  const client = quietClient(REDIS_URL)
  try {
    await client.connect()
    return (await client.ping()) === 'PONG'
  } catch {
    return false
  } finally {
    client.disconnect()
  }
}

const available = await reachable()
const where = new URL(REDIS_URL).host
// In CI a missing Redis is a failure, not a skip.
const skip =
  available || process.env.CI
    ? false
    : `Redis not reachable at ${where}: start one with redis-server --port 6390 --save '' --appendonly no --daemonize yes`
if (!available && process.env.CI) {
  test('Redis is reachable (required when CI is set)', () => assert.fail(`Redis not reachable at ${where} (LLMPROXY_TEST_REDIS_URL)`))
}

after(async () => {
  if (!available) return
  const client = quietClient(REDIS_URL)
  await client.connect()
  const keys = await client.keys(`${PREFIX}*`)
  if (keys.length > 0) await client.del(...keys)
  client.disconnect()
})

function redisOptions(prefix = PREFIX) {
  return { store: 'redis' as const, redis: { url: REDIS_URL, keyPrefix: prefix } }
}

async function pair(options: Parameters<typeof build>[0], keys: Parameters<typeof build>[1]): Promise<[Harness, Harness]> {
  return [await build(options, keys), await build(options, keys)]
}

test('two instances sharing Redis hold a per-key rpm across both (concurrent bursts)', { skip }, async (t) => {
  const [a, b] = await pair({ ...redisOptions(), perKey: { rpm: 10 } }, {})
  t.after(() => Promise.all([a.app.close(), b.app.close()]))
  assert.equal(a.app.rateLimits.redisHealthy, true)
  const burst = []
  for (let i = 0; i < 15; i++) burst.push(chat(a.app, 'shared-rpm'), chat(b.app, 'shared-rpm'))
  const results = await Promise.all(burst)
  const ok = results.filter((r) => r.statusCode === 200).length
  assert.ok(Math.abs(ok - 10) <= 1, `${ok} requests passed, expected 10 ± 1`)
  const limited = results.filter((r) => r.statusCode === 429)
  assert.equal(limited.length, 30 - ok)
  for (const r of limited) assert.equal(r.json().error.code, 'llmproxy_rate_limited')
  assert.equal(limited[0]?.headers['x-ratelimit-limit-requests'], '10')
  assert.equal(a.app.rateLimits.fallbacks + b.app.rateLimits.fallbacks, 0)
})

test('two instances share tokens per minute: charges and held reservations are seen by both, never overshooting', { skip }, async (t) => {
  await awayFromMinuteBoundary()
  const limits = { tpm: 1000 }
  const [a, b] = await pair(redisOptions(), { k: limits, h: limits })
  t.after(async () => {
    a.releaseHeld()
    b.releaseHeld()
    await Promise.all([a.app.close(), b.app.close()])
  })
  assert.equal((await chat(a.app, 'k', { max_tokens: 10, use: 700 })).statusCode, 200)
  await settle()
  assert.equal((await b.app.rateLimits.usage('k', limits)).tpm?.used, 700)
  const refused = await chat(b.app, 'k', { max_tokens: 400 })
  assert.equal(refused.statusCode, 429)
  assert.equal(refused.json().error.code, 'llmproxy_token_limit')

  // Each held request reserves ~238 tokens: exactly 4 fit in 1000, whichever instance they hit.
  const held = []
  for (let i = 0; i < 4; i++)
    held.push(chat(a.app, 'h', { max_tokens: 230 }, '/v1/hold'), chat(b.app, 'h', { max_tokens: 230 }, '/v1/hold'))
  await until(() => a.held() + b.held() + a.rejections.length + b.rejections.length - 1 === 8)
  assert.equal(a.held() + b.held(), 4)
  a.releaseHeld()
  b.releaseHeld()
  const results = await Promise.all(held)
  assert.equal(results.filter((r) => r.statusCode === 200).length, 4)
  assert.equal(results.filter((r) => r.statusCode === 429).length, 4)
  await settle()
  // The held requests sent no usage record: their reservations were given back.
  assert.equal((await a.app.rateLimits.usage('h', limits)).tpm?.used, 0)
})

test('quota is shared across instances and survives a restart', { skip }, async (t) => {
  const prefix = `${PREFIX}quota:`
  const limits = { quota: { tokens: 1000, per: 'day' as const } }
  const [a, b] = await pair(redisOptions(prefix), { q: limits })
  assert.equal((await chat(a.app, 'q', { max_tokens: 10, use: 800 })).statusCode, 200)
  await settle()
  const refused = await chat(b.app, 'q', { max_tokens: 300 })
  assert.equal(refused.statusCode, 429)
  assert.equal(refused.json().error.code, 'quota_exceeded')
  await Promise.all([a.app.close(), b.app.close()])

  const c = await build(redisOptions(prefix), { q: limits })
  t.after(() => c.app.close())
  const usage = await c.app.rateLimits.usage('q', limits)
  assert.equal(usage.quota?.used, 800)
  assert.equal(usage.quota?.remaining, 200)
  assert.equal((await chat(c.app, 'q', { max_tokens: 300 })).json().error.code, 'quota_exceeded')
})

test('concurrency slots are shared; a slot never released expires after its TTL', { skip }, async (t) => {
  const [a, b] = await pair({ ...redisOptions(), perKey: { concurrency: 1 } }, {})
  t.after(async () => {
    a.releaseHeld()
    await Promise.all([a.app.close(), b.app.close()])
  })
  const holding = chat(a.app, 'slot', {}, '/v1/hold')
  await until(() => a.held() === 1)
  const refused = await chat(b.app, 'slot')
  assert.equal(refused.statusCode, 429)
  assert.equal(refused.json().error.code, 'llmproxy_concurrency_limit')
  assert.deepEqual((await b.app.rateLimits.usage('slot', { concurrency: 1 })).concurrency, { limit: 1, inFlight: 1 })
  a.releaseHeld()
  assert.equal((await holding).statusCode, 200)
  await until(async () => (await b.app.rateLimits.usage('slot', { concurrency: 1 })).concurrency?.inFlight === 0)
  assert.equal((await chat(b.app, 'slot')).statusCode, 200)

  // A crashed instance: its slot is never released, and expires.
  const client = new Redis(REDIS_URL, { keyPrefix: PREFIX })
  t.after(() => client.disconnect())
  const store = new RedisStore(client, 60_000)
  assert.deepEqual(await store.acquire('c:crash', 'dead-instance:1', 1, 1000), { ok: true, value: 1 })
  assert.deepEqual(await store.acquire('c:crash', 'live:1', 1, 1000), { ok: false, value: 1 })
  await settle(1100)
  assert.deepEqual(await store.acquire('c:crash', 'live:1', 1, 1000), { ok: true, value: 1 })
})

test('markers: a settle applies once, a cancel undoes a reservation (and blocks one that runs late), a charge applies once', {
  skip,
}, async (t) => {
  const client = new Redis(REDIS_URL, { keyPrefix: PREFIX })
  t.after(() => client.disconnect())
  const store = new RedisStore(client, 60_000)
  const exp = Date.now() + 60_000
  const t1 = 't:{key:m}:1'
  assert.deepEqual(await store.reserve(t1, 'm:{key:m}:a', 100, 1000, exp), { ok: true, value: 100 })
  assert.equal(await client.get('m:{key:m}:a'), '100', 'the reservation is recorded')
  assert.equal(await store.settle(t1, 'm:{key:m}:a', 30, 100, exp), 30)
  // A retry of that settle (its first answer timed out, but it ran) finds no marker: nothing more.
  await store.settleAgain(t1, 'm:{key:m}:a', 30, 100, exp)
  assert.equal(await store.get(t1), 30)
  assert.equal(await client.exists('m:{key:m}:a'), 0, 'a settled reservation leaves no key')
  // A retry of a settle whose first attempt never ran applies it.
  await store.reserve(t1, 'm:{key:m}:b', 50, 1000, exp)
  await store.settleAgain(t1, 'm:{key:m}:b', 10, 50, exp)
  assert.equal(await store.get(t1), 40)
  // A request that outlived its marker is still settled by its first attempt, with the amount it reserved.
  await store.reserve(t1, 'm:{key:m}:c', 100, 1000, exp)
  await client.del('m:{key:m}:c')
  assert.equal(await store.settle(t1, 'm:{key:m}:c', 60, 100, exp), 100)
  // One that Redis lost (restarted empty) while it ran: the counter lost its reservation too; another request's
  // reservation made since is kept whole, and only what the lost one used is added (50 + 60, not 50 + 60 - 100).
  const sentAt = Date.now()
  await store.reserve(t1, 'm:{key:m}:c2', 100, 1000, exp)
  await client.del(t1, 'm:{key:m}:c2')
  await store.reserve(t1, 'm:{key:m}:c3', 50, 1000, exp)
  assert.equal(await store.settle(t1, 'm:{key:m}:c2', 60, 100, exp, sentAt), 110)

  const q = 'q:{key:m}:2025-01'
  // Cancelled before it runs (a stalled Redis runs it later): it then does nothing.
  await store.cancel(q, 'm:{key:m}:d', exp)
  assert.deepEqual(await store.reserve(q, 'm:{key:m}:d', 100, 1000, exp), { ok: false, value: 0 })
  assert.equal(await store.get(q), 0)
  // Cancelled after it ran: undone, once.
  await store.reserve(q, 'm:{key:m}:e', 100, 1000, exp)
  await store.cancel(q, 'm:{key:m}:e', exp)
  await store.cancel(q, 'm:{key:m}:e', exp)
  assert.equal(await store.get(q), 0)
  // A charge without reservation applies once per marker; never below zero.
  assert.equal(await store.charge(q, 'm:{key:m}:f', 40, exp), 40)
  assert.equal(await store.charge(q, 'm:{key:m}:f', 40, exp), null)
  assert.equal(await store.charge(q, 'm:{key:m}:g', -100, exp), 0)
  const ttl = await client.pttl('m:{key:m}:f')
  assert.ok(ttl > 0 && ttl <= 60_000, `markers expire (${ttl} ms)`)
})

async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  assert.ok(address !== null && typeof address === 'object')
  await new Promise((resolve) => server.close(resolve))
  return address.port
}

test('a Redis that refuses the password: served with local limits, and an error naming redis.password', { skip }, async (t) => {
  // A user the test Redis does not have (its default user takes any password).
  const wrong = new URL(REDIS_URL)
  wrong.username = 'no-such-user'
  wrong.password = 'not-the-password'
  const h = await build({ store: 'redis', redis: { url: wrong.href }, perKey: { rpm: 2 } })
  t.after(() => h.app.close())
  assert.equal((await chat(h.app, 'x')).statusCode, 200)
  await until(() => logged(h, 50, /redis\.password: Redis refuses the credentials/) === 1)
  await settle(600) // reconnections fail the same way meanwhile: still one
  assert.equal(logged(h, 50, /redis\.password/), 1)
  assert.ok(!JSON.stringify(h.logs).includes('not-the-password'), 'the password is not logged')
})

test('Redis unreachable: requests are served with local limits and one warning', async (t) => {
  const port = await closedPort()
  const h = await build({ store: 'redis', redis: { url: `redis://127.0.0.1:${port}` }, perKey: { rpm: 2 } })
  t.after(() => h.app.close())
  assert.equal(h.app.rateLimits.redisHealthy, false)
  assert.equal((await chat(h.app, 'x')).statusCode, 200)
  assert.equal((await chat(h.app, 'x')).statusCode, 200)
  const limited = await chat(h.app, 'x')
  assert.equal(limited.statusCode, 429)
  assert.equal(limited.json().error.code, 'llmproxy_rate_limited')
  assert.ok(h.app.rateLimits.fallbacks >= 3)
  await settle(500) // several reconnection attempts fail meanwhile
  assert.equal(logged(h, 40, REDIS_DOWN), 1)
})
