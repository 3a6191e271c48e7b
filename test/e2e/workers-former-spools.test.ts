// The real CLI restarted with fewer workers while the usage webhook is down: the records left in the spools of the
// workers it no longer runs are in /admin/usage and llmproxy_usage_queue_depth (what operations.md's "queue growing"
// alert reads) until they are delivered, with a primary (3 workers, then 2) and in a single process (then 1).
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { type GatewayChild, spawnGateway } from './gateway-process.js'
import { pollUntil } from './http-helpers.js'
import { metricValue, UsageReceiver } from './usage-helpers.js'

const RUN = randomBytes(4).toString('hex')
const SECRET = `e2e-former-spools-${RUN}`
const ADMIN = `admin-token-${RUN}-0000`

const dir = mkdtempSync(join(tmpdir(), 'llmproxy-e2e-former-spools-'))
const spoolDir = join(dir, 'spool')
const configFile = join(dir, 'gateway.json')
const receiver = new UsageReceiver(SECRET)
const stops: (() => Promise<void>)[] = []
let mock: MockUpstream
let webhookPort = 0

interface Usage {
  queueDepth: number
  delivered: number
  workers?: { worker: number; queueDepth: number }[]
}

function start(workers: number): Promise<GatewayChild> {
  const config = {
    server: { host: '127.0.0.1', port: 0, logLevel: 'info', shutdownGraceMs: 2000, workers },
    upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
    models: [{ name: 'gpt-test', upstreams: ['mock'], upstreamModel: 'mock-model' }],
    healthChecks: { enabled: false },
    usage: {
      webhook: { url: `http://127.0.0.1:${webhookPort}/usage`, secret: SECRET, timeoutMs: 2000 },
      spoolDir,
      batch: { maxWaitMs: 20 },
      retry: { baseMs: 50, maxMs: 200 },
      // The webhook is down when the gateway stops: what is spooled stays there.
      shutdownFlushMs: 0,
    },
    admin: { token: ADMIN },
  }
  writeFileSync(configFile, JSON.stringify(config))
  return spawnGateway(configFile, (stop) => stops.push(stop))
}

/** GET on a connection of its own (node:cluster hands each connection to the next worker). */
function get(gw: GatewayChild, path: string, headers: Record<string, string> = {}): Promise<string> {
  return send(gw, 'GET', path, null, headers)
}

function send(gw: GatewayChild, method: string, path: string, body: string | null, headers: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(new URL(path, gw.url), { method, agent: false, headers }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        text += chunk
      })
      res.on('end', () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`${method} ${path}: ${res.statusCode} ${text}`))))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body ?? undefined)
  })
}

const usage = async (gw: GatewayChild): Promise<Usage> =>
  JSON.parse(await get(gw, '/admin/usage', { authorization: `Bearer ${ADMIN}` })) as Usage
const queueDepthMetric = async (gw: GatewayChild): Promise<number> => metricValue(await get(gw, '/metrics'), 'llmproxy_usage_queue_depth')

before(async () => {
  mock = await startMockUpstream({ defaults: { tokens: 3 } })
  // The webhook's port, then down until the last step.
  webhookPort = await receiver.listen()
  await receiver.close()
})

after(async () => {
  await Promise.allSettled(stops.map((stop) => stop()))
  await Promise.allSettled([mock?.close(), receiver.close()])
  rmSync(dir, { recursive: true, force: true })
})

test('the backlog of former workers is counted while it waits, with a primary and in one process, then delivered', async () => {
  // 3 workers: each one spools records it cannot deliver.
  const three = await start(3)
  const chat = JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'Hi' }] })
  let sent = 0
  await pollUntil(
    async () => {
      await send(three, 'POST', '/v1/chat/completions', chat, { 'content-type': 'application/json' })
      sent++
      return usage(three)
    },
    (u) => u.workers?.length === 3 && u.workers.every((w) => w.queueDepth > 0) && u.queueDepth === sent,
    'a backlog in each of the 3 workers',
  )
  await three.stop()

  // 2 workers: worker 3's spool is delivered by the primary, and counted.
  const two = await start(2)
  await pollUntil(
    () => usage(two),
    (u) => u.queueDepth === sent,
    `${sent} records waiting in /admin/usage with 2 workers`,
  )
  assert.equal(await queueDepthMetric(two), sent)
  await two.stop()
  assert.ok(existsSync(join(spoolDir, 'worker-3')), 'worker 3 kept its records (the webhook is down)')

  // 1 process: workers 2 and 3's spools are delivered by it, and counted.
  const one = await start(1)
  await pollUntil(
    () => usage(one),
    (u) => u.queueDepth === sent,
    `${sent} records waiting in /admin/usage in one process`,
  )
  assert.equal(await queueDepthMetric(one), sent)

  // The webhook is back: everything arrives, the former spools are removed, and their deliveries stay counted.
  await receiver.listen(webhookPort)
  await pollUntil(
    async () => receiver.records.size,
    (n) => n === sent,
    `the ${sent} records at the webhook`,
  )
  const delivered = await pollUntil(
    () => usage(one),
    (u) => u.queueDepth === 0 && u.delivered === sent,
    'every record delivered',
  )
  assert.equal(delivered.delivered, sent)
  assert.equal(await queueDepthMetric(one), 0)
  assert.equal(metricValue(await get(one, '/metrics'), 'llmproxy_usage_delivered_total'), sent)
  await pollUntil(
    async () => existsSync(join(spoolDir, 'worker-2')) || existsSync(join(spoolDir, 'worker-3')),
    (left) => !left,
    'the former spools removed',
  )
  assert.deepEqual(receiver.problems, [])
})
