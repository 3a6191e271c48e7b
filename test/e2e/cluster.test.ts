// Two gateway PROCESSES (the real CLI) share their limits through a real three-master Redis Cluster the test
// starts (redis-server --cluster-enabled yes, redis-cli --cluster create): a per-key rpm and a daily token quota
// stay exact across both.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { type MockUpstream, promptTokensFor, startMockUpstream } from '@llmproxy/mock-upstream'
import { type GatewayChild, spawnGateway } from './gateway-process.js'
import { errorOf, type HttpResult, pollUntil, postJson } from './http-helpers.js'
import { inOneWindow, redis } from './multi-instance-helpers.js'
import { hasRedisBinaries, type RedisCluster, startRedisCluster } from './redis-cluster.js'

const skip = hasRedisBinaries ? false : 'redis-server / redis-cli not installed'
if (!hasRedisBinaries && process.env.CI) {
  test('redis-server and redis-cli are installed (required when CI is set)', () => assert.fail('install redis-server'))
}

const PREFIX = `llmproxy-e2e-cluster:${randomUUID()}:`
const RPM = 20
const QUOTA = 1000
const ADMIN_TOKEN = 'admin-token-e2e-cluster-0000'
const KEYS = { rpm: 'sk-e2e-cluster-rpm-00000000000000', quota: ['sk-e2e-cluster-q1-000000000000000', 'sk-e2e-cluster-q2-000000000000000'] }
const QUOTA_IDS = ['quota-1', 'quota-2']

const stops: (() => Promise<void>)[] = []
const dir = mkdtempSync(join(tmpdir(), 'llmproxy-e2e-cluster-'))
let cluster: RedisCluster | null = null
let mock: MockUpstream | null = null
let a: GatewayChild
let b: GatewayChild

before(async () => {
  if (skip !== false) return
  cluster = await startRedisCluster()
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
        ...QUOTA_IDS.map((id, i) => ({ id, key: KEYS.quota[i], quota: { tokens: QUOTA, per: 'day' } })),
      ],
    },
    rateLimit: { store: 'redis' },
    // generous: a command slowed by a loaded machine must not fall back to per-instance counters
    redis: { cluster: cluster.nodes, keyPrefix: PREFIX, commandTimeoutMs: 5000 },
    admin: { token: ADMIN_TOKEN },
  }
  const file = join(dir, 'gateway.json')
  writeFileSync(file, JSON.stringify(config, null, 2))
  ;[a, b] = await Promise.all([spawnGateway(file, (stop) => stops.push(stop)), spawnGateway(file, (stop) => stops.push(stop))])
  for (const gw of [a, b]) {
    await pollUntil(
      () => fetch(`${gw.url}/metrics`).then((res) => res.text()),
      (text) => /^llmproxy_ratelimit_redis_up 1$/m.test(text),
      `${gw.url} to report llmproxy_ratelimit_redis_up 1`,
    )
  }
})

after(async () => {
  await Promise.allSettled(stops.map((stop) => stop()))
  await mock?.close()
  await cluster?.stop()
  rmSync(dir, { recursive: true, force: true })
})

function chatBody(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'Count to three, please.' }], ...extra })
}
const PROMPT_TOKENS = promptTokensFor(JSON.parse(chatBody()))

function chat(gw: GatewayChild, key: string, body: string, tokens?: number): Promise<HttpResult> {
  const headers: Record<string, string> = { authorization: `Bearer ${key}` }
  if (tokens !== undefined) headers['x-mock-behavior'] = JSON.stringify({ tokens })
  return postJson(`${gw.url}/v1/chat/completions`, body, headers)
}

async function fallbacks(gw: GatewayChild): Promise<number> {
  const text = await fetch(`${gw.url}/metrics`).then((res) => res.text())
  return Number(/^llmproxy_ratelimit_redis_fallbacks_total (\d+)$/m.exec(text)?.[1] ?? Number.NaN)
}

/** The sum of the counters matching `pattern`, over every node of the cluster (each node only has its own keys). */
async function clusterSum(pattern: string): Promise<number> {
  assert.ok(cluster !== null)
  let sum = 0
  for (const server of cluster.servers) {
    const keys = await redis([['KEYS', pattern]], server.url)
    if (!Array.isArray(keys) || keys.length === 0) continue
    const values = await redis([['MGET', ...keys.map(String)]], server.url)
    if (Array.isArray(values)) for (const v of values) sum += Number(v ?? 0)
  }
  return sum
}

/** `used` of a key's quota in /admin/keys of a gateway (read from the cluster). */
async function quotaUsed(gw: GatewayChild, id: string): Promise<number> {
  const keys = (await fetch(`${gw.url}/admin/keys`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }).then((res) => res.json())) as {
    id: string
    usage: { quota: { used: number } | null }
  }[]
  return keys.find((k) => k.id === id)?.usage.quota?.used ?? Number.NaN
}

function assert429(result: HttpResult, code: string): void {
  assert.equal(result.status, 429, result.text)
  assert.equal(errorOf(result).code, code)
}

test('a per-key rpm is exact across two gateway processes on a Redis Cluster', { skip }, async () => {
  const burst: Promise<HttpResult>[] = []
  for (let i = 0; i < 2 * RPM; i++) burst.push(chat(i % 2 === 0 ? a : b, KEYS.rpm, chatBody()))
  const results = await Promise.all(burst)
  const ok = results.filter((r) => r.status === 200).length
  assert.equal(ok, RPM, `statuses: ${results.map((r) => r.status).join(',')}`)
  for (const r of results.filter((r) => r.status !== 200)) assert429(r, 'llmproxy_rate_limited')
  assert.deepEqual(await Promise.all([a, b].map(fallbacks)), [0, 0], 'every decision was taken on the cluster')
  assert429(await chat(a, KEYS.rpm, chatBody()), 'llmproxy_rate_limited')
  assert429(await chat(b, KEYS.rpm, chatBody()), 'llmproxy_rate_limited')
  assert.equal(await clusterSum(`${PREFIX}rl:rpm:{key:rpm}`), 2 * RPM + 2, 'one counter, on the cluster')
})

test('a daily token quota is exact across two gateway processes on a Redis Cluster', { skip }, async () => {
  await inOneWindow(86_400_000, QUOTA_IDS, async (i) => {
    const id = QUOTA_IDS[i] ?? ''
    const key = KEYS.quota[i] ?? ''
    const pattern = `${PREFIX}q:{key:${id}}:*`
    assert.equal((await chat(b, key, chatBody(), 10)).status, 200)
    const first = PROMPT_TOKENS + 10
    await pollUntil(
      () => clusterSum(pattern),
      (sum) => sum === first,
      `${first} tokens charged on the cluster`,
    )
    assert.equal((await chat(a, key, chatBody(), QUOTA)).status, 200)
    const total = first + PROMPT_TOKENS + QUOTA
    await pollUntil(
      () => clusterSum(pattern),
      (sum) => sum === total,
      `${total} tokens charged on the cluster`,
    )
    assert.deepEqual(await Promise.all([quotaUsed(a, id), quotaUsed(b, id)]), [total, total], 'both instances read the same count')
    assert429(await chat(b, key, chatBody({ max_tokens: 1 })), 'quota_exceeded')
    assert429(await chat(a, key, chatBody({ max_tokens: 1 })), 'quota_exceeded')
  })
})
