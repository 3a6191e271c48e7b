// `server.workers` with the Redis store: the concurrency slots of a worker that dies are given back at once (its
// replacement and the other workers drop them), not held in Redis for `redis.slotTtlMs` (10 minutes by default).
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { type GatewayChild, logLines, spawnGateway, workerPid, workersReady } from './gateway-process.js'
import { pollUntil, postJson } from './http-helpers.js'
import { REDIS_URL, redisDeletePrefix, redisReachable } from './multi-instance-helpers.js'

const RUN = randomBytes(4).toString('hex')
const PREFIX = `llmproxy-e2e-workers-redis-${RUN}:`
const KEY = 'sk-e2e-workers-redis-conc-0000000'
const ADMIN = `admin-token-${RUN}-0000`

const available = await redisReachable()
const skip = available ? false : `Redis not reachable at ${new URL(REDIS_URL).host} (LLMPROXY_TEST_REDIS_URL)`
if (!available && process.env.CI) {
  test('Redis is reachable (required when CI is set)', () => assert.fail(`Redis not reachable at ${REDIS_URL}`))
}

const dir = mkdtempSync(join(tmpdir(), 'llmproxy-e2e-workers-redis-'))
const stops: (() => Promise<void>)[] = []
let mock: MockUpstream
let gw: GatewayChild

before(async () => {
  if (!available) return
  mock = await startMockUpstream({ defaults: { tokens: 3 } })
  const file = join(dir, 'gateway.json')
  writeFileSync(
    file,
    JSON.stringify({
      server: { host: '127.0.0.1', port: 0, logLevel: 'info', workers: 2 },
      upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
      models: [{ name: 'gpt-test', upstreams: ['mock'] }],
      healthChecks: { enabled: false },
      passiveHealth: { failuresToEject: 1_000_000 },
      auth: { keys: [{ id: 'conc', key: KEY, rateLimit: { concurrency: 2 } }] },
      rateLimit: { store: 'redis' },
      redis: { url: REDIS_URL, keyPrefix: PREFIX },
      admin: { token: ADMIN },
    }),
  )
  gw = await spawnGateway(file, (stop) => stops.push(stop))
  await workersReady(gw, 2, 60_000)
})

after(async () => {
  await Promise.allSettled(stops.map((stop) => stop()))
  await mock?.close()
  if (available) await redisDeletePrefix(PREFIX)
  rmSync(dir, { recursive: true, force: true })
})

const chat = (behavior: Record<string, number> = {}) =>
  postJson(`${gw.url}/v1/chat/completions`, JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'Hi' }] }), {
    authorization: `Bearer ${KEY}`,
    'x-mock-behavior': JSON.stringify(behavior),
    connection: 'close',
  })

const inFlight = async (): Promise<number> => {
  const res = await fetch(`${gw.url}/admin/keys`, { headers: { authorization: `Bearer ${ADMIN}` } })
  const [key] = (await res.json()) as { usage: { concurrency: { inFlight: number } } }[]
  return key?.usage.concurrency.inFlight ?? -1
}

test('a worker killed while its request holds one of the key’s slots: the slot is given back at once', { skip }, async () => {
  // Two slow requests hold the key's two slots in Redis, one per worker (the admin API says which worker holds each).
  const held = [chat({ ttftMs: 20_000 }), chat({ ttftMs: 20_000 })].map((p) => p.catch(() => null))
  await pollUntil(inFlight, (n) => n === 2, 'both slots taken')
  assert.equal((await chat()).status, 429, 'a third request is over the limit')
  const holders = await pollUntil(
    async () => {
      const res = await fetch(`${gw.url}/admin/upstreams`, { headers: { authorization: `Bearer ${ADMIN}` } })
      const upstreams = (await res.json()) as { workers: { worker: number; inFlight: number }[] }[]
      return upstreams.flatMap((u) => u.workers).filter((w) => w.inFlight > 0)
    },
    (list) => list.length > 0,
    'a worker with a request in flight',
  )
  const victim = (holders[0] as { worker: number; inFlight: number }).worker
  const killed = workerPid(gw, victim)
  process.kill(killed, 'SIGKILL')
  await pollUntil(
    async () => logLines(gw).filter((l) => l.msg === 'replacement worker ready' && l.worker === victim),
    (lines) => lines.length === 1,
    `the replacement of worker ${victim} ready`,
    60_000,
  )
  // Without their release, the dead worker's slots would count until redis.slotTtlMs (10 minutes) had passed.
  const left = 2 - (holders[0] as { inFlight: number }).inFlight
  assert.equal(await inFlight(), left)
  assert.equal((await chat()).status, 200)
  // The primary's line names the dead worker's pid apart from its own.
  const exit = logLines(gw).find((l) => l.msg === 'worker exited unexpectedly; starting a replacement')
  assert.equal(exit?.workerPid, killed)
  assert.notEqual(exit?.pid, killed)
  await Promise.all(held)
})
