import { strict as assert } from 'node:assert'
import { spawnSync } from 'node:child_process'
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { type TestContext, test } from 'node:test'
import { ConfigError, type UsageRecord } from '@llmproxy/core'
import Fastify from 'fastify'
import { type SpoolFullEvent, type UsageOptionsInput, usage } from '../src/index.js'
import {
  buildApp,
  captureLogs,
  closedPort,
  emit,
  endOfTurn,
  segmentFiles,
  spoolDirs,
  startReceiver,
  usageRecord,
  usageStats,
  waitFor,
} from './helpers.js'

const spoolDir = spoolDirs()

const lineBytes = (r: UsageRecord): number => Buffer.byteLength(`${JSON.stringify(r)}\n`)

test('without a webhook, records only go to listeners; stats are zero and flush resolves', async (t) => {
  const app = await buildApp({})
  t.after(() => app.close())
  const seen: string[] = []
  app.usage.onUsage((record) => {
    seen.push(record.id)
  })
  const r = usageRecord()
  emit(app, r)
  assert.deepEqual(seen, [r.id])
  await app.usage.flush()
  assert.deepEqual(app.usage.stats(), usageStats())
})

test('onUsage rejects a non-function with a TypeError', async (t) => {
  const app = await buildApp({})
  t.after(() => app.close())
  for (const bad of [undefined, null, 'fn', 42, {}]) {
    assert.throws(() => app.usage.onUsage(bad as unknown as () => void), TypeError)
  }
})

test('options are validated: every problem is listed, webhook requires spoolDir', async () => {
  const cases: [unknown, RegExp][] = [
    [{ webhook: { url: 'http://127.0.0.1:1/x' } }, /\/spoolDir: is required when webhook is set/],
    [{ webhook: { url: 'not a url' }, spoolDir: '/tmp/x' }, /\/webhook\/url/],
    [{ webhook: { url: 'ftp://host/x' }, spoolDir: '/tmp/x' }, /\/webhook\/url: must be an http or https URL/],
    // A directory that cannot be made (here under a file; in a container, a root-owned path): named, no stack.
    [{ webhook: { url: 'http://127.0.0.1:1/x' }, spoolDir: `${import.meta.filename}/spool` }, /\/spoolDir: cannot be used: ENOTDIR/],
    [{ batch: { maxRecords: 0 }, spool: { fsync: 'sometimes' }, extra: true }, /\/extra: unknown key/],
    [{ batch: { maxRecords: 0 }, spool: { fsync: 'sometimes' }, extra: true }, /\/batch\/maxRecords: must be >= 1/],
    [{ batch: { maxRecords: 0 }, spool: { fsync: 'sometimes' }, extra: true }, /\/spool\/fsync/],
    // backoffDelay would cap every wait at maxMs.
    [
      { webhook: { url: 'http://127.0.0.1:1/x' }, spoolDir: '/tmp/x', retry: { baseMs: 1000, maxMs: 10 } },
      /\/retry\/maxMs: must be >= retry\.baseMs/,
    ],
    // The default segment (4 MiB) is not below this spool (space is freed a whole segment at a time): named, with its value.
    [
      { webhook: { url: 'http://127.0.0.1:1/x' }, spoolDir: '/tmp/x', spool: { maxBytes: 4096 } },
      /\/spool\/segmentBytes: is 4194304, must be at most half of spool\.maxBytes \(4096\)/,
    ],
  ]
  for (const [options, message] of cases) {
    const app = Fastify()
    await assert.rejects(
      async () => {
        await app.register(usage, options as UsageOptionsInput)
        await app.ready()
      },
      (err: unknown) => err instanceof ConfigError && message.test(err.message),
    )
    await app.close()
  }
})

test('throwing and slow listeners affect neither the other listeners, nor the spool, nor the request', async (t) => {
  const receiver = await startReceiver()
  const app = Fastify({ logger: false })
  await app.register(usage, { webhook: { url: receiver.url }, spoolDir: spoolDir(), batch: { maxRecords: 1, maxWaitMs: 0 } })
  let slowStarted = 0
  app.usage.onUsage(() => {
    throw new Error('listener bug')
  })
  app.usage.onUsage(async () => {
    slowStarted++
    await new Promise((resolve) => setTimeout(resolve, 5_000).unref())
  })
  app.usage.onUsage(async () => {
    throw new Error('async listener bug')
  })
  const seen: string[] = []
  app.usage.onUsage((record) => {
    seen.push(record.id)
  })
  app.get('/chat', async (request) => {
    request.llm.model = 'qwen-7b'
    app.llm.emitUsage(usageRecord({ requestId: request.id }), request)
    return { ok: true }
  })
  t.after(async () => {
    await app.close()
    await receiver.close()
  })
  const started = performance.now()
  for (let i = 0; i < 3; i++) {
    const res = await app.inject('/chat')
    assert.equal(res.statusCode, 200)
    assert.deepEqual(res.json(), { ok: true })
  }
  assert.ok(performance.now() - started < 4_000, 'requests do not wait for the slow listener')
  assert.equal(seen.length, 3)
  assert.equal(slowStarted, 3)
  await waitFor(() => receiver.ids.size === 3)
  assert.deepEqual([...receiver.ids], seen)
})

test("spool full with 'stop-spooling': new records are not spooled, listeners still get them, one loud log", async (t) => {
  const port = await closedPort()
  const dir = spoolDir()
  const sample = usageRecord()
  const logs = captureLogs()
  const app = await buildApp(
    {
      webhook: { url: `http://127.0.0.1:${port}/usage` },
      spoolDir: dir,
      retry: { baseMs: 60_000, maxMs: 60_000 },
      shutdownFlushMs: 0,
      spool: { maxBytes: lineBytes(sample) * 3 + 10, segmentBytes: lineBytes(sample), whenFull: 'stop-spooling' },
    },
    logs,
  )
  t.after(() => app.close())
  const full: SpoolFullEvent[] = []
  app.usage.events.on('spool-full', (e) => full.push(e))
  const seen: string[] = []
  app.usage.onUsage((r) => {
    seen.push(r.id)
  })
  for (let i = 0; i < 10; i++) emit(app, usageRecord({ requestId: sample.requestId }))
  assert.equal(app.usage.stats().queueDepth, 10, 'emitted records count as queued at once')
  await endOfTurn()
  const stats = app.usage.stats()
  assert.equal(seen.length, 10, 'in-process listeners get every record')
  assert.equal(stats.queueDepth, 3)
  assert.equal(stats.notSpooled, 7)
  assert.equal(stats.dropped, 0)
  assert.ok(stats.spoolBytes <= lineBytes(sample) * 3 + 10)
  assert.deepEqual(
    full,
    Array.from({ length: 7 }, () => ({ policy: 'stop-spooling' })),
  )
  const loud = logs.lines.filter((l) => l.level === 50 && l.msg.startsWith('USAGE SPOOL FULL'))
  assert.equal(loud.length, 1, 'rate-limited to one error log per 10 s')
  assert.equal(loud[0]?.policy, 'stop-spooling')
  // The line counts the record it refuses.
  assert.equal(loud[0]?.notSpooled, 1)
})

test('a spool whose one segment is delivered takes the next record, though that record alone would not fit beside it', async (t) => {
  // A record over half the spool is written to a segment of its own (the one being written), and delivery frees
  // closed segments only: the next such record was refused for good, the webhook up and nothing left to deliver.
  const big = usageRecord({ requestId: 'r'.repeat(400) })
  const line = lineBytes(big)
  let delivered = 0
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (chunk) => {
      body += chunk
    })
    req.on('end', () => {
      delivered += (JSON.parse(body) as { records: unknown[] }).records.length
      res.writeHead(200).end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => server.close())
  const app = await buildApp({
    webhook: { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/usage` },
    spoolDir: spoolDir(),
    shutdownFlushMs: 0,
    spool: { maxBytes: line + 10, segmentBytes: Math.floor((line + 10) / 2), whenFull: 'stop-spooling' },
  })
  t.after(() => app.close())
  for (let i = 0; i < 5; i++) {
    emit(app, usageRecord({ requestId: big.requestId }))
    await endOfTurn()
    await waitFor(() => delivered === i + 1, 5_000, `record ${i + 1} delivered`)
  }
  assert.equal(app.usage.stats().notSpooled, 0)
})

/**
 * Date.now and performance.now held still for the test, moved by `step`: a wall clock NTP steps back while the
 * monotonic clock goes on.
 */
function steppedClocks(t: TestContext): { step(wallMs: number, monotonicMs: number): void } {
  let wall = Date.now()
  // A whole number: (m + 10_000) - m is then 10_000 exactly, not an ulp short of it (the 10 s log interval).
  let monotonic = Math.round(performance.now())
  t.mock.method(Date, 'now', () => wall)
  t.mock.method(performance, 'now', () => monotonic)
  return {
    step(wallMs, monotonicMs) {
      wall += wallMs
      monotonic += monotonicMs
    },
  }
}

const HOUR_MS = 3_600_000

test('a wall clock stepped back an hour does not silence the spool-full error log: the next comes 10 s later all the same', async (t) => {
  const sample = usageRecord()
  const logs = captureLogs()
  const app = await buildApp(
    {
      webhook: { url: `http://127.0.0.1:${await closedPort()}/usage` },
      spoolDir: spoolDir(),
      retry: { baseMs: 60_000, maxMs: 60_000 },
      shutdownFlushMs: 0,
      spool: { maxBytes: lineBytes(sample) + 10, segmentBytes: Math.floor((lineBytes(sample) + 10) / 2), whenFull: 'stop-spooling' },
    },
    logs,
  )
  t.after(() => app.close())
  const clocks = steppedClocks(t)
  const loud = () => logs.lines.filter((l) => l.level === 50 && l.msg.startsWith('USAGE SPOOL FULL')).length
  for (let i = 0; i < 3; i++) emit(app, usageRecord({ requestId: sample.requestId }))
  await endOfTurn()
  assert.equal(loud(), 1)
  clocks.step(-HOUR_MS, 10_000)
  emit(app, usageRecord({ requestId: sample.requestId }))
  await endOfTurn()
  assert.equal(app.usage.stats().notSpooled, 3)
  assert.equal(loud(), 2)
})

test('a wall clock stepped back an hour does not silence the append-failed error log: the next comes 10 s later all the same', async (t) => {
  const dir = spoolDir()
  const logs = captureLogs()
  const app = await buildApp({ webhook: { url: `http://127.0.0.1:${await closedPort()}/usage` }, spoolDir: dir, shutdownFlushMs: 0 }, logs)
  t.after(() => app.close())
  const clocks = steppedClocks(t)
  const failed = () => logs.lines.filter((l) => l.msg === 'usage spool: append failed; records not spooled').length
  // No directory for the first segment: every append fails.
  rmSync(dir, { recursive: true, force: true })
  emit(app, usageRecord())
  await endOfTurn()
  assert.equal(failed(), 1)
  clocks.step(-HOUR_MS, 10_000)
  emit(app, usageRecord())
  await endOfTurn()
  assert.equal(app.usage.stats().notSpooled, 2)
  assert.equal(failed(), 2)
})

test('a segment that cannot be opened (directory gone, no file descriptor left): records not spooled, counted, no crash', async (t) => {
  const receiver = await startReceiver()
  const dir = spoolDir()
  const logs = captureLogs()
  const app = await buildApp({ webhook: { url: receiver.url }, spoolDir: dir, batch: { maxRecords: 1, maxWaitMs: 0 } }, logs)
  t.after(async () => {
    await app.close()
    await receiver.close()
  })
  // Before any record: the first one opens the first segment (the gateway crashed here, in a setImmediate).
  rmSync(dir, { recursive: true, force: true })
  const lost = usageRecord()
  emit(app, lost)
  await endOfTurn()
  assert.equal(app.usage.stats().notSpooled, 1)
  assert.ok(logs.lines.some((l) => l.msg === 'usage spool: append failed; records not spooled' && l.records === 1))
  // Once the directory is back, the next record is spooled and delivered.
  mkdirSync(dir)
  const kept = usageRecord()
  emit(app, kept)
  await waitFor(() => receiver.ids.size === 1)
  assert.deepEqual([...receiver.ids], [kept.id])
  assert.equal(app.usage.stats().notSpooled, 1)
})

test('a full disk: failed appends keep the active segment (no empty segment per turn), log once, count exactly; spooling resumes once space is freed', async (t) => {
  // A real ENOSPC, partial writes included: the spool on a 64 KiB tmpfs (needs root to mount).
  const dir = spoolDir()
  if (process.getuid?.() !== 0 || spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]).status !== 0) {
    t.skip('mounting a tmpfs needs root on Linux')
    return
  }
  const receiver = await startReceiver()
  receiver.respond = () => 503
  const logs = captureLogs()
  const app = await buildApp(
    { webhook: { url: receiver.url }, spoolDir: dir, batch: { maxRecords: 1000, maxWaitMs: 10 }, retry: { baseMs: 10, maxMs: 50 } },
    logs,
  )
  t.after(async () => {
    await app.close()
    await receiver.close()
    spawnSync('umount', [dir])
  })
  const emitted: UsageRecord[] = []
  const emitTurn = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      const record = usageRecord()
      emitted.push(record)
      emit(app, record)
    }
    await endOfTurn()
  }
  // A few records in the segment's first page, then the rest of the filesystem filled up.
  await emitTurn(3)
  const filler = openSync(join(dir, 'filler'), 'w')
  try {
    for (;;) writeSync(filler, Buffer.alloc(4096))
  } catch (err) {
    assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC')
  } finally {
    closeSync(filler)
  }
  // Each turn's write fills what is left of the page (partly writing a line, which is cut off), then fails.
  for (let turn = 0; turn < 30; turn++) await emitTurn(20)
  const stats = app.usage.stats()
  assert.ok(stats.notSpooled > 500, `records refused on the full disk (${stats.notSpooled})`)
  assert.equal(stats.queueDepth + stats.notSpooled, emitted.length)
  assert.deepEqual(segmentFiles(dir), ['0000000000000001.jsonl'])
  assert.equal(logs.lines.filter((l) => l.msg === 'usage spool: append failed; records not spooled').length, 1)

  rmSync(join(dir, 'filler'))
  await emitTurn(5)
  assert.equal(app.usage.stats().notSpooled, stats.notSpooled, 'spooled again once there is room')
  receiver.respond = () => 200
  await app.usage.flush()
  // The segment holds exactly the spooled records, whole lines only; they are what the receiver got, in order.
  const onDisk = readFileSync(join(dir, '0000000000000001.jsonl'), 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => (JSON.parse(line) as UsageRecord).id)
  assert.deepEqual([...receiver.ids], onDisk)
  assert.equal(onDisk.length + stats.notSpooled, emitted.length)
  assert.deepEqual(
    onDisk.slice(-5),
    emitted.slice(-5).map((r) => r.id),
  )
})

test("spool full with 'drop-oldest': the oldest segments go, the newest records are delivered", async (t) => {
  const port = await closedPort()
  const dir = spoolDir()
  const sample = usageRecord()
  const line = lineBytes(sample)
  const app = await buildApp({
    webhook: { url: `http://127.0.0.1:${port}/usage` },
    spoolDir: dir,
    batch: { maxRecords: 100, maxWaitMs: 10 },
    retry: { baseMs: 20, maxMs: 100 },
    spool: { maxBytes: line * 6, segmentBytes: line * 2, whenFull: 'drop-oldest' },
  })
  const full: SpoolFullEvent[] = []
  app.usage.events.on('spool-full', (e) => full.push(e))
  let receiver: Awaited<ReturnType<typeof startReceiver>> | null = null
  t.after(async () => {
    await app.close()
    await receiver?.close()
  })
  const records = Array.from({ length: 20 }, () => usageRecord({ requestId: sample.requestId }))
  for (const r of records) emit(app, r)
  await endOfTurn()
  const stats = app.usage.stats()
  assert.ok(full.length > 0 && full.every((e) => e.policy === 'drop-oldest'))
  assert.equal(stats.notSpooled, 0)
  assert.ok(stats.dropped > 0)
  assert.equal(stats.queueDepth + stats.dropped, 20)
  assert.ok(stats.spoolBytes <= line * 6)
  // The dropped segments are deleted on the thread pool, shortly after.
  await waitFor(() => segmentFiles(dir).length <= 3)

  // The receiver comes back on the same port: what is left is the newest records, in order.
  receiver = await startReceiver(port)
  const up = receiver
  await waitFor(() => app.usage.stats().queueDepth === 0, 15_000, 'the rest to be delivered')
  const expected = records.slice(20 - stats.queueDepth).map((r) => r.id)
  assert.deepEqual([...up.ids], expected)
  assert.equal(app.usage.stats().delivered, expected.length)
})

test("'drop-oldest' while a batch waits to be sent again: its dropped records are not delivered too", async (t) => {
  const port = await closedPort()
  const sample = usageRecord()
  const line = lineBytes(sample)
  const app = await buildApp({
    webhook: { url: `http://127.0.0.1:${port}/usage` },
    spoolDir: spoolDir(),
    batch: { maxRecords: 100, maxWaitMs: 10 },
    retry: { baseMs: 200, maxMs: 200 },
    spool: { maxBytes: line * 6, segmentBytes: line * 2, whenFull: 'drop-oldest' },
  })
  let receiver: Awaited<ReturnType<typeof startReceiver>> | null = null
  t.after(async () => {
    await app.close()
    await receiver?.close()
  })
  const records = Array.from({ length: 20 }, () => usageRecord({ requestId: sample.requestId }))
  // The first two are read as a batch, whose delivery fails: the loop holds it to send again.
  emit(app, records[0] as UsageRecord)
  emit(app, records[1] as UsageRecord)
  await waitFor(() => app.usage.stats().deliveryFailures > 0, 5000, 'a failed delivery')
  // Then the spool fills: the held batch's segment is dropped (one record per turn, segments rotate).
  for (const r of records.slice(2)) {
    emit(app, r)
    await endOfTurn()
  }
  receiver = await startReceiver(port)
  const up = receiver
  await waitFor(() => app.usage.stats().queueDepth === 0, 15_000, 'the rest to be delivered')
  const stats = app.usage.stats()
  assert.ok(stats.dropped > 0)
  // Every record is either dropped or delivered, none both.
  assert.equal(stats.dropped + up.ids.size, 20)
  assert.equal(stats.delivered, up.ids.size)
  assert.ok(!up.ids.has(records[0]?.id as string), 'a dropped record was delivered')
})

test("'drop-oldest' while a batch is on its way: its records count dropped, not delivered too", async (t) => {
  // A receiver that holds its first request until the test lets it answer.
  let release: () => void = () => undefined
  const held = new Promise<void>((resolve) => (release = resolve))
  let requests = 0
  const server = createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      requests++
      const answer = () => res.writeHead(200).end()
      if (requests === 1) void held.then(answer)
      else answer()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const sample = usageRecord()
  const line = lineBytes(sample)
  const app = await buildApp({
    webhook: { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/usage` },
    spoolDir: spoolDir(),
    batch: { maxRecords: 100, maxWaitMs: 10 },
    spool: { maxBytes: line * 6, segmentBytes: line * 2, whenFull: 'drop-oldest' },
  })
  t.after(async () => {
    release()
    await app.close()
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })
  const records = Array.from({ length: 20 }, () => usageRecord({ requestId: sample.requestId }))
  emit(app, records[0] as UsageRecord)
  emit(app, records[1] as UsageRecord)
  await waitFor(() => requests === 1, 5000, 'the first batch on its way')
  // The spool fills while it is: its segment is dropped.
  for (const r of records.slice(2)) {
    emit(app, r)
    await endOfTurn()
  }
  assert.ok(app.usage.stats().dropped > 0)
  release()
  await waitFor(() => app.usage.stats().queueDepth === 0, 15_000, 'the rest to be delivered')
  const stats = app.usage.stats()
  assert.equal(stats.delivered + stats.dropped, 20, `delivered ${stats.delivered}, dropped ${stats.dropped}`)
})

test('stats() reports spooled, delivered and failed counts as they change', async (t) => {
  const receiver = await startReceiver()
  receiver.respond = () => 500
  const dir = spoolDir()
  const app = await buildApp({
    webhook: { url: receiver.url },
    spoolDir: dir,
    batch: { maxRecords: 4, maxWaitMs: 10 },
    retry: { baseMs: 20, maxMs: 20 },
  })
  t.after(async () => {
    await app.close()
    await receiver.close()
  })
  const records = Array.from({ length: 4 }, () => usageRecord())
  for (const r of records) emit(app, r)
  const bytes = records.reduce((n, r) => n + lineBytes(r), 0)
  assert.equal(app.usage.stats().queueDepth, 4)
  await endOfTurn()
  assert.equal(app.usage.stats().queueDepth, 4)
  assert.equal(app.usage.stats().spoolBytes, bytes)
  await waitFor(() => app.usage.stats().deliveryFailures >= 2)
  let stats = app.usage.stats()
  assert.equal(stats.lastError, 'webhook answered 500')
  assert.equal(stats.lastDeliveryAt, null)
  assert.equal(stats.delivered, 0)
  receiver.respond = () => 200
  await app.usage.flush()
  stats = app.usage.stats()
  assert.equal(stats.queueDepth, 0)
  assert.equal(stats.delivered, 4)
  assert.equal(stats.lastError, null)
  assert.ok(stats.lastDeliveryAt !== null)
})
