// Usage metering and webhook delivery through the real gateway: every routed request yields exactly one
// record with the right token counts, and every record reaches a signature-checking receiver — through
// a receiver outage, and through a `kill -9` of the gateway process with a restart on the same spool.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, type TestContext, test } from 'node:test'
import type { UsageRecord } from '@llmproxy/core'
import { type MockUpstream, promptTokensFor, startMockUpstream } from '@llmproxy/mock-upstream'
import { buildGateway, parseConfig } from '@llmproxy/server'
import type { FastifyInstance } from 'fastify'
import { type GatewayChild, spawnGateway } from './gateway-process.js'
import { pollUntil, sleep } from './http-helpers.js'
import { type ClientResult, metricValue, request, requestAndAbort, runPool, UsageReceiver } from './usage-helpers.js'

const SECRET = `e2e-usage-${randomBytes(8).toString('hex')}`
/** Unique per run, so request ids never collide with another run's. */
const RUN = randomBytes(4).toString('hex')
const MODEL = 'gpt-test'

const dir = mkdtempSync(join(tmpdir(), 'llmproxy-e2e-usage-'))
let mock: MockUpstream

before(async () => {
  mock = await startMockUpstream({ defaults: { tokens: 5 }, record: false })
})

after(async () => {
  await mock?.close()
  rmSync(dir, { recursive: true, force: true })
})

function gatewayConfig(webhookUrl: string, spoolDir: string, logLevel: 'silent' | 'info'): Record<string, unknown> {
  return {
    server: { host: '127.0.0.1', port: 0, logLevel, shutdownGraceMs: 1000 },
    upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
    models: [{ name: MODEL, upstreams: ['mock'], upstreamModel: 'mock-model' }],
    // An upstream 500 goes back to the client as it is (no retry), and never ejects the only upstream.
    retry: { attempts: 1 },
    healthChecks: { enabled: false },
    passiveHealth: { failuresToEject: 1_000_000 },
    usage: {
      webhook: { url: webhookUrl, secret: SECRET, timeoutMs: 5000 },
      spoolDir,
      batch: { maxRecords: 50, maxWaitMs: 100 },
      retry: { baseMs: 50, maxMs: 500 },
      // Small segments: rotation and reclaiming delivered segments happen during the run.
      spool: { segmentBytes: 64 * 1024 },
      shutdownFlushMs: 2000,
    },
  }
}

interface InProcessGateway {
  app: FastifyInstance
  url: string
  /** Every record the gateway emitted, by id (an onUsage listener next to the webhook sink). */
  emitted: Map<string, UsageRecord>
}

async function startInProcess(t: TestContext, config: Record<string, unknown>): Promise<InProcessGateway> {
  const app = await buildGateway(parseConfig(JSON.stringify(config), 'usage-e2e'))
  t.after(() => app.close())
  const emitted = new Map<string, UsageRecord>()
  app.llm.addHook('onUsage', (record) => {
    emitted.set(record.id, record)
  })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, url, emitted }
}

// ---------------------------------------------------------------------------------------------------------------
// The traffic

type Kind =
  | 'chat'
  | 'chat-stream-usage'
  | 'chat-stream'
  | 'completion'
  | 'completion-stream'
  | 'embedding'
  | 'aborted'
  | 'upstream-500'
  | 'unknown-model'

interface Planned {
  kind: Kind
  requestId: string
  path: string
  body: Record<string, unknown>
  behavior: Record<string, unknown>
  stream: boolean
  /** What the mock reports (for the kinds that succeed). */
  promptTokens: number
  completionTokens: number
}

/** Routed kinds, in the proportions of the mix (20 slots). */
const MIX: readonly Kind[] = [
  'chat',
  'chat',
  'chat',
  'chat',
  'chat',
  'chat-stream-usage',
  'chat-stream-usage',
  'chat-stream-usage',
  'chat-stream',
  'chat-stream',
  'completion',
  'completion',
  'completion-stream',
  'embedding',
  'embedding',
  'embedding',
  'aborted',
  'aborted',
  'upstream-500',
  'upstream-500',
]

function plan(kind: Kind, i: number, prefix: string): Planned {
  const tokens = 1 + (i % 13)
  const text = `Request ${i}: ${'lorem '.repeat(i % 29)}`.trim()
  const messages = [{ role: 'user', content: text }]
  const base = { kind, requestId: `${prefix}-${RUN}-${i}`, stream: false, completionTokens: tokens }
  let path = '/v1/chat/completions'
  let body: Record<string, unknown>
  let behavior: Record<string, unknown> = { tokens }
  let stream = false
  switch (kind) {
    case 'chat':
      body = { model: MODEL, messages }
      break
    case 'chat-stream-usage':
      stream = true
      body = { model: MODEL, messages, stream, stream_options: { include_usage: true } }
      break
    case 'chat-stream':
      stream = true
      body = { model: MODEL, messages, stream }
      break
    case 'completion':
      path = '/v1/completions'
      body = { model: MODEL, prompt: text }
      break
    case 'completion-stream':
      path = '/v1/completions'
      stream = true
      body = { model: MODEL, prompt: text, stream }
      break
    case 'embedding':
      path = '/v1/embeddings'
      body = { model: MODEL, input: text }
      return { ...base, path, body, behavior, promptTokens: promptTokensFor(body), completionTokens: 0 }
    case 'aborted':
      // Long enough that the client always leaves before the end (~10 s if it did not).
      stream = true
      behavior = { tokens: 1000, gapMs: 10 }
      body = { model: MODEL, messages, stream }
      break
    case 'upstream-500':
      behavior = { status: 500 }
      body = { model: MODEL, messages }
      break
    case 'unknown-model':
      body = { model: `no-such-model-${RUN}`, messages }
      break
  }
  return { ...base, path, body, behavior, stream, promptTokens: promptTokensFor(body) }
}

/** Sends one planned request; returns a problem description, or null when the client saw what it should. */
async function send(gatewayUrl: string, p: Planned): Promise<string | null> {
  const headers = { 'x-request-id': p.requestId, 'x-mock-behavior': JSON.stringify(p.behavior) }
  const url = `${gatewayUrl}${p.path}`
  let result: ClientResult
  try {
    result = p.kind === 'aborted' ? await requestAndAbort(url, p.body, headers) : await request(url, p.body, headers)
  } catch (err) {
    return `${p.requestId} (${p.kind}): ${String(err)}`
  }
  const expected = p.kind === 'upstream-500' ? 500 : p.kind === 'unknown-model' ? 404 : 200
  if (result.status !== expected) return `${p.requestId} (${p.kind}): status ${result.status}, expected ${expected}: ${result.text}`
  if (result.requestId !== p.requestId) return `${p.requestId} (${p.kind}): x-request-id ${result.requestId}`
  if (p.stream && p.kind !== 'aborted' && !result.text.trimEnd().endsWith('data: [DONE]')) {
    return `${p.requestId} (${p.kind}): the stream did not end with [DONE]: ${result.text.slice(-200)}`
  }
  return null
}

/** Checks one delivered record against the request it came from; returns the problems. */
function checkRecord(record: UsageRecord, p: Planned): string[] {
  const problems: string[] = []
  const expect = (what: string, actual: unknown, wanted: unknown): void => {
    if (actual !== wanted)
      problems.push(`${p.requestId} (${p.kind}): ${what} ${JSON.stringify(actual)}, expected ${JSON.stringify(wanted)}`)
  }
  expect('model', record.model, MODEL)
  expect('stream', record.stream, p.stream)
  expect('clientAborted', record.clientAborted, p.kind === 'aborted')
  switch (p.kind) {
    case 'aborted':
      expect('status', record.status, 200)
      if (record.completionTokens > 1000) problems.push(`${p.requestId}: ${record.completionTokens} completion tokens of 1000`)
      break
    case 'upstream-500':
      if (record.status !== 500 && record.status !== 502) expect('status', record.status, '500 or 502')
      expect('completionTokens', record.completionTokens, 0)
      break
    default:
      expect('status', record.status, 200)
      expect('upstream', record.upstream, 'mock')
      expect('estimated', record.estimated, false)
      expect('promptTokens', record.promptTokens, p.promptTokens)
      expect('completionTokens', record.completionTokens, p.completionTokens)
      expect('totalTokens', record.totalTokens, p.promptTokens + p.completionTokens)
  }
  return problems
}

/** Checks the records of `planned` (one distinct record per request id) and returns the problems. */
function checkAll(records: Iterable<UsageRecord>, planned: readonly Planned[]): string[] {
  const byRequestId = new Map(planned.map((p) => [p.requestId, p]))
  const seen = new Set<string>()
  const problems: string[] = []
  for (const record of records) {
    const p = byRequestId.get(record.requestId)
    if (p === undefined) {
      problems.push(`record ${record.id} for an unknown request ${record.requestId}`)
      continue
    }
    if (seen.has(record.requestId)) problems.push(`two distinct records for request ${record.requestId}`)
    seen.add(record.requestId)
    problems.push(...checkRecord(record, p))
  }
  for (const p of planned) if (!seen.has(p.requestId)) problems.push(`no record for ${p.requestId} (${p.kind})`)
  return problems
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

function sorted(values: Iterable<string>): string[] {
  return [...values].sort()
}

// ---------------------------------------------------------------------------------------------------------------

test('a client holds a complete answer only once its usage record is in the spool (a crash cannot lose it)', async (t) => {
  // What a SIGKILL can lose is what was not written yet: an answer whose last bytes left the process before its
  // record reached the spool. At each write to a client's socket, this reads the spool: the writes that complete the
  // answer (a JSON body's last bytes, a stream's terminator and end, an error answer) must come after the record.
  const receiver = new UsageReceiver(SECRET)
  await receiver.listen()
  await receiver.close() // down: the records stay in the spool
  const spoolDir = join(dir, 'spool-write-ahead')
  const gw = await startInProcess(t, { ...gatewayConfig(receiver.url, spoolDir, 'silent'), retry: { attempts: 1 } })
  const spooled = (requestId: string): boolean =>
    readdirSync(spoolDir)
      .filter((name) => name.endsWith('.jsonl'))
      .some((name) => readFileSync(join(spoolDir, name), 'utf8').includes(`"requestId":"${requestId}"`))
  /** For each request id, each write to its client's socket: its bytes, and whether the record was in the spool. */
  const writes = new Map<string, { text: string; spooled: boolean }[]>()
  /** The request each client connection is answering. */
  const answering = new WeakMap<Socket, string>()
  gw.app.server.on('connection', (socket: Socket & { _write: Socket['_write']; _writev: NonNullable<Socket['_writev']> }) => {
    const note = (chunks: { chunk: Buffer | string }[]): void => {
      const requestId = answering.get(socket)
      if (requestId === undefined) return
      const text = chunks.map(({ chunk }) => String(chunk)).join('')
      writes.get(requestId)?.push({ text, spooled: spooled(requestId) })
    }
    const write = socket._write
    const writev = socket._writev
    socket._write = function (chunk, ...rest) {
      note([{ chunk }])
      return write.call(this, chunk, ...rest)
    }
    socket._writev = function (chunks, callback) {
      note(chunks)
      return writev.call(this, chunks, callback)
    }
  })
  gw.app.server.on('request', (req: IncomingMessage) => {
    const requestId = req.headers['x-request-id'] as string
    writes.set(requestId, [])
    answering.set(req.socket, requestId)
  })
  const chat = { model: MODEL, messages: [{ role: 'user', content: 'Count to three.' }] }
  const claude = { model: MODEL, max_tokens: 64, messages: [{ role: 'user', content: 'Count to three.' }] }
  /**
   * `final`: in the client's answer, what shows it whole; on the socket, the bytes that make it complete to a client
   * (its last bytes, or what a client may stop reading at), unless `completes` names them (a chunked body's end).
   */
  const cases: {
    name: string
    path: string
    body: unknown
    behavior: Record<string, unknown>
    status: number
    final: string
    completes?: string
  }[] = [
    {
      name: 'a JSON answer (content-length)',
      path: '/v1/chat/completions',
      body: chat,
      behavior: {},
      status: 200,
      final: '"finish_reason"',
    },
    {
      name: 'a gzipped JSON answer, decoded (chunked)',
      path: '/v1/chat/completions',
      body: chat,
      behavior: { contentEncoding: 'gzip' },
      status: 200,
      final: '"finish_reason"',
      completes: '0\r\n\r\n',
    },
    {
      name: 'a stream',
      path: '/v1/chat/completions',
      body: { ...chat, stream: true },
      behavior: { gapMs: 5 },
      status: 200,
      final: 'data: [DONE]',
    },
    {
      name: 'an Anthropic stream converted from the OpenAI upstream',
      path: '/v1/messages',
      body: { ...claude, stream: true },
      behavior: { gapMs: 5 },
      status: 200,
      final: 'event: message_stop',
    },
    {
      name: 'an Anthropic answer converted whole',
      path: '/v1/messages',
      body: claude,
      behavior: {},
      status: 200,
      final: '"stop_reason":"end_turn"',
    },
    {
      name: 'a stream ended by an in-band error',
      path: '/v1/chat/completions',
      body: { ...chat, stream: true },
      behavior: { gapMs: 5, fault: 'error-event', faultAfter: 2 },
      status: 200,
      final: '"error"',
    },
    {
      name: "the gateway's own error answer (the upstream reset the connection)",
      path: '/v1/chat/completions',
      body: chat,
      behavior: { fault: 'reset-before-headers' },
      status: 502,
      final: '"error"',
    },
  ]
  for (const [i, c] of cases.entries()) {
    const requestId = `write-ahead-${RUN}-${i}`
    const headers = { 'x-request-id': requestId, 'x-mock-behavior': JSON.stringify(c.behavior) }
    const result = await request(`${gw.url}${c.path}`, c.body, headers)
    assert.equal(result.status, c.status, `${c.name}: ${result.text}`)
    assert.ok(result.text.includes(c.final), `${c.name}: the client got the whole answer: ${result.text.slice(-300)}`)
    const seen = writes.get(requestId) ?? []
    const completes = c.completes ?? c.final
    const completing = seen.findIndex((w) => w.text.includes(completes))
    assert.ok(completing !== -1, `${c.name}: ${JSON.stringify(completes)} written to the client's socket`)
    const early = seen.slice(completing).filter((w) => !w.spooled)
    assert.deepEqual(
      early.map((w) => w.text),
      [],
      `${c.name}: the answer was completed before its record was in the spool`,
    )
  }
})

test('1,000 mixed routed requests through the gateway → exactly 1,000 records at the receiver, with the right tokens', async (t) => {
  const receiver = new UsageReceiver(SECRET)
  await receiver.listen()
  t.after(() => receiver.close())
  const gw = await startInProcess(t, gatewayConfig(receiver.url, join(dir, 'spool-mixed'), 'silent'))

  const routed: Planned[] = []
  const traffic: Planned[] = []
  for (let i = 0; i < 1000; i++) {
    const p = plan(MIX[i % MIX.length] as Kind, i, 'mixed')
    routed.push(p)
    traffic.push(p)
    if (i % 20 === 19) traffic.push(plan('unknown-model', i, 'unknown'))
  }
  const clientProblems: string[] = []
  await runPool(traffic.length, 32, async (i) => {
    const problem = await send(gw.url, traffic[i] as Planned)
    if (problem !== null) clientProblems.push(problem)
  })
  assert.deepEqual(clientProblems, [])

  // Records are emitted when each response closes: all of them, and only for routed requests.
  await pollUntil(
    async () => gw.emitted.size,
    (n) => n >= routed.length,
    `${routed.length} emitted records`,
  )
  await sleep(200) // nothing more may come: one record per routed request, none for the 404s
  assert.equal(gw.emitted.size, routed.length)
  assert.deepEqual(sorted([...gw.emitted.values()].map((r) => r.requestId)), sorted(routed.map((p) => p.requestId)))

  await withTimeout(gw.app.usage.flush(), 30_000, 'usage.flush()')
  assert.deepEqual(receiver.problems, [])
  assert.equal(receiver.badSignatures, 0)
  assert.equal(receiver.records.size, 1000)
  assert.deepEqual(sorted(receiver.records.keys()), sorted(gw.emitted.keys()), 'the ids received are the ids emitted')
  // Duplicates only from a redelivery of the same batch (the receiver never failed, so none expected).
  for (const id of receiver.duplicateIds()) {
    const deliveries = new Set(receiver.batches.filter((b) => b.ids.includes(id)).map((b) => b.deliveryId))
    assert.equal(deliveries.size, 1, `record ${id} arrived in different batches: ${[...deliveries].join(', ')}`)
  }
  // What arrives is what was emitted, field for field.
  for (const [id, record] of gw.emitted) assert.deepEqual(receiver.records.get(id), JSON.parse(JSON.stringify(record)))
  assert.deepEqual(checkAll(receiver.records.values(), routed), [])
  const aborted = [...receiver.records.values()].filter((r) => r.clientAborted)
  assert.equal(aborted.length, routed.filter((p) => p.kind === 'aborted').length)

  t.diagnostic(`${receiver.batches.length} batches, ${receiver.duplicateIds().length} records received twice`)
  const stats = gw.app.usage.stats()
  assert.equal(stats.queueDepth, 0)
  assert.equal(stats.dropped, 0)
  assert.equal(stats.notSpooled, 0)
  assert.ok(stats.delivered >= 1000, `delivered ${stats.delivered}`)
  assert.ok(receiver.batches.length >= 20, `batches of at most 50 records: ${receiver.batches.length} batches`)
  assert.ok(
    receiver.batches.every((b) => b.ids.length <= 50),
    'no batch above batch.maxRecords',
  )
})

test('receiver down until the backoff is at its cap, then back on the same port → every record delivered', async (t) => {
  const receiver = new UsageReceiver(SECRET)
  const port = await receiver.listen()
  t.after(() => receiver.close())
  await receiver.close()
  const gw = await startInProcess(t, gatewayConfig(receiver.url, join(dir, 'spool-outage'), 'silent'))

  const kinds: Kind[] = ['chat', 'chat-stream', 'chat-stream-usage', 'completion', 'embedding']
  const planned = Array.from({ length: 100 }, (_, i) => plan(kinds[i % kinds.length] as Kind, i, 'outage'))
  const clientProblems: string[] = []
  await runPool(planned.length, 16, async (i) => {
    const problem = await send(gw.url, planned[i] as Planned)
    if (problem !== null) clientProblems.push(problem)
  })
  assert.deepEqual(clientProblems, [])

  // All spooled, and the sink is failing against the closed port (requests were served regardless).
  await pollUntil(
    async () => gw.app.usage.stats(),
    (s) => s.queueDepth === 100 && s.deliveryFailures >= 1,
    '100 spooled records and failed delivery attempts',
  )
  assert.equal(gw.emitted.size, 100)
  assert.equal(receiver.records.size, 0)
  assert.equal(gw.app.usage.stats().delivered, 0)

  // The outage lasts until the retries wait their longest: backoff ceilings 50, 100, 200, 400, then retry.maxMs,
  // so the 6th failure comes after a wait at the cap. Then the receiver is back where it was.
  await pollUntil(
    async () => gw.app.usage.stats().deliveryFailures,
    (n) => n >= 6,
    'six failed delivery attempts',
    30_000,
  )
  assert.equal(gw.app.usage.stats().delivered, 0)
  await receiver.listen(port)
  // The delivery loop's own retry must find it (no flush() here: that would retry at once).
  await pollUntil(
    async () => receiver.records.size,
    (n) => n >= 100,
    'all 100 records at the receiver',
    30_000,
  )
  await pollUntil(
    async () => gw.app.usage.stats().queueDepth,
    (n) => n === 0,
    'an empty queue',
  )
  assert.deepEqual(receiver.problems, [])
  assert.equal(receiver.badSignatures, 0)
  assert.deepEqual(sorted(receiver.records.keys()), sorted(gw.emitted.keys()))
  assert.deepEqual(checkAll(receiver.records.values(), planned), [])
  const stats = gw.app.usage.stats()
  assert.ok(stats.deliveryFailures >= 1, `deliveryFailures ${stats.deliveryFailures}`)
  assert.equal(stats.delivered, 100)
  assert.equal(stats.lastError, null)
})

test('gateway SIGKILLed while the receiver is down, restarted on the same spool → every record delivered once', async (t) => {
  const N = 200
  const receiver = new UsageReceiver(SECRET)
  const port = await receiver.listen()
  t.after(() => receiver.close())
  await receiver.close()

  const spoolDir = join(dir, 'spool-kill9')
  const configFile = join(dir, 'kill9.json')
  writeFileSync(configFile, JSON.stringify(gatewayConfig(receiver.url, spoolDir, 'info'), null, 2))
  const stops: (() => Promise<void>)[] = []
  t.after(() => Promise.allSettled(stops.map((stop) => stop())))

  const first: GatewayChild = await spawnGateway(configFile, (stop) => stops.push(stop))
  const kinds: Kind[] = ['chat', 'chat-stream', 'completion', 'embedding']
  const planned = Array.from({ length: N }, (_, i) => plan(kinds[i % kinds.length] as Kind, i, 'kill9'))
  const clientProblems: string[] = []
  await runPool(planned.length, 16, async (i) => {
    const problem = await send(first.url, planned[i] as Planned)
    if (problem !== null) clientProblems.push(problem)
  })
  assert.deepEqual(clientProblems, [])

  // Every record is spooled (the usage queue depth, from outside) and delivery is failing.
  await pollUntil(
    () => fetch(`${first.url}/metrics`).then((res) => res.text()),
    (text) => metricValue(text, 'llmproxy_usage_queue_depth') === N && metricValue(text, 'llmproxy_usage_delivery_failures_total') >= 1,
    `llmproxy_usage_queue_depth ${N} and failed deliveries`,
  )
  assert.equal(receiver.records.size, 0)

  await first.stop('SIGKILL')
  assert.equal(first.child.signalCode, 'SIGKILL', first.output())

  await receiver.listen(port)
  const second = await spawnGateway(configFile, (stop) => stops.push(stop))
  await pollUntil(
    async () => receiver.records.size,
    (n) => n >= N,
    `${N} records at the receiver after the restart`,
    30_000,
  )
  await pollUntil(
    () => fetch(`${second.url}/metrics`).then((res) => res.text()),
    (text) => metricValue(text, 'llmproxy_usage_queue_depth') === 0,
    'the restarted gateway to have nothing left to deliver',
  )
  assert.deepEqual(receiver.problems, [])
  assert.equal(receiver.badSignatures, 0)
  assert.equal(receiver.records.size, N, 'N distinct record ids')
  // Each request has exactly one record (ids are never re-minted on replay), and nothing else arrived.
  assert.deepEqual(checkAll(receiver.records.values(), planned), [])
  assert.deepEqual(sorted([...receiver.records.values()].map((r) => r.requestId)), sorted(planned.map((p) => p.requestId)))

  t.diagnostic(`${receiver.batches.length} batches after the restart, ${receiver.duplicateIds().length} records received twice`)
  await second.stop('SIGTERM', 15_000)
  assert.equal(second.child.exitCode, 0, second.output())
})
