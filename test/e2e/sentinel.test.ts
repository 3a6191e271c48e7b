// A gateway PROCESS on Redis through Sentinel (one master, one replica, one Sentinel, all started by the test,
// with passwords): the master is killed, Sentinel promotes the replica, and the gateway keeps limiting: locally
// during the outage (logged once, with its duration), then on the new master, where the counters it replicated
// are still exact and the tokens counted locally meanwhile are added.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { type MockUpstream, promptTokensFor, startMockUpstream } from '@llmproxy/mock-upstream'
import { type GatewayChild, spawnGateway } from './gateway-process.js'
import { errorOf, type HttpResult, pollUntil, postJson, sleep } from './http-helpers.js'
import { redis } from './multi-instance-helpers.js'
import { hasRedisBinaries, type RedisSentinelSetup, startRedisSentinel } from './redis-cluster.js'

const skip = hasRedisBinaries ? false : 'redis-server / redis-cli not installed'
if (!hasRedisBinaries && process.env.CI) {
  test('redis-server and redis-cli are installed (required when CI is set)', () => assert.fail('install redis-server'))
}

const PREFIX = `llmproxy-e2e-sentinel:${randomUUID()}:`
const RPM = 10
const ADMIN_TOKEN = 'admin-token-e2e-sentinel-000'
const PASSWORDS = { data: 'data-password-e2e-sentinel', sentinel: 'sentinel-password-e2e-sentinel' }
const KEYS = { rpm: 'sk-e2e-sentinel-rpm-0000000000000', quota: 'sk-e2e-sentinel-quota-00000000000' }

const stops: (() => Promise<void>)[] = []
const dir = mkdtempSync(join(tmpdir(), 'llmproxy-e2e-sentinel-'))
let setup: RedisSentinelSetup | null = null
let mock: MockUpstream | null = null
let gw: GatewayChild

before(async () => {
  if (skip !== false) return
  setup = await startRedisSentinel({ password: PASSWORDS.data, sentinelPassword: PASSWORDS.sentinel })
  mock = await startMockUpstream({ defaults: { tokens: 5 } })
  const config = {
    server: { host: '127.0.0.1', port: 0, logLevel: 'info', shutdownGraceMs: 1000 },
    upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
    models: [{ name: 'gpt-test', upstreams: ['mock'], upstreamModel: 'mock-model' }],
    healthChecks: { enabled: false },
    passiveHealth: { failuresToEject: 1000 },
    auth: {
      keys: [
        { id: 'rpm', key: KEYS.rpm, rateLimit: { rpm: RPM } },
        { id: 'quota', key: KEYS.quota, quota: { tokens: 100_000, per: 'day' } },
      ],
    },
    rateLimit: { store: 'redis' },
    redis: {
      sentinels: setup.sentinels,
      name: setup.name,
      password: PASSWORDS.data,
      sentinelPassword: PASSWORDS.sentinel,
      keyPrefix: PREFIX,
      commandTimeoutMs: 1000,
    },
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
  await setup?.stop()
  rmSync(dir, { recursive: true, force: true })
})

async function redisUp(): Promise<number> {
  const text = await fetch(`${gw.url}/metrics`).then((res) => res.text())
  return Number(/^llmproxy_ratelimit_redis_up (\d)$/m.exec(text)?.[1] ?? Number.NaN)
}

function chatBody(): string {
  return JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'Count to three, please.' }] })
}
const PROMPT_TOKENS = promptTokensFor(JSON.parse(chatBody()))

function chat(key: string, tokens?: number): Promise<HttpResult> {
  const headers: Record<string, string> = { authorization: `Bearer ${key}` }
  if (tokens !== undefined) headers['x-mock-behavior'] = JSON.stringify({ tokens })
  return postJson(`${gw.url}/v1/chat/completions`, chatBody(), headers)
}

function admin(path: string): Promise<unknown> {
  return fetch(`${gw.url}/admin${path}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }).then((res) => res.json())
}

async function quotaUsed(): Promise<number> {
  const keys = (await admin('/keys')) as { id: string; usage: { quota: { used: number } | null } }[]
  return keys.find((k) => k.id === 'quota')?.usage.quota?.used ?? Number.NaN
}

/** The recovery line the gateway logs once Redis answers again. */
function recoveryLogs(): { downMs: number; replayed: number; tokensAdded: number }[] {
  return gw
    .output()
    .split('\n')
    .filter((line) => line.includes('Redis answers again'))
    .map((line) => JSON.parse(line) as { downMs: number; replayed: number; tokensAdded: number })
}

test('the Sentinel master is killed: limits go on locally, then on the promoted replica, exactly', { skip }, async (t) => {
  assert.ok(setup !== null)
  const before = await setup.currentMaster()
  for (let i = 0; i < 4; i++) assert.equal((await chat(KEYS.rpm)).status, 200)
  assert.equal((await chat(KEYS.quota, 10)).status, 200)
  const charged = PROMPT_TOKENS + 10
  await pollUntil(quotaUsed, (used) => used === charged, `${charged} tokens charged`)
  // Everything written so far is on the replica before the master dies.
  assert.equal(await redis([['WAIT', '1', '5000']], setup.master.url), 1)

  const killedAt = Date.now()
  await setup.master.stop()
  await pollUntil(redisUp, (up) => up === 0, 'llmproxy_ratelimit_redis_up 0')
  // During the outage requests are served, counted locally.
  for (let i = 0; i < 2; i++) assert.equal((await chat(KEYS.quota, 20)).status, 200)
  await pollUntil(redisUp, (up) => up === 1, 'llmproxy_ratelimit_redis_up 1 after the failover', 30_000)
  const windowMs = Date.now() - killedAt

  const after = await setup.currentMaster()
  assert.notEqual(after.port, before.port, 'Sentinel promoted the replica')
  assert.equal(after.port, setup.replica.port)
  // The line comes over the gateway's stdout, written asynchronously (pino's destination): it may follow the metric.
  const [recovery] = await pollUntil(
    async () => recoveryLogs(),
    (lines) => lines.length > 0,
    'the recovery line',
    5000,
  )
  assert.ok(recovery !== undefined)
  assert.equal(recoveryLogs().length, 1)
  assert.ok(recovery.downMs > 0 && recovery.downMs <= windowMs, `logged downMs ${recovery.downMs}, measured ${windowMs}`)
  assert.equal(
    gw
      .output()
      .split('\n')
      .filter((line) => line.includes('Redis is unreachable')).length,
    1,
    'one warning',
  )
  t.diagnostic(`failover window: ${windowMs} ms from the kill to llmproxy_ratelimit_redis_up 1; logged downMs ${recovery.downMs}`)

  // The rpm window replicated to the new master: 4 used, exactly 6 more pass.
  for (let i = 0; i < RPM - 4; i++) {
    const res = await chat(KEYS.rpm)
    assert.equal(res.status, 200, `request ${i + 5}: ${res.text}`)
  }
  const refused = await chat(KEYS.rpm)
  assert.equal(refused.status, 429)
  assert.equal(errorOf(refused).code, 'llmproxy_rate_limited')

  // The quota on the new master: what was charged before, plus what was counted locally during the outage.
  const total = charged + 2 * (PROMPT_TOKENS + 20)
  await pollUntil(quotaUsed, (used) => used === total, `${total} tokens on the new master`)
  const day = new Date().toISOString().slice(0, 10)
  const raw = await redis([['GET', `${PREFIX}q:{key:quota}:${day}`]], `redis://:${PASSWORDS.data}@127.0.0.1:${after.port}`)
  assert.equal(Number(raw), total)
})

test('the Sentinel and Redis passwords never show in /admin/config or the log', { skip }, async () => {
  const config = (await admin('/config')) as { redis: { password: string; sentinelPassword: string } }
  assert.equal(config.redis.password, '[redacted]')
  assert.equal(config.redis.sentinelPassword, '[redacted]')
  await sleep(10)
  for (const secret of Object.values(PASSWORDS)) assert.ok(!gw.output().includes(secret), 'a password appeared in the log')
})
