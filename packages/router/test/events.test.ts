import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, test } from 'node:test'
import type { Attempt, UsageRecord } from '@llmproxy/core'
import { upstreams } from '@llmproxy/upstreams'
import Fastify, { type FastifyInstance } from 'fastify'
import { router } from '../src/index.js'
import { chat, eventually } from './helpers.js'

// An upstream that writes given SSE bytes in given pieces, to check how the proxy walks events.
let pieces: string[] = []
let upstream: Server
let app: FastifyInstance
let url: string
const records: UsageRecord[] = []

before(async () => {
  upstream = createServer((req, res) => {
    req.resume()
    req.on('end', async () => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      for (const piece of pieces) {
        res.write(piece)
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      res.end()
    })
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  app = Fastify({ logger: false })
  await app.register(upstreams, {
    upstreams: [{ name: 'raw', url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`, protocol: 'openai' }],
    healthChecks: { enabled: false },
  })
  await app.register(router, { models: [{ name: 'gpt-test', upstreams: ['raw'] }], retry: { attempts: 1 } })
  app.llm.addHook('onUsage', (record) => {
    records.push(record)
  })
  url = await app.listen({ port: 0, host: '127.0.0.1' })
})

after(async () => {
  await app.close()
  await new Promise((resolve) => upstream.close(resolve))
})

const event = (content: string) =>
  `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content } }] })}\n\n`

const DONE = 'data: [DONE]\n\n'

async function streamThrough(
  parts: string[],
  request: { path: string; body: string } = {
    path: '/v1/chat/completions',
    body: chat({ stream: true, stream_options: { include_usage: true } }),
  },
): Promise<{ text: string; record: UsageRecord }> {
  pieces = parts
  records.length = 0
  const res = await fetch(`${url}${request.path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: request.body,
  })
  const text = await res.text()
  await eventually(() => records.length === 1, 2000, 'the usage record')
  return { text, record: records[0] as UsageRecord }
}

test('"data:" inside a token is text, not an event: passed through, counted once per event', async () => {
  const whole = [event('data: yes'), event('see data:{}'), event('plain'), DONE].join('')
  const { text, record } = await streamThrough([whole])
  assert.equal(text, whole)
  assert.equal(record.status, 200)
  assert.equal(record.error, undefined)
  // No usage reported: completion tokens are estimated as one per data event before [DONE].
  assert.equal(record.estimated, true)
  assert.equal(record.completionTokens, 3)
})

test('events and their "data:" fields split across chunks anywhere are relayed whole and counted', async () => {
  const whole = [event('one'), event('two'), event('three'), DONE].join('')
  const cuts = [1, 3, 6, 20, whole.indexOf('\n') + 1, whole.indexOf('\n\n') + 2]
  for (const cut of cuts) {
    const { text, record } = await streamThrough([whole.slice(0, cut), whole.slice(cut)])
    assert.equal(text, whole, `cut at ${cut}`)
    assert.equal(record.error, undefined, `cut at ${cut}`)
    assert.equal(record.completionTokens, 3, `cut at ${cut}`)
  }
  // A field name arriving a byte at a time.
  const { text, record } = await streamThrough(['d', 'a', 't', 'a', whole.slice(4)])
  assert.equal(text, whole)
  assert.equal(record.completionTokens, 3)
})

test('a data line that is not JSON still ends the stream with an error event', async () => {
  const { text, record } = await streamThrough([event('one'), 'data: not json\n\n', event('two'), DONE])
  assert.ok(text.startsWith(event('one')))
  assert.ok(text.includes('event: error'))
  assert.ok(!text.includes('[DONE]'))
  assert.equal(record.error?.code, 'llmproxy_upstream_error')
})

// OpenAI with include_usage: `"usage":null` ends every chunk but the usage-only one; the tap skips those.
const withNullUsage = (content: string, space = '') =>
  `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":${JSON.stringify(content)}}}],"usage":${space}null${space}}\n\n`
const usageEvent = (prompt: number, completion: number) =>
  `data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":${prompt},"completion_tokens":${completion},"total_tokens":${prompt + completion}}}\n\n`

test('usage is read whatever surrounds it: after null-usage chunks, in a chunk with them, split across chunks', async () => {
  const nulls = [withNullUsage('one'), withNullUsage('two', ' '), withNullUsage('three')]
  const cases: Record<string, string[]> = {
    'own chunk': [...nulls, usageEvent(7, 3), DONE],
    'same chunk as null-usage events': [nulls[0] as string, (nulls[1] as string) + usageEvent(7, 3) + (nulls[2] as string), DONE],
    'split inside the usage object': [...nulls, usageEvent(7, 3).slice(0, 90), usageEvent(7, 3).slice(90) + DONE],
    'split inside the key': [...nulls, usageEvent(7, 3).slice(0, 66), usageEvent(7, 3).slice(66) + DONE],
  }
  for (const [name, parts] of Object.entries(cases)) {
    const { text, record } = await streamThrough(parts)
    assert.equal(text, parts.join(''), name)
    assert.equal(record.estimated, false, name)
    assert.equal(record.promptTokens, 7, name)
    assert.equal(record.completionTokens, 3, name)
  }
})

test('a terminator split across chunks still ends the stream cleanly', async () => {
  const whole = [event('one'), DONE].join('')
  for (let cut = whole.length - DONE.length + 1; cut < whole.length - 1; cut++) {
    for (const parts of [
      [whole.slice(0, cut), whole.slice(cut)],
      [whole.slice(0, cut), whole.slice(cut, cut + 1), whole.slice(cut + 1)],
    ]) {
      const { text, record } = await streamThrough(parts)
      assert.equal(text, whole, `cut at ${cut}`)
      assert.equal(record.error, undefined, `cut at ${cut}`)
      assert.equal(record.completionTokens, 1, `cut at ${cut}`)
    }
  }
  // The Responses API ends with a response.completed event, found by its name.
  const completed = 'event: response.completed\ndata: {"type":"response.completed","response":{"status":"completed"}}\n\n'
  const responses = `event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"hi"}\n\n${completed}`
  const name = responses.indexOf('"response.completed"')
  const body = JSON.stringify({ model: 'gpt-test', input: 'Hello', stream: true })
  for (const [first, second] of [
    [name + 3, name + 4],
    [name + 8, name + 15],
  ] as const) {
    const parts = [responses.slice(0, first), responses.slice(first, second), responses.slice(second)]
    const { text, record } = await streamThrough(parts, { path: '/v1/responses', body })
    assert.equal(text, responses, JSON.stringify(parts))
    assert.equal(record.error, undefined, JSON.stringify(parts))
  }
})

test('a Responses answer its upstream reports failed reaches the client as sent, is recorded as an upstream error, and is an answer for health', async () => {
  const attempts: Attempt[] = []
  app.llm.addHook('onAttempt', (attempt) => {
    attempts.push(attempt)
  })
  const failed =
    'event: response.failed\ndata: {"type":"response.failed","sequence_number":3,"response":{"id":"r","status":"failed",' +
    '"error":{"code":"server_error","message":"The model failed."},"usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}}\n\n'
  const whole = `event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"hi"}\n\n${failed}`
  const body = JSON.stringify({ model: 'gpt-test', input: 'Hello', stream: true })
  const { text, record } = await streamThrough([whole], { path: '/v1/responses', body })
  // The client reads the failure in the upstream's own words: nothing added, nothing taken out.
  assert.equal(text, whole)
  assert.equal(record.status, 200)
  assert.equal(record.error?.code, 'llmproxy_upstream_error')
  assert.match(record.error?.message ?? '', /response\.failed/)
  // What the upstream reported it spent is metered as it is.
  assert.equal(record.estimated, false)
  assert.equal(record.completionTokens, 2)
  await eventually(() => attempts.length === 1, 2000, 'the attempt')
  // Often the client's own input failed (an image the upstream cannot fetch): an answer, as a 400 is, never an ejection.
  assert.equal(attempts[0]?.result, 'ok')
})

test('when the gateway asked for usage itself, the usage-only event is left out whatever the chunking', async () => {
  const usage = usageEvent(7, 3)
  const whole = [withNullUsage('one'), withNullUsage('two'), usage, DONE].join('')
  const expected = whole.replace(usage, '')
  const request = { path: '/v1/chat/completions', body: chat({ stream: true }) }
  const start = whole.indexOf(usage)
  for (const cut of [start - 1, start, start + 1, start + 60, start + 66, start + usage.length - 1, start + usage.length]) {
    const { text, record } = await streamThrough([whole.slice(0, cut), whole.slice(cut)], request)
    assert.equal(text, expected, `cut at ${cut}`)
    assert.equal(record.estimated, false, `cut at ${cut}`)
    assert.equal(record.completionTokens, 3, `cut at ${cut}`)
  }
})

test('a stream that ends cleanly without a finish reason or [DONE] ends with an error event: it cannot look complete', async () => {
  const { text, record } = await streamThrough([event('one'), event('two')])
  assert.ok(text.startsWith(event('one') + event('two')))
  assert.ok(text.includes('event: error'))
  assert.ok(!text.includes('[DONE]'))
  assert.equal(record.error?.code, 'llmproxy_upstream_error')
})

test('a finish reason split across chunks, then a clean end without [DONE]: complete, and the client gets [DONE]', async () => {
  const finish = `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`
  const cut = finish.indexOf('finish_reason') + 5
  const { text, record } = await streamThrough([event('one'), finish.slice(0, cut), finish.slice(cut)])
  assert.equal(text, `${event('one')}${finish}${DONE}`)
  assert.equal(record.error, undefined)
})
