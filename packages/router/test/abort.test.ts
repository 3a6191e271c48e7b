import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { errors } from '@llmproxy/core'
import type { RecordedRequest } from '@llmproxy/mock-upstream'
import { request } from 'undici'
import { startCluster } from './failover-helpers.js'
import { chat, eventually, type Harness, startHarness } from './helpers.js'

let h: Harness
before(async () => {
  h = await startHarness()
})
after(() => h.close())

/**
 * Released at once, as opposed to when the upstream's answer would have ended (2 s and more below). 100 ms failed
 * once at 120 ms on a loaded 2-core machine: the bound says "not waiting for the answer", not how fast.
 */
const RELEASED_AT_ONCE_MS = 500

/** Aborts the client at `abortAfterMs` and returns how long the upstream took to see it go. */
async function abortAndMeasure(body: string, readFirstChunk: boolean): Promise<{ releaseMs: number; upstream: RecordedRequest }> {
  h.mock.reset()
  h.records.length = 0
  const controller = new AbortController()
  const aborted = new Promise<RecordedRequest>((resolve) => h.mock.once('abort', resolve))
  const pending = request(`${h.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
    signal: controller.signal,
  })
  await h.mock.waitForRequests(1)
  if (readFirstChunk) {
    const res = await pending
    const iterator = res.body[Symbol.asyncIterator]()
    await iterator.next()
  } else {
    pending.catch(() => {})
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const abortedAt = performance.now()
  controller.abort()
  const upstream = await aborted
  return { releaseMs: (upstream.closedAt ?? Number.POSITIVE_INFINITY) - abortedAt, upstream }
}

test('client abort mid-stream releases the upstream at once and is metered', async () => {
  const { releaseMs, upstream } = await abortAndMeasure(chat({ stream: true, mock: { tokens: 100, gapMs: 20 } }), true)
  assert.ok(upstream.aborted)
  assert.ok(releaseMs < RELEASED_AT_ONCE_MS, `upstream released after ${releaseMs} ms`)
  await eventually(() => h.records.length === 1)
  const record = h.records[0]
  assert.ok(record)
  assert.equal(record.clientAborted, true)
  assert.equal(record.estimated, true)
  assert.ok(record.completionTokens >= 1 && record.completionTokens < 100, `estimated ${record.completionTokens}`)
})

test('client abort while a non-streamed answer is generated releases the upstream at once', async () => {
  const { releaseMs, upstream } = await abortAndMeasure(chat({ mock: { ttftMs: 5000 } }), false)
  assert.ok(upstream.aborted)
  assert.ok(releaseMs < RELEASED_AT_ONCE_MS, `upstream released after ${releaseMs} ms`)
  await eventually(() => h.records.length === 1)
  assert.equal(h.records[0]?.clientAborted, true)
  assert.equal(h.records[0]?.status, 0)
})

test('client abort before the first token of a stream releases the upstream at once', async () => {
  const { releaseMs } = await abortAndMeasure(chat({ stream: true, mock: { ttftMs: 5000 } }), false)
  assert.ok(releaseMs < RELEASED_AT_ONCE_MS, `upstream released after ${releaseMs} ms`)
})

test('the gateway keeps serving after aborts', async () => {
  const res = await request(`${h.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: chat(),
  })
  assert.equal(res.statusCode, 200)
  await res.body.json()
})

test('a client gone before routing (while an app hook held its request) takes no upstream, and its record says so', async (t) => {
  const { startMockUpstream } = await import('@llmproxy/mock-upstream')
  const { upstreams } = await import('@llmproxy/upstreams')
  const { router } = await import('../src/index.js')
  const Fastify = (await import('fastify')).default
  const mock = await startMockUpstream({ defaults: { tokens: 3 } })
  const app = Fastify({ logger: false })
  t.after(async () => {
    await app.close()
    await mock.close()
  })
  await app.register(upstreams, { upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }], healthChecks: { enabled: false } })
  // Something slow before the handler: an async limit on Redis, an app's own hook, an event loop held up.
  app.addHook('preHandler', async () => new Promise((resolve) => setTimeout(resolve, 300)))
  await app.register(router, { models: [{ name: 'gpt-test', upstreams: ['mock'], upstreamModel: 'mock-model' }] })
  const records: { clientAborted: boolean }[] = []
  app.llm.addHook('onUsage', (record) => records.push(record))
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  const controller = new AbortController()
  const pending = request(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: chat(),
    signal: controller.signal,
  }).catch(() => null)
  await new Promise((resolve) => setTimeout(resolve, 100))
  controller.abort()
  await pending
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.equal(records[0]?.clientAborted, true)
  // Never asked, and no lease left: least-connections and maxConcurrency would count it for the life of the process.
  assert.equal(mock.requests.length, 0)
  assert.equal(app.upstreams.snapshot()[0]?.inFlight, 0)
})

test('a client cancel or a shutdown before the upstream answered logs no warn; a connection the upstream resets does', async (t) => {
  const c = await startCluster({ mocks: { a: { behavior: { ttftMs: 5000 } } }, models: [{ name: 'm', upstreams: ['a'] }] })
  t.after(() => c.close())
  const send = (signal?: AbortSignal) =>
    request(`${c.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }),
      ...(signal === undefined ? {} : { signal }),
    })
  const aborted = () => new Promise((resolve) => c.mock('a').once('abort', resolve))

  // The client cancels while the upstream generates a non-streamed answer.
  const controller = new AbortController()
  const upstreamLeft = aborted()
  const cancelled = send(controller.signal).catch(() => null)
  await c.mock('a').waitForRequests(1)
  controller.abort()
  await cancelled
  await upstreamLeft
  await eventually(() => c.records.length === 1)

  // A shutdown past its grace ends the request waiting for its upstream.
  const stoppedUpstream = aborted()
  const stopped = send()
  await c.mock('a').waitForRequests(2)
  assert.equal(c.app.llmRouter.abortInFlight(errors.shuttingDown()), 1)
  const stoppedAnswer = await stopped
  assert.equal(stoppedAnswer.statusCode, 503)
  await stoppedAnswer.body.text()
  await stoppedUpstream
  await eventually(() => c.records.length === 2)
  // Whatever a cancel would log has come by the end of a request after it.
  c.mock('a').setDefaults({ tokens: 1 })
  await (await send()).body.text()
  assert.deepEqual(
    c.logs.map((l) => l.msg),
    [],
  )

  // A real connection error before the answer is still logged, by reply-from and by the router.
  c.mock('a').setDefaults({ fault: 'reset-before-headers' })
  const reset = await send()
  assert.equal(reset.statusCode, 502)
  await reset.body.text()
  await eventually(() => c.logs.some((l) => l.msg === 'response errored'))
  assert.ok(c.logs.some((l) => l.msg === 'upstream attempt failed'))
})

test('an answer app.inject() read whole is no client abort: its attempt is ok, as over HTTP', async (t) => {
  const g = await startHarness()
  t.after(() => g.close())
  const results: string[] = []
  g.app.llm.addHook('onAttempt', (attempt) => {
    results.push(attempt.result)
  })
  for (const stream of [false, true]) {
    const injected = await g.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      headers: { 'content-type': 'application/json' },
      payload: chat({ stream }),
    })
    assert.equal(injected.statusCode, 200)
    const res = await request(`${g.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: chat({ stream }),
    })
    await res.body.text()
    assert.equal(res.statusCode, 200)
  }
  await eventually(() => results.length === 4)
  assert.deepEqual(results, ['ok', 'ok', 'ok', 'ok'])
  assert.deepEqual(
    g.records.map((record) => record.clientAborted),
    [false, false, false, false],
  )
})
