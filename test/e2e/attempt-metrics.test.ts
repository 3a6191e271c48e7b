// What /metrics says of upstream attempts, against what happened to them, through the reference gateway on real
// sockets: an attempt is counted once, when it is over, as it ended — an answer cut after its first byte is no `ok`,
// nor is a 5xx passed on to the client; a client leaving is `aborted`; a pool's full queue is a `queue_full`
// rejection; a request that was never answered is no failover.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { buildGateway, parseConfig } from '@llmproxy/server'
import type { FastifyInstance } from 'fastify'
import OpenAI from 'openai'
import { request } from 'undici'
import { pollUntil } from './http-helpers.js'
import { metricValue } from './usage-helpers.js'

let a: MockUpstream
let b: MockUpstream
let solo: MockUpstream
let narrow: MockUpstream
let app: FastifyInstance
let url: string
let client: OpenAI

before(async () => {
  ;[a, b, solo, narrow] = await Promise.all([1, 2, 3, 4].map(() => startMockUpstream({ defaults: { tokens: 8 } })))
  const config = parseConfig(
    JSON.stringify({
      server: { host: '127.0.0.1', port: 0, logLevel: 'silent' },
      upstreams: [
        { name: 'a', url: (a as MockUpstream).url, protocol: 'vllm' },
        { name: 'b', url: (b as MockUpstream).url, protocol: 'vllm' },
        { name: 'solo', url: (solo as MockUpstream).url, protocol: 'vllm' },
        { name: 'narrow', url: (narrow as MockUpstream).url, protocol: 'vllm', maxConcurrency: 1 },
      ],
      models: [
        { name: 'pair', upstreams: ['a', 'b'], strategy: 'round-robin' },
        { name: 'solo', upstreams: ['solo'], resume: false },
        { name: 'narrow', upstreams: ['narrow'] },
      ],
      timeouts: { firstTokenMs: 2000, idleMs: 300 },
      retry: { attempts: 2, backoffMs: 20 },
      queue: { maxWaiting: 1, timeoutMs: 300 },
      healthChecks: { enabled: false },
      passiveHealth: { failuresToEject: 1000 },
    }),
    'e2e-attempt-metrics',
  )
  app = await buildGateway(config)
  url = await app.listen({ host: '127.0.0.1', port: 0 })
  client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 })
})

after(async () => {
  await app?.close()
  await Promise.all([a, b, solo, narrow].map((m) => m?.close()))
})

async function scrape(): Promise<string> {
  return (await fetch(`${url}/metrics`)).text()
}

/** The attempts of `upstream` by result (0 when absent). */
async function attempts(upstream: string): Promise<Record<string, number>> {
  const text = await scrape()
  const counts: Record<string, number> = {}
  for (const result of ['ok', 'error', 'timeout', 'status', 'aborted', 'stall', 'connect_error']) {
    const value = metricValue(text, 'llmproxy_upstream_attempts_total', `upstream="${upstream}",result="${result}"`)
    if (!Number.isNaN(value)) counts[result] = value
  }
  return counts
}

async function streamText(model: string): Promise<string> {
  const stream = await client.chat.completions.create({ model, stream: true, messages: [{ role: 'user', content: 'hi' }] })
  let text = ''
  for await (const part of stream) text += part.choices[0]?.delta.content ?? ''
  return text
}

test('a stream cut after its first byte, with nothing to continue it, is an error attempt, not an ok one', async () => {
  solo.program(() => ({ fault: 'cut', faultAfter: 3 }))
  await assert.rejects(streamText('solo'))
  await pollUntil(
    () => attempts('solo'),
    (counts) => counts.error === 1,
    'the cut attempt',
  )
  assert.deepEqual(await attempts('solo'), { error: 1 })
  solo.program(null)
})

test('a stream cut and finished on the other upstream: the cut attempt counts once, as error; the other as ok', async () => {
  let cuts = 1
  const cutOnce = () => (cuts-- > 0 ? { fault: 'cut' as const, faultAfter: 3 } : undefined)
  a.program(cutOnce)
  b.program(cutOnce)
  assert.ok((await streamText('pair')).length > 0)
  const both = async () => {
    const [x, y] = await Promise.all([attempts('a'), attempts('b')])
    return { ok: (x.ok ?? 0) + (y.ok ?? 0), error: (x.error ?? 0) + (y.error ?? 0), other: Object.keys({ ...x, ...y }).length }
  }
  await pollUntil(both, (c) => c.ok === 1 && c.error === 1, 'one error and one ok')
  assert.deepEqual(await both(), { ok: 1, error: 1, other: 2 })
  // Answered by its second attempt: a failover.
  assert.equal(metricValue(await scrape(), 'llmproxy_failovers_total', 'model="pair"'), 1)
  a.program(null)
  b.program(null)
})

test('a 5xx passed on to the client is a status attempt, with no TTFT sample, and no failover', async () => {
  solo.program(() => ({ status: 503 }))
  const before = await attempts('solo')
  const ttftSamples = () =>
    scrape().then((text) => metricValue(text, 'llmproxy_time_to_first_token_seconds_count', 'model="solo",upstream="solo"') || 0)
  const samplesBefore = await ttftSamples()
  const res = await request(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'solo', messages: [{ role: 'user', content: 'hi' }] }),
  })
  await res.body.dump()
  assert.equal(res.statusCode, 503)
  await pollUntil(
    () => attempts('solo'),
    (counts) => (counts.status ?? 0) === (before.status ?? 0) + 2,
    'two status attempts (retried once, then passed on)',
  )
  const after = await attempts('solo')
  assert.equal(after.ok ?? 0, 0)
  assert.equal(await ttftSamples(), samplesBefore)
  assert.ok(Number.isNaN(metricValue(await scrape(), 'llmproxy_failovers_total', 'model="solo"')))
  solo.program(null)
})

test('a client that leaves mid-stream makes an aborted attempt', async () => {
  solo.program(() => ({ tokens: 50, gapMs: 50 }))
  const controller = new AbortController()
  const stream = await client.chat.completions.create(
    { model: 'solo', stream: true, messages: [{ role: 'user', content: 'hi' }] },
    { signal: controller.signal },
  )
  for await (const _part of stream) {
    controller.abort()
    break
  }
  await pollUntil(
    () => attempts('solo'),
    (counts) => counts.aborted === 1,
    'the aborted attempt',
  )
  solo.program(null)
})

test("requests turned away by a pool's full queue, or by its timeout, are queue_full rejections", async () => {
  narrow.program(() => ({ ttftMs: 1500 }))
  const send = () =>
    request(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'narrow', messages: [{ role: 'user', content: 'hi' }] }),
    }).then(async (res) => {
      await res.body.dump()
      return res.statusCode
    })
  // One runs, one waits (and times out after 300 ms), one finds the queue full.
  const statuses = await Promise.all([send(), send(), send()])
  assert.deepEqual(
    statuses.sort((x, y) => x - y),
    [200, 503, 503],
  )
  assert.equal(metricValue(await scrape(), 'llmproxy_rejections_total', 'reason="queue_full"'), 2)
  narrow.program(null)
})
