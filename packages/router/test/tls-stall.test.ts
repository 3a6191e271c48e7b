// An https upstream whose TLS handshake stalls: undici applies an attempt's abort only once its request has a
// connection, so the wait for the first byte must bound the handshake itself (connectMs alone did).
import assert from 'node:assert/strict'
import { type AddressInfo, createServer, type Socket } from 'node:net'
import { type TestContext, test } from 'node:test'
import { upstreams } from '@llmproxy/upstreams'
import Fastify from 'fastify'
import { router } from '../src/index.js'
import type { Timeouts } from '../src/options.js'

/** One streamed request to an upstream that accepts connections and never answers a TLS hello: its status and time. */
async function stalledHandshake(t: TestContext, timeouts: Partial<Timeouts>) {
  const sockets: Socket[] = []
  const stalled = createServer((socket) => sockets.push(socket))
  await new Promise<void>((resolve) => stalled.listen(0, '127.0.0.1', resolve))
  const logs: Record<string, unknown>[] = []
  const app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => logs.push(JSON.parse(line)) } } })
  t.after(async () => {
    await app.close()
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => stalled.close(resolve))
  })
  const port = (stalled.address() as AddressInfo).port
  await app.register(upstreams, {
    upstreams: [{ name: 'tls', url: `https://127.0.0.1:${port}`, protocol: 'openai' }],
    healthChecks: { enabled: false },
  })
  await app.register(router, { models: [{ name: 'm', upstreams: ['tls'] }], timeouts, retry: { attempts: 1 } })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  const started = performance.now()
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
  })
  const took = performance.now() - started
  assert.equal(res.status, 504)
  assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'llmproxy_upstream_timeout')
  // The attempt's log line says what failed, the cause's code with it.
  const failed = logs.find((line) => line.msg === 'upstream attempt failed')
  assert.deepEqual([failed?.upstream, failed?.failure, failed?.cause], ['tls', 'timeout', 'UND_ERR_CONNECT_TIMEOUT'])
  return took
}

test('a stalled TLS handshake fails the attempt at firstTokenMs, not at a longer connectMs', async (t) => {
  const took = await stalledHandshake(t, { connectMs: 20_000, firstTokenMs: 400 })
  // At firstTokenMs (0.4 s), far from connectMs (20 s).
  assert.ok(took < 5000, `answered after ${Math.round(took)} ms`)
})

test('a connectMs shorter than a second is kept: the handshake fails at 150 ms, not at the next second', async (t) => {
  const took = await stalledHandshake(t, { connectMs: 150, firstTokenMs: 10_000 })
  // undici's own connect timer ticks every half second and fired after about 1 s.
  assert.ok(took >= 140 && took < 700, `answered after ${Math.round(took)} ms`)
})
