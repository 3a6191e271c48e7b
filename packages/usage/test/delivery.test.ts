import { strict as assert } from 'node:assert'
import { type AddressInfo, createServer, type Socket } from 'node:net'
import { test } from 'node:test'
import { Value } from '@llmproxy/core/typebox'
import { type DeliveryEvent, verifySignature, WebhookPayloadSchema } from '../src/index.js'
import { buildApp, closedPort, emit, spoolDirs, startReceiver, usageRecord, waitFor } from './helpers.js'

const spoolDir = spoolDirs()

test('batches by size: full batches go at once, the rest waits for maxWaitMs (or flush)', async (t) => {
  const receiver = await startReceiver()
  const app = await buildApp({ webhook: { url: receiver.url }, spoolDir: spoolDir(), batch: { maxRecords: 10, maxWaitMs: 60_000 } })
  t.after(async () => {
    await app.close()
    await receiver.close()
  })
  const records = Array.from({ length: 25 }, () => usageRecord())
  for (const r of records) emit(app, r)
  await waitFor(() => receiver.deliveries.length >= 2, 15_000, 'two full batches')
  await new Promise((resolve) => setTimeout(resolve, 300))
  assert.deepEqual(
    receiver.deliveries.map((d) => d.ids.length),
    [10, 10],
    'the 5 left over wait for maxWaitMs',
  )
  assert.equal(app.usage.stats().queueDepth, 5)
  await app.usage.flush()
  assert.deepEqual(
    receiver.deliveries.map((d) => d.ids.length),
    [10, 10, 5],
  )
  assert.deepEqual(
    receiver.deliveries.flatMap((d) => d.ids),
    records.map((r) => r.id),
    'in order',
  )
  assert.equal(app.usage.stats().queueDepth, 0)
})

test('batches by time: a partial batch is sent maxWaitMs after its first record', async (t) => {
  const receiver = await startReceiver()
  const app = await buildApp({ webhook: { url: receiver.url }, spoolDir: spoolDir(), batch: { maxRecords: 100, maxWaitMs: 400 } })
  t.after(async () => {
    await app.close()
    await receiver.close()
  })
  const started = performance.now()
  for (let i = 0; i < 3; i++) emit(app, usageRecord())
  await waitFor(() => receiver.deliveries.length === 1, 15_000, 'the timed batch')
  assert.ok(performance.now() - started >= 350, 'not before maxWaitMs')
  assert.equal(receiver.deliveries[0]?.ids.length, 3)
})

test('each delivery is signed, typed, and its payload matches WebhookPayloadSchema', async (t) => {
  const receiver = await startReceiver()
  const app = await buildApp({
    webhook: { url: `${receiver.url}?tenant=a`, secret: 'whsec', headers: { 'x-tenant': 'a' } },
    spoolDir: spoolDir(),
    batch: { maxRecords: 2, maxWaitMs: 10 },
  })
  t.after(async () => {
    await app.close()
    await receiver.close()
  })
  const record = usageRecord({ cachedTokens: 3, metadata: { team: 'x' }, error: { code: 'c', message: 'm' } })
  emit(app, record)
  emit(app, usageRecord())
  await waitFor(() => receiver.ids.size === 2)
  const d = receiver.deliveries[0]
  assert.ok(d)
  assert.equal(d.headers['content-type'], 'application/json')
  assert.equal(d.headers['x-tenant'], 'a')
  assert.match(String(d.headers['x-llmproxy-delivery']), /^[0-9a-f-]{36}$/)
  assert.equal(verifySignature('whsec', d.headers['x-llmproxy-signature'], d.raw), true)
  assert.equal(verifySignature('other', d.headers['x-llmproxy-signature'], d.raw), false)
  const payload: unknown = JSON.parse(d.raw)
  assert.ok(Value.Check(WebhookPayloadSchema, payload), 'payload matches the contract schema')
  assert.deepEqual((payload as { records: unknown[] }).records[0], record)
})

test('a failed delivery is retried with the same delivery id and body; stats and events tell', async (t) => {
  const receiver = await startReceiver()
  receiver.respond = (n) => (n === 0 ? 500 : 200)
  const app = await buildApp({
    webhook: { url: receiver.url, secret: 'whsec' },
    spoolDir: spoolDir(),
    batch: { maxRecords: 5, maxWaitMs: 10 },
    retry: { baseMs: 20, maxMs: 100 },
  })
  const events: DeliveryEvent[] = []
  app.usage.events.on('delivery', (e) => events.push(e))
  t.after(async () => {
    await app.close()
    await receiver.close()
  })
  const records = Array.from({ length: 5 }, () => usageRecord())
  for (const r of records) emit(app, r)
  await waitFor(() => receiver.ids.size === 5)
  const [first, second] = receiver.deliveries
  assert.ok(first && second)
  assert.equal(receiver.deliveries.length, 2)
  assert.equal(first.status, 500)
  assert.equal(second.status, 200)
  assert.equal(first.headers['x-llmproxy-delivery'], second.headers['x-llmproxy-delivery'])
  assert.equal(first.raw, second.raw)
  assert.equal(verifySignature('whsec', second.headers['x-llmproxy-signature'], second.raw), true)
  // Each record reached the receiver twice; deduped by id, exactly once.
  assert.deepEqual(
    [...receiver.ids],
    records.map((r) => r.id),
  )
  await waitFor(() => events.length === 2)
  assert.deepEqual(
    events.map(({ ok, records, status }) => ({ ok, records, status })),
    [
      { ok: false, records: 5, status: 500 },
      { ok: true, records: 5, status: 200 },
    ],
  )
  assert.equal(events[0]?.error, 'webhook answered 500')
  assert.ok((events[1]?.latencyMs ?? -1) >= 0)
  const stats = app.usage.stats()
  assert.equal(stats.delivered, 5)
  assert.equal(stats.deliveryFailures, 1)
  assert.equal(stats.queueDepth, 0)
  assert.equal(stats.lastError, null)
  assert.ok(stats.lastDeliveryAt !== null && !Number.isNaN(Date.parse(stats.lastDeliveryAt)))
})

test('a webhook that does not answer times out and the batch is retried', async (t) => {
  const receiver = await startReceiver()
  receiver.respond = (n) => (n === 0 ? 'hang' : 200)
  const app = await buildApp({
    webhook: { url: receiver.url, timeoutMs: 300 },
    spoolDir: spoolDir(),
    batch: { maxRecords: 1, maxWaitMs: 0 },
    retry: { baseMs: 10, maxMs: 50 },
  })
  const events: DeliveryEvent[] = []
  app.usage.events.on('delivery', (e) => events.push(e))
  t.after(async () => {
    await app.close()
    await receiver.close()
  })
  emit(app, usageRecord())
  await waitFor(() => receiver.ids.size === 1)
  assert.equal(events[0]?.ok, false)
  assert.match(String(events[0]?.error), /timed out/)
  assert.equal(app.usage.stats().deliveryFailures, 1)
})

test('receiver down (connection refused) until the backoff is at its cap, then back: every record is delivered', async (t) => {
  const port = await closedPort()
  const app = await buildApp({
    webhook: { url: `http://127.0.0.1:${port}/usage` },
    spoolDir: spoolDir(),
    batch: { maxRecords: 20, maxWaitMs: 50 },
    retry: { baseMs: 50, maxMs: 1000 },
  })
  let receiver: Awaited<ReturnType<typeof startReceiver>> | null = null
  t.after(async () => {
    await app.close()
    await receiver?.close()
  })
  const records = Array.from({ length: 50 }, () => usageRecord())
  for (const r of records) emit(app, r)
  // Backoff ceilings 50, 100, 200, 400, 800, then retry.maxMs: the 7th failure comes after a wait at the cap.
  await waitFor(() => app.usage.stats().deliveryFailures >= 7, 30_000, 'seven failed attempts')
  const down = app.usage.stats()
  assert.equal(down.queueDepth, 50, 'all spooled, none delivered')
  assert.equal(down.delivered, 0)
  assert.match(String(down.lastError), /ECONNREFUSED/)
  receiver = await startReceiver(port)
  const up = receiver
  await waitFor(() => up.ids.size === 50, 20_000, 'delivery after the outage')
  assert.deepEqual([...up.ids].sort(), records.map((r) => r.id).sort())
  await waitFor(() => app.usage.stats().queueDepth === 0)
})

test('1,000 records through a flaky receiver: exactly 1,000 distinct ids after dedupe', async (t) => {
  const receiver = await startReceiver()
  // Every third request fails after the receiver has read it: 500, or a reset socket (ack lost).
  receiver.respond = (n) => (n % 3 === 1 ? 500 : n % 3 === 2 && n < 30 ? 'destroy' : 200)
  const app = await buildApp({
    webhook: { url: receiver.url },
    spoolDir: spoolDir(),
    batch: { maxRecords: 50, maxWaitMs: 20 },
    retry: { baseMs: 5, maxMs: 40 },
    spool: { segmentBytes: 64 * 1024 },
  })
  t.after(async () => {
    await app.close()
    await receiver.close()
  })
  const ids = new Set<string>()
  for (let i = 0; i < 1000; i++) {
    const r = usageRecord()
    ids.add(r.id)
    emit(app, r)
  }
  await waitFor(() => receiver.ids.size === 1000 && app.usage.stats().queueDepth === 0, 30_000, '1,000 records')
  assert.deepEqual([...receiver.ids].sort(), [...ids].sort())
  const received = receiver.deliveries.reduce((n, d) => n + d.ids.length, 0)
  assert.ok(received > 1000, 'some batches were received twice (at-least-once)')
  assert.equal(app.usage.stats().delivered, 1000)
})

test('a webhook whose TLS handshake stalls: each attempt gives up at timeoutMs, and closing does not wait for it', async (t) => {
  // Accepts TCP and never answers the ClientHello (a stalled TLS terminator).
  const sockets: Socket[] = []
  const stalled = createServer((socket) => sockets.push(socket))
  await new Promise<void>((resolve) => stalled.listen(0, '127.0.0.1', resolve))
  t.after(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => stalled.close(resolve))
  })
  const port = (stalled.address() as AddressInfo).port
  const app = await buildApp({
    webhook: { url: `https://127.0.0.1:${port}/usage`, timeoutMs: 300 },
    spoolDir: spoolDir(),
    shutdownFlushMs: 500,
    batch: { maxRecords: 1, maxWaitMs: 0 },
    retry: { baseMs: 10, maxMs: 50 },
  })
  emit(app, usageRecord())
  // undici's own connect timeout is 10 s: two failures within 3 s are the delivery's timeout at work.
  await waitFor(() => app.usage.stats().deliveryFailures >= 2, 3000, 'two failed attempts')
  const closing = performance.now()
  await app.close()
  // The flush window, then the stop: not undici's 10 s for the handshake in progress.
  assert.ok(performance.now() - closing < 2500, `close took ${Math.round(performance.now() - closing)} ms`)
})
