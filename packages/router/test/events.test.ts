import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, test } from 'node:test'
import type { UsageRecord } from '@llmproxy/core'
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

async function streamThrough(parts: string[]): Promise<{ text: string; record: UsageRecord }> {
  pieces = parts
  records.length = 0
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: chat({ stream: true, stream_options: { include_usage: true } }),
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
