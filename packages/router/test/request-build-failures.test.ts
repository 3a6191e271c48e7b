// What goes wrong while the upstream request is built (the client's body converted, or serialised) is answered in the
// client's API, never a crash: an error thrown outside any handler (the failure is sent from an immediate when a usage
// spool keeps records at the turn's end) ends the process, and every client's stream with it. Real sockets.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type LlmProxyError, llmCore, type UsageRecord } from '@llmproxy/core'
import { wireOf } from '@llmproxy/protocols'
import { upstreams } from '@llmproxy/upstreams'
import Fastify, { type FastifyInstance } from 'fastify'
import { ClientStream } from '../src/client-stream.js'
import { router } from '../src/index.js'
import { eventually } from './helpers.js'
import { type Scripted, scripted, upstream } from './scripted.js'

const json = { 'content-type': 'application/json' }

/** An upstream of `protocol` that answers a non-streamed request with one word, in its API's shape. */
function answering(name: string, protocol: 'openai' | 'anthropic' | 'gemini') {
  return upstream(name, protocol, (res) => {
    if (protocol === 'openai') {
      res.writeHead(200, json)
      res.end(
        JSON.stringify({
          id: 'c1',
          object: 'chat.completion',
          created: 1,
          model: 'm',
          choices: [{ index: 0, message: { role: 'assistant', content: 'Fine' }, finish_reason: 'stop' }],
          usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 },
        }),
      )
    } else if (protocol === 'anthropic') {
      res.writeHead(200, json)
      res.end(
        JSON.stringify({
          id: 'msg_1',
          type: 'message',
          role: 'assistant',
          model: 'c',
          content: [{ type: 'text', text: 'Fine' }],
          stop_reason: 'end_turn',
          usage: { input_tokens: 5, output_tokens: 1 },
        }),
      )
    } else {
      res.writeHead(200, json)
      res.end(
        JSON.stringify({
          candidates: [{ content: { role: 'model', parts: [{ text: 'Fine' }] }, finishReason: 'STOP' }],
          usageMetadata: { promptTokenCount: 5, candidatesTokenCount: 1 },
        }),
      )
    }
  })
}

async function post(url: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, { method: 'POST', headers: json, body: JSON.stringify(body) })
  return { status: res.status, body: (await res.json()) as Record<string, unknown> }
}

describe('a client value String() cannot describe ({"toString":1}) in a field the converter refuses', () => {
  let g: Scripted
  const ups = [answering('oai', 'openai'), answering('ant', 'anthropic')]
  before(async () => {
    g = await scripted(ups, [
      { name: 'gpt', upstreams: ['oai'] },
      { name: 'claude', upstreams: ['ant'] },
    ])
    // As with a usage spool: the failure is sent from an immediate, after its record is kept.
    g.app.llm.recordsKeptAtTurnEnd = true
  })
  after(() => g.close())
  const odd = { toString: 1 }

  test('an Anthropic client on an OpenAI upstream, role {"toString":1}: a 400 in Anthropic\'s shape, then a good request is served', async () => {
    const bad = await post(`${g.url}/v1/messages`, { model: 'gpt', max_tokens: 10, messages: [{ role: odd, content: 'hi' }] })
    assert.equal(bad.status, 400)
    assert.equal(bad.body.type, 'error')
    const error = bad.body.error as { type: string; code: string; message: string }
    assert.deepEqual([error.type, error.code], ['invalid_request_error', 'llmproxy_not_convertible'])
    assert.match(error.message, /Unknown message role \{"toString":1\}/)
    const good = await post(`${g.url}/v1/messages`, { model: 'gpt', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] })
    assert.equal(good.status, 200)
  })

  test('a Gemini client on an OpenAI upstream, content role {"toString":1}: a 400 in Gemini\'s shape, then a good request is served', async () => {
    const bad = await post(`${g.url}/v1beta/models/gpt:generateContent`, { contents: [{ role: odd, parts: [{ text: 'hi' }] }] })
    assert.equal(bad.status, 400)
    const error = bad.body.error as { code: number; status: string; message: string }
    assert.deepEqual([error.code, error.status], [400, 'INVALID_ARGUMENT'])
    assert.match(error.message, /Unknown content role \{"toString":1\}/)
    const good = await post(`${g.url}/v1beta/models/gpt:generateContent`, { contents: [{ role: 'user', parts: [{ text: 'hi' }] }] })
    assert.equal(good.status, 200)
  })

  test('an OpenAI client on an Anthropic upstream, tools[0].type {"toString":1}: a 400 in OpenAI\'s shape, then a good request is served', async () => {
    const messages = [{ role: 'user', content: 'hi' }]
    const bad = await post(`${g.url}/v1/chat/completions`, { model: 'claude', messages, tools: [{ type: odd }] })
    assert.equal(bad.status, 400)
    const error = bad.body.error as { code: string; param: string }
    assert.deepEqual([error.code, error.param], ['llmproxy_not_convertible', 'tools[0]'])
    const good = await post(`${g.url}/v1/chat/completions`, { model: 'claude', messages })
    assert.equal(good.status, 200)
  })

  test('none of the refused requests reached an upstream; each has its record, with its status', async () => {
    assert.deepEqual(
      ups.map((u) => u.bodies.length),
      [2, 1],
    )
    await eventually(() => g.records.length === 6, 2000, 'usage records')
    assert.deepEqual(
      g.records.map((r) => r.status),
      [400, 200, 400, 200, 400, 200],
    )
  })
})

describe('anything else thrown while the upstream request is built (a bug: here a hook put a BigInt in the body)', () => {
  let app: FastifyInstance
  let url: string
  const records: UsageRecord[] = []
  const up = answering('oai', 'openai')
  let g: Scripted
  before(async () => {
    // The scripted gateway only lends its upstream's address; this one has the faulty hook.
    g = await scripted([up], [{ name: 'gpt', upstreams: ['oai'] }])
    const upstreamUrl = g.app.upstreams.snapshot()[0]?.url as string
    app = Fastify({ logger: false })
    app.addHook('preHandler', async (request) => {
      if (request.headers['x-faulty-hook'] !== undefined) (request.body as Record<string, unknown>).seed = 1n
    })
    await app.register(upstreams, { upstreams: [{ name: 'oai', url: upstreamUrl, protocol: 'openai' }], healthChecks: { enabled: false } })
    await app.register(router, { models: [{ name: 'gpt', upstreams: ['oai'] }] })
    app.llm.recordsKeptAtTurnEnd = true
    app.llm.addHook('onUsage', (record) => {
      records.push(record)
    })
    url = await app.listen({ port: 0, host: '127.0.0.1' })
  })
  after(async () => {
    await app.close()
    await g.close()
  })

  test("the client gets the catalogue's internal error (500) in its API's shape, its record says so, the gateway still serves", async () => {
    const body = JSON.stringify({ model: 'gpt', messages: [{ role: 'user', content: 'hi' }] })
    const bad = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { ...json, 'x-faulty-hook': '1' }, body })
    assert.equal(bad.status, 500)
    assert.deepEqual(((await bad.json()) as { error: { code: string } }).error.code, 'llmproxy_internal_error')
    await eventually(() => records.length === 1, 2000, 'usage record')
    assert.deepEqual([records[0]?.status, records[0]?.error?.code], [500, 'llmproxy_internal_error'])
    assert.equal(up.bodies.length, 0, 'nothing reached the upstream')
    const good = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: json, body })
    assert.equal(good.status, 200)
  })
})

test('a failure that is no gateway error (no status) is answered as the internal error, from an immediate too: no throw', async () => {
  const app = Fastify({ logger: false })
  await app.register(llmCore)
  for (const afterRecord of [false, true]) {
    app.post(`/v1/messages/${afterRecord}`, async (_request, reply) => {
      const client = new ClientStream(reply, wireOf('anthropic'), afterRecord, 1000)
      client.fail(new TypeError('Cannot convert object to primitive value') as unknown as LlmProxyError)
      return reply
    })
  }
  try {
    const url = await app.listen({ port: 0, host: '127.0.0.1' })
    for (const afterRecord of [false, true]) {
      const res = await post(`${url}/v1/messages/${afterRecord}`, {})
      assert.equal(res.status, 500, `sent after the record: ${afterRecord}`)
      assert.deepEqual(res.body.error, { type: 'api_error', message: 'Internal gateway error.', code: 'llmproxy_internal_error' })
    }
  } finally {
    await app.close()
  }
})
