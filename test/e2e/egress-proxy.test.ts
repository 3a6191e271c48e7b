// A gateway behind an egress proxy (HTTPS_PROXY / HTTP_PROXY, as corporate networks have): its upstream requests,
// their health checks and the usage webhook all go through the proxy (a real CONNECT proxy here); NO_PROXY's hosts
// are reached directly.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { type AddressInfo, connect, createServer as createNetServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import OpenAI from 'openai'
import { spawnGateway } from './gateway-process.js'
import { pollUntil } from './http-helpers.js'
import { UsageReceiver } from './usage-helpers.js'

const SECRET = `e2e-egress-${randomBytes(4).toString('hex')}`
const dir = mkdtempSync(join(tmpdir(), 'llmproxy-e2e-egress-'))
const stops: (() => Promise<void>)[] = []
const closers: (() => Promise<unknown>)[] = []

after(async () => {
  for (const stop of stops) await stop()
  for (const close of closers) await close()
  rmSync(dir, { recursive: true, force: true })
})

/** A CONNECT proxy that tunnels to its target and notes each one. */
async function connectProxy(): Promise<{ url: string; targets: string[] }> {
  const targets: string[] = []
  const sockets: Socket[] = []
  const server: Server = createServer((_req, res) => res.writeHead(405).end())
  server.on('connect', (req, client: Socket) => {
    const target = req.url ?? ''
    targets.push(target)
    const [host, port] = target.split(':')
    const upstream = connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      upstream.pipe(client)
      client.pipe(upstream)
    })
    sockets.push(client, upstream)
    upstream.on('error', () => client.destroy())
    client.on('error', () => upstream.destroy())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  closers.push(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, targets }
}

/** A mock upstream and a webhook receiver, closed after the tests. */
async function upstreamAndReceiver(): Promise<{ mock: MockUpstream; receiver: UsageReceiver }> {
  const mock = await startMockUpstream({ defaults: { tokens: 3 } })
  closers.push(() => mock.close())
  const receiver = new UsageReceiver(SECRET)
  await receiver.listen()
  closers.push(() => receiver.close())
  return { mock, receiver }
}

async function gatewayBehind(proxyUrl: string, mock: MockUpstream, receiver: UsageReceiver, noProxy: string, name: string) {
  const file = join(dir, `${name}.json`)
  writeFileSync(
    file,
    JSON.stringify({
      server: { host: '127.0.0.1', port: 0, logLevel: 'info' },
      upstreams: [{ name: 'up', url: mock.url, protocol: 'openai' }],
      models: [{ name: 'm', upstreams: ['up'] }],
      timeouts: { connectMs: 500 },
      retry: { attempts: 1 },
      healthChecks: { intervalMs: 200, timeoutMs: 500, unhealthyAfter: 1 },
      usage: {
        webhook: { url: receiver.url, secret: SECRET },
        spoolDir: join(dir, `spool-${name}`),
        batch: { maxRecords: 1, maxWaitMs: 10 },
      },
    }),
  )
  // Both spellings (undici reads the lower-case one first).
  const env = {
    HTTPS_PROXY: proxyUrl,
    HTTP_PROXY: proxyUrl,
    NO_PROXY: noProxy,
    https_proxy: proxyUrl,
    http_proxy: proxyUrl,
    no_proxy: noProxy,
  }
  return spawnGateway(file, (stop) => stops.push(stop), 0, 60_000, env)
}

test('behind an egress proxy: upstream requests, health checks and the usage webhook go through it; NO_PROXY hosts do not', async () => {
  const { mock, receiver } = await upstreamAndReceiver()
  const proxy = await connectProxy()
  const upstreamHost = new URL(mock.url).host
  const webhookHost = `127.0.0.1:${receiver.port}`

  const gw = await gatewayBehind(proxy.url, mock, receiver, '', 'all')
  const client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'unused', maxRetries: 0 })
  const answer = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }] })
  assert.equal(answer.choices[0]?.message.content?.length !== 0, true)
  await pollUntil(
    async () => receiver.records.size,
    (n) => n === 1,
    'the usage record',
  )
  // The health checks (GET /v1/models every 200 ms) went through it too.
  await pollUntil(
    async () => mock.requests.filter((r) => r.method === 'GET').length,
    (n) => n >= 1,
    'a health check',
  )
  assert.ok(proxy.targets.includes(upstreamHost), `upstream through the proxy: ${proxy.targets.join(', ')}`)
  assert.ok(proxy.targets.includes(webhookHost), `webhook through the proxy: ${proxy.targets.join(', ')}`)
  const throughProxy = proxy.targets.length
  assert.ok(throughProxy >= 3, 'a chat request, a health check and a delivery, each over a tunnel of its own or shared')
  await gw.stop()

  // NO_PROXY names both: nothing goes through the proxy.
  proxy.targets.length = 0
  const direct = await gatewayBehind(proxy.url, mock, receiver, `${upstreamHost},127.0.0.1`, 'direct')
  const second = new OpenAI({ baseURL: `${direct.url}/v1`, apiKey: 'unused', maxRetries: 0 })
  await second.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }] })
  await pollUntil(
    async () => receiver.records.size,
    (n) => n === 2,
    'the second usage record',
  )
  assert.deepEqual(proxy.targets, [])
})

test('a proxy that never answers CONNECT: the connect timeouts hold (the request fails, the check marks the upstream down)', async () => {
  const { mock, receiver } = await upstreamAndReceiver()
  const held: Socket[] = []
  const stalled = createNetServer((socket) => held.push(socket))
  await new Promise<void>((resolve) => stalled.listen(0, '127.0.0.1', resolve))
  closers.push(async () => {
    for (const socket of held) socket.destroy()
    await new Promise((resolve) => stalled.close(resolve))
  })
  const gw = await gatewayBehind(`http://127.0.0.1:${(stalled.address() as AddressInfo).port}`, mock, receiver, '', 'stalled')
  const started = performance.now()
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }),
  })
  // connectMs 500 (undici's own bounds, without it: 10 s for a handshake, 300 s for the proxy's answer).
  assert.ok(res.status >= 500, String(res.status))
  assert.ok(performance.now() - started < 5000, `answered after ${Math.round(performance.now() - started)} ms`)
  await pollUntil(
    async () => (await fetch(`${gw.url}/readyz`)).status,
    (status) => status === 503,
    'the health check marking the only upstream down',
    5000,
  )
})
