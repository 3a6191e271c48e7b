// A gateway PROCESS whose Redis (started by the test) stalls for a second (SIGSTOP / SIGCONT), then is stopped
// and started again: what an operator sees (llmproxy_ratelimit_redis_up, one warning and one recovery line, the
// quota in /admin/keys and in Redis) goes back to normal as soon as Redis answers, and no token is lost or
// counted twice.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { type MockUpstream, promptTokensFor, startMockUpstream } from '@llmproxy/mock-upstream'
import { type GatewayChild, spawnGateway } from './gateway-process.js'
import { type HttpResult, pollUntil, postJson, sleep } from './http-helpers.js'
import { redis } from './multi-instance-helpers.js'
import { hasRedisBinaries, type RedisProcess, startRedisServer } from './redis-cluster.js'

const skip = hasRedisBinaries ? false : 'redis-server / redis-cli not installed'
if (!hasRedisBinaries && process.env.CI) {
  test('redis-server and redis-cli are installed (required when CI is set)', () => assert.fail('install redis-server'))
}

const PREFIX = `llmproxy-e2e-outage:${randomUUID()}:`
const ADMIN_TOKEN = 'admin-token-e2e-outage-00000'
const KEY = 'sk-e2e-outage-quota-0000000000000'

const stops: (() => Promise<void>)[] = []
const dir = mkdtempSync(join(tmpdir(), 'llmproxy-e2e-outage-'))
let server: RedisProcess | null = null
let mock: MockUpstream | null = null
let gw: GatewayChild

before(async () => {
  if (skip !== false) return
  server = await startRedisServer()
  mock = await startMockUpstream({ defaults: { tokens: 5 } })
  const config = {
    server: { host: '127.0.0.1', port: 0, logLevel: 'info', shutdownGraceMs: 1000 },
    upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
    models: [{ name: 'gpt-test', upstreams: ['mock'], upstreamModel: 'mock-model' }],
    healthChecks: { enabled: false },
    passiveHealth: { failuresToEject: 1000 },
    auth: { keys: [{ id: 'q', key: KEY, rateLimit: { tpm: 100_000 }, quota: { tokens: 100_000, per: 'day' } }] },
    rateLimit: { store: 'redis' },
    redis: { url: server.url, keyPrefix: PREFIX, commandTimeoutMs: 250 },
    admin: { token: ADMIN_TOKEN },
  }
  const file = join(dir, 'gateway.json')
  writeFileSync(file, JSON.stringify(config, null, 2))
  gw = await spawnGateway(file, (stop) => stops.push(stop))
  await pollUntil(redisUp, (up) => up === 1, 'llmproxy_ratelimit_redis_up 1')
})

after(async () => {
  await Promise.allSettled(stops.map((stop) => stop()))
  await mock?.close()
  await server?.stop()
  rmSync(dir, { recursive: true, force: true })
})

async function redisUp(): Promise<number> {
  const text = await fetch(`${gw.url}/metrics`).then((res) => res.text())
  return Number(/^llmproxy_ratelimit_redis_up (\d)$/m.exec(text)?.[1] ?? Number.NaN)
}

const BODY = JSON.stringify({ model: 'gpt-test', max_tokens: 50, messages: [{ role: 'user', content: 'Count to three, please.' }] })
/** What one request costs: its prompt and the 20 tokens the mock answers. */
const COST = promptTokensFor(JSON.parse(BODY)) + 20

function chat(): Promise<HttpResult> {
  return postJson(`${gw.url}/v1/chat/completions`, BODY, {
    authorization: `Bearer ${KEY}`,
    'x-mock-behavior': JSON.stringify({ tokens: 20 }),
  })
}

async function adminUsed(): Promise<number> {
  const keys = (await fetch(`${gw.url}/admin/keys`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }).then((res) => res.json())) as {
    id: string
    usage: { quota: { used: number } | null }
  }[]
  return keys.find((k) => k.id === 'q')?.usage.quota?.used ?? Number.NaN
}

async function redisUsed(): Promise<number> {
  assert.ok(server !== null)
  const day = new Date().toISOString().slice(0, 10)
  return Number(await redis([['GET', `${PREFIX}q:{key:q}:${day}`]], server.url))
}

function logLines(text: string): number {
  return gw
    .output()
    .split('\n')
    .filter((line) => line.includes(text)).length
}

/**
 * Waits for the outage warnings and recovery lines logged so far to be `outages` each. The gateway logs the recovery
 * as redis_up turns 1, but the line comes over its stdout, written asynchronously (pino's destination), and the
 * metric over HTTP: it may arrive after the metric reads 1.
 */
async function outageLines(outages: number): Promise<void> {
  await pollUntil(
    async () => [logLines('Redis is unreachable'), logLines('Redis answers again')],
    ([down, back]) => down === outages && back === outages,
    `${outages} "Redis is unreachable" and ${outages} "Redis answers again" lines`,
    5000,
  )
}

test('Redis stalls for a second: redis_up is 1 again as soon as it answers, /admin/keys and Redis agree, nothing counted twice', {
  skip,
}, async () => {
  assert.ok(server !== null)
  assert.equal((await chat()).status, 200)
  await pollUntil(redisUsed, (used) => used === COST, `${COST} tokens in Redis`)

  server.pause()
  const during = await Promise.all([chat(), chat(), chat()])
  assert.deepEqual(
    during.map((r) => r.status),
    [200, 200, 200],
  )
  assert.equal(await redisUp(), 0)
  await sleep(1000)
  server.resume()
  await pollUntil(redisUp, (up) => up === 1, 'llmproxy_ratelimit_redis_up 1 once Redis answers', 10_000)
  await outageLines(1)

  // The reservations the stalled Redis ran late were cancelled; the tokens counted locally were added.
  await pollUntil(redisUsed, (used) => used === 4 * COST, `${4 * COST} tokens in Redis`)
  assert.equal(await adminUsed(), 4 * COST)
})

test('Redis stopped and started again: local counting meanwhile, then Redis again, with those tokens', { skip }, async () => {
  assert.ok(server !== null)
  const port = server.port
  await server.stop()
  await pollUntil(redisUp, (up) => up === 0, 'llmproxy_ratelimit_redis_up 0')
  for (let i = 0; i < 2; i++) assert.equal((await chat()).status, 200)
  server = await startRedisServer({ port })
  await pollUntil(redisUp, (up) => up === 1, 'llmproxy_ratelimit_redis_up 1 after the restart', 10_000)
  await outageLines(2)
  // The new Redis started empty (no persistence): it holds what was counted while it was away.
  await pollUntil(redisUsed, (used) => used === 2 * COST, `${2 * COST} tokens in the new Redis`)
  assert.equal(await adminUsed(), 2 * COST)
})
