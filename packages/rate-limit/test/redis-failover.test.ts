// A failover that a *stalled* node (SIGSTOP: its connections stay open, nothing is answered) must not hold up, on
// real Redis topologies each test starts: a stalled Sentinel while the Sentinel master is killed, and a stalled
// Cluster master that its replica replaces. In both the plugin must be back on Redis within seconds of the
// promotion, while the stalled node is still stalled.
import { strict as assert } from 'node:assert'
import { randomUUID } from 'node:crypto'
import { type TestContext, test } from 'node:test'
import { hasRedisBinaries, type RedisSentinelSetup, startRedisCluster, startRedisSentinel } from '../../../test/e2e/redis-cluster.js'
import { build, chat, type Harness, logged, settle, until } from './helpers.js'

const skip = hasRedisBinaries || process.env.CI ? false : 'redis-server / redis-cli not installed'
const PREFIX = `llmproxy-test:${randomUUID()}:`
const LIMITS = { s: { tpm: 100_000 } }

/** One master, its replica, three Sentinels, and the plugin on them; the first Sentinel listed is the one asked first. */
async function onSentinels(t: TestContext, commandTimeoutMs: number) {
  const setup = await startRedisSentinel({ sentinels: 3 })
  let h: Harness | undefined
  // The plugin first: ioredis's failover detector has no error listener on its Sentinel connections (it prints).
  t.after(async () => {
    await h?.app.close()
    await setup.stop()
  })
  h = await build(
    { store: 'redis', redis: { sentinels: [...setup.sentinels], name: setup.name, keyPrefix: PREFIX, commandTimeoutMs } },
    LIMITS,
  )
  await until(() => h?.app.rateLimits.redisHealthy === true, 5000)
  const [first] = setup.sentinelServers
  assert.ok(first !== undefined)
  return { setup, h, first }
}

/** Back on Redis: on the promoted replica, a request decided there (no local fallback). */
async function onPromotedReplica(setup: RedisSentinelSetup, h: Harness): Promise<void> {
  assert.equal((await setup.currentMaster()).port, setup.replica.port)
  const fallbacks = h.app.rateLimits.fallbacks
  assert.equal((await chat(h.app, 's', { max_tokens: 10, use: 10 })).statusCode, 200)
  assert.equal(h.app.rateLimits.fallbacks, fallbacks, 'decided on the new master')
}

test('the Sentinels announce a new master while the client still waits for a stalled one: the client is connected again', {
  skip,
}, async (t) => {
  // Longer than the failover (~1.5–2.5 s; ~6 s when the Sentinels' vote was split and they try again), so that the
  // stalled Sentinel's answer comes after the +switch-master in every case.
  const { setup, h, first } = await onSentinels(t, 10_000)
  first.pause()
  await setup.master.stop()
  await until(() => h.app.rateLimits.redisHealthy === false, 5000)
  await until(async () => (await setup.currentMaster()).port === setup.replica.port, 15_000)
  // The +switch-master was published before the Sentinel named the new master to us: let it reach the client.
  await settle(200)
  // Its answer now finds the lookup cancelled by the failover detector: ioredis ends the client.
  first.resume()
  const resumedAt = Date.now()
  await until(() => h.app.rateLimits.redisHealthy === true, 5000)
  t.diagnostic(`back on Redis ${Date.now() - resumedAt} ms after the Sentinel resumed`)
  assert.equal(logged(h, 40, /Redis client stopped reconnecting/), 1, JSON.stringify(h.logs))
  // No request check here: once it has caught up (its next hello), the resumed Sentinel announces the +switch-master
  // too, and the client reconnects once more.
  assert.equal((await setup.currentMaster()).port, setup.replica.port)
})

test('a Sentinel stalls while the master is killed: the others name the promoted replica, used within seconds', {
  skip,
}, async (t) => {
  const commandTimeoutMs = 500
  const { setup, h, first } = await onSentinels(t, commandTimeoutMs)
  first.pause()
  const killedAt = Date.now()
  await setup.master.stop()
  await until(() => h.app.rateLimits.redisHealthy === false, 5000)
  // Each lookup gives the stalled Sentinel commandTimeoutMs, then asks the next; it stays stalled until the test ends.
  // ~2–3.5 s; ~6 s more when the two other Sentinels split their vote.
  await until(() => h.app.rateLimits.redisHealthy === true, 12_000)
  t.diagnostic(`back on Redis ${Date.now() - killedAt} ms after the kill`)
  assert.equal(first.child.signalCode, null, 'the Sentinel is still stalled, not gone')
  await onPromotedReplica(setup, h)
})

test('a stalled Cluster master: Redis is used again once its replica is promoted, not when the master resumes', {
  skip,
}, async (t) => {
  const cluster = await startRedisCluster({ replicas: 1 })
  t.after(() => cluster.stop())
  const h = await build(
    {
      store: 'redis',
      redis: { cluster: cluster.nodes.map((n) => ({ host: n.host, port: n.port })), keyPrefix: PREFIX, commandTimeoutMs: 300 },
    },
    LIMITS,
  )
  t.after(() => h.app.close())
  await until(() => h.app.rateLimits.redisHealthy === true, 5000)

  // The master of key s's slot (its hash tag), so that its next reservation times out.
  const owner = await cluster.masterOf('{key:s}')
  owner.pause()
  const stalledAt = Date.now()
  assert.equal((await chat(h.app, 's', { max_tokens: 10, use: 10 })).statusCode, 200)
  assert.equal(h.app.rateLimits.redisHealthy, false)

  // cluster-node-timeout 2000: the replica takes over after ~3–4 s; the stall lasts until the test ends.
  await until(() => h.app.rateLimits.redisHealthy === true, 12_000)
  t.diagnostic(`back on Redis ${Date.now() - stalledAt} ms after the stall began`)
  assert.notEqual((await cluster.masterOf('{key:s}')).port, owner.port, 'the replica was promoted')
  const fallbacks = h.app.rateLimits.fallbacks
  assert.equal((await chat(h.app, 's', { max_tokens: 10, use: 10 })).statusCode, 200)
  assert.equal(h.app.rateLimits.fallbacks, fallbacks, 'decided on the promoted replica')
})
