// Every limit on a real three-master Redis Cluster (started by the test), shared by two plugin instances: each Lua
// script's keys must share a hash slot (Redis refuses CROSSSLOT otherwise), and the counts must stay exact.
import { strict as assert } from 'node:assert'
import { randomUUID } from 'node:crypto'
import { after, before, test } from 'node:test'
import { Cluster } from 'ioredis'
import { hasRedisBinaries, type RedisCluster, startRedisCluster } from '../../../test/e2e/redis-cluster.js'
import { RedisStore } from '../src/index.js'
import { periodOf } from '../src/windows.js'
import { awayFromMinuteBoundary, build, chat, type Harness, settle, storeOnGatewayClient, until } from './helpers.js'

const skip = hasRedisBinaries || process.env.CI ? false : 'redis-server / redis-cli not installed'
const PREFIX = `llmproxy-test:${randomUUID()}:`

let cluster: RedisCluster | null = null
before(async () => {
  if (skip === false) cluster = await startRedisCluster()
})
after(() => cluster?.stop())

function nodes() {
  assert.ok(cluster !== null)
  return cluster.nodes.map((n) => ({ host: n.host, port: n.port }))
}

async function pair(keys: Parameters<typeof build>[1], perKey = {}): Promise<[Harness, Harness]> {
  const options = { store: 'redis' as const, redis: { cluster: nodes(), keyPrefix: PREFIX }, perKey }
  return [await build(options, keys), await build(options, keys)]
}

test('request, token, quota and concurrency limits on a Redis Cluster, shared by two instances', { skip }, async (t) => {
  await awayFromMinuteBoundary(10_000)
  const limits = { rpm: 10, tpm: 1000, quota: { tokens: 1500, per: 'day' as const }, concurrency: 1 }
  const [a, b] = await pair({ k: limits, r: { rpm: 10 } })
  t.after(async () => {
    a.releaseHeld()
    await Promise.all([a.app.close(), b.app.close()])
  })
  assert.equal(a.app.rateLimits.redisHealthy, true)

  // rpm, concurrent bursts on both instances: exactly 10 pass.
  const burst = []
  for (let i = 0; i < 10; i++) burst.push(chat(a.app, 'r'), chat(b.app, 'r'))
  const statuses = (await Promise.all(burst)).map((r) => r.statusCode)
  assert.equal(statuses.filter((s) => s === 200).length, 10, statuses.join(','))

  // Tokens charged through one instance are seen by the other, in the TPM window and the quota period.
  assert.equal((await chat(a.app, 'k', { max_tokens: 10, use: 700 })).statusCode, 200)
  await settle()
  const usage = await b.app.rateLimits.usage('k', limits)
  assert.equal(usage.tpm?.used, 700)
  assert.equal(usage.quota?.used, 700)
  const refused = await chat(b.app, 'k', { max_tokens: 400 })
  assert.equal(refused.statusCode, 429)
  assert.equal(refused.json().error.code, 'llmproxy_token_limit')

  // The key's one slot, held through A, refuses B.
  const holding = chat(a.app, 'k', { max_tokens: 1 }, '/v1/hold')
  await until(() => a.held() === 1)
  assert.equal((await chat(b.app, 'k', { max_tokens: 1 })).json().error.code, 'llmproxy_concurrency_limit')
  assert.equal((await b.app.rateLimits.usage('k', limits)).concurrency?.inFlight, 1)
  a.releaseHeld()
  assert.equal((await holding).statusCode, 200)
  await until(async () => (await b.app.rateLimits.usage('k', limits)).concurrency?.inFlight === 0)
  assert.equal(a.app.rateLimits.fallbacks + b.app.rateLimits.fallbacks, 0, 'every decision was taken on the cluster')

  // One subject's keys live on one node (its hash tag), whichever node that is.
  assert.ok(cluster !== null)
  const perNode = await cluster.onEveryNode(['KEYS', `${PREFIX}*{key:k}*`])
  const holders = perNode.filter((keys) => Array.isArray(keys) && keys.length > 0)
  assert.equal(holders.length, 1, JSON.stringify(perNode))
})

test('every script runs on the cluster: reserve, settle, retries, cancel, charge, slots (no CROSSSLOT)', { skip }, async (t) => {
  const client = new Cluster(nodes(), { keyPrefix: PREFIX })
  t.after(() => client.disconnect())
  const store = new RedisStore(client, 60_000)
  const exp = Date.now() + 60_000
  // Subjects whose tags land on different nodes.
  for (const subject of ['key:a', 'key:b', 'key:c', 'ip:10.0.0.1', 'key:{odd}id']) {
    const tag = `{${subject}}`
    const counter = `q:${tag}:${periodOf('day', Date.now()).name}`
    assert.deepEqual(await store.reserve(counter, `m:${tag}:1`, 100, 1000, exp), { ok: true, value: 100 })
    assert.equal(await store.settle(counter, `m:${tag}:1`, 40, 100, exp), 40)
    await store.settleAgain(counter, `m:${tag}:1`, 40, 100, exp)
    await store.cancel(counter, `m:${tag}:2`, exp)
    assert.equal(await store.charge(counter, `m:${tag}:3`, 5, exp), 45)
    assert.equal(await store.get(counter), 45)
    assert.deepEqual(await store.acquire(`c:${tag}`, 'slot-1', 1, 10_000), { ok: true, value: 1 })
    assert.equal(await store.inFlight(`c:${tag}`), 1)
    await store.release(`c:${tag}`, 'slot-1')
    assert.equal(await store.inFlight(`c:${tag}`), 0)
  }
})

test('a settle whose connection drops after the node ran it is not resent by ioredis: applied once', { skip }, async (t) => {
  const { client, store } = await storeOnGatewayClient(t, { cluster: nodes(), keyPrefix: PREFIX, commandTimeoutMs: 1000 })
  const tag = '{key:cut}'
  const [key, expireAt] = [`t:${tag}:1`, Date.now() + 60_000]
  // A first settle on the subject's node loads the script there (so the cut one below is a single EVALSHA).
  assert.deepEqual(await store.reserve(key, `m:${tag}:warm`, 10, 1000, expireAt), { ok: true, value: 10 })
  assert.equal(await store.settle(key, `m:${tag}:warm`, 10, 10, expireAt), 10)
  assert.deepEqual(await store.reserve(key, `m:${tag}:a`, 10, 1000, expireAt), { ok: true, value: 20 })

  // The settle goes out, and the connections close at once (a network cut): the node has the command and runs it,
  // the answer is lost. Its outcome is unknown to the client, so the engine replays it once (settleAgain).
  const settling = store.settle(key, `m:${tag}:a`, 100, 10, expireAt)
  for (const node of (client as Cluster).nodes('master')) node.stream?.destroy()
  await assert.rejects(settling, /Connection is closed/)
  // The engine replays once the cluster answers again.
  await until(async () => (await store.get(key).catch(() => null)) !== null)
  await store.settleAgain(key, `m:${tag}:a`, 100, 10, expireAt)
  await settle(300)
  // Resent by ioredis's failover retry (a first attempt, finding the marker gone), it would have added 90 more.
  assert.equal(await store.get(key), 110)
})
