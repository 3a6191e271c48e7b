// Each official SDK authenticates the way it does by default (OpenAI: Authorization: Bearer, Anthropic: x-api-key,
// Gemini: x-goog-api-key), against the reference server with its auth on; a Gemini `?key=` only with auth.keyInQuery.
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { GoogleGenAI } from '@google/genai'
import { expectedContent, type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { buildGateway, parseConfig } from '@llmproxy/server'
import type { FastifyInstance } from 'fastify'
import OpenAI from 'openai'

const KEY = 'sk-team-a-sdk-auth-0123456789'

interface Gateway {
  app: FastifyInstance
  url: string
  mock: MockUpstream
  logs: () => string
  close(): Promise<void>
}

/** The reference server with auth, one model per API, all served by the mock (which speaks each). */
async function start(keyInQuery: boolean): Promise<Gateway> {
  const mock = await startMockUpstream({ defaults: { tokens: 4 } })
  const config = parseConfig(
    JSON.stringify({
      server: { host: '127.0.0.1', port: 0 },
      upstreams: [
        { name: 'oai', url: mock.url, protocol: 'openai' },
        { name: 'claude', url: mock.url, protocol: 'anthropic', apiKey: 'sk-ant-upstream-000' },
        { name: 'gemini', url: mock.url, protocol: 'gemini', apiKey: 'goog-upstream-000' },
      ],
      models: [
        { name: 'gpt-test', upstreams: ['oai'], upstreamModel: 'mock-model' },
        { name: 'claude-test', upstreams: ['claude'], upstreamModel: 'claude-mock' },
        { name: 'gemini-test', upstreams: ['gemini'], upstreamModel: 'gemini-mock' },
      ],
      healthChecks: { enabled: false },
      auth: { keys: [{ id: 'team-a', key: KEY }], keyInQuery },
    }),
    'sdk-auth',
  )
  const lines: string[] = []
  const logDestination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(chunk.toString())
      callback()
    },
  })
  const app = await buildGateway(config, { logDestination })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  return {
    app,
    url,
    mock,
    logs: () => lines.join(''),
    async close() {
      await app.close()
      await mock.close()
    },
  }
}

describe('official SDKs authenticate with their own credential header', () => {
  let gw: Gateway
  before(async () => {
    gw = await start(false)
  })
  after(() => gw.close())

  test('openai: Authorization: Bearer', async () => {
    const client = new OpenAI({ apiKey: KEY, baseURL: `${gw.url}/v1`, maxRetries: 0 })
    const completion = await client.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'Hi' }] })
    assert.equal(completion.choices[0]?.message.content, expectedContent(4))
    const wrong = new OpenAI({ apiKey: 'sk-wrong', baseURL: `${gw.url}/v1`, maxRetries: 0 })
    await assert.rejects(wrong.chat.completions.create({ model: 'gpt-test', messages: [] }), OpenAI.AuthenticationError)
  })

  test('@anthropic-ai/sdk: x-api-key', async () => {
    const client = new Anthropic({ apiKey: KEY, baseURL: gw.url, maxRetries: 0 })
    const message = await client.messages.create({ model: 'claude-test', max_tokens: 64, messages: [{ role: 'user', content: 'Hi' }] })
    const block = message.content[0]
    assert.equal(block?.type === 'text' ? block.text : null, expectedContent(4))
    const seen = gw.mock.requests.at(-1)?.headers
    assert.equal(seen?.['x-api-key'], 'sk-ant-upstream-000', 'the upstream gets its own key, never the client one')
  })

  test('@google/genai: x-goog-api-key, generateContent and generateContentStream', async () => {
    const ai = new GoogleGenAI({ apiKey: KEY, httpOptions: { baseUrl: gw.url } })
    const answer = await ai.models.generateContent({ model: 'gemini-test', contents: 'Hi' })
    assert.equal(answer.text, expectedContent(4))
    let streamed = ''
    for await (const chunk of await ai.models.generateContentStream({ model: 'gemini-test', contents: 'Hi' })) streamed += chunk.text ?? ''
    assert.equal(streamed, expectedContent(4))
    const seen = gw.mock.requests.at(-1)?.headers
    assert.equal(seen?.['x-goog-api-key'], 'goog-upstream-000')
    const wrong = new GoogleGenAI({ apiKey: 'sk-wrong', httpOptions: { baseUrl: gw.url } })
    await assert.rejects(wrong.models.generateContent({ model: 'gemini-test', contents: 'Hi' }), (err: unknown) => {
      assert.equal((err as { status?: number }).status, 401)
      return true
    })
  })

  test('?key= is refused by default (401 llmproxy_missing_api_key), and never logged', async () => {
    const res = await fetch(`${gw.url}/v1beta/models/gemini-test:generateContent?key=${KEY}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'Hi' }] }] }),
    })
    assert.equal(res.status, 401)
    // A Gemini client gets Gemini's error shape: the catalogue code is the ErrorInfo reason.
    const { error } = (await res.json()) as { error: { code: number; status: string; details: { reason: string }[] } }
    assert.deepEqual([error.code, error.status, error.details[0]?.reason], [401, 'UNAUTHENTICATED', 'llmproxy_missing_api_key'])
    assert.ok(!gw.logs().includes(KEY))
  })

  test('a 100 KB model name is not echoed whole in the 404', async () => {
    const client = new OpenAI({ apiKey: KEY, baseURL: `${gw.url}/v1`, maxRetries: 0 })
    const model = `m${'x'.repeat(100_000)}`
    await assert.rejects(client.chat.completions.create({ model, messages: [] }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.NotFoundError)
      assert.ok(err.message.length < 400, `${err.message.length} characters`)
      assert.match(err.message, /… \(100001 characters\)/)
      return true
    })
    // An unknown path is echoed in its 404, cut as well (Node takes 16 KB of headers, the request line included).
    const res = await fetch(`${gw.url}/v1/${'y'.repeat(10_000)}`, { method: 'POST', headers: { authorization: `Bearer ${KEY}` } })
    assert.equal(res.status, 404)
    assert.ok((await res.text()).length < 400)
  })
})

describe('auth.keyInQuery: true', () => {
  let gw: Gateway
  before(async () => {
    gw = await start(true)
  })
  after(() => gw.close())

  for (const version of ['v1beta', 'v1']) {
    test(`?key= authenticates a Gemini request on ${version}; the key reaches no upstream and no log line`, async () => {
      const res = await fetch(`${gw.url}/${version}/models/gemini-test:streamGenerateContent?alt=sse&key=${KEY}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'Hi' }] }] }),
      })
      assert.equal(res.status, 200)
      assert.match(await res.text(), /finishReason/)
      const seen = gw.mock.requests.at(-1)
      assert.ok(seen !== undefined && !JSON.stringify(seen).includes(KEY))
      await new Promise((resolve) => setTimeout(resolve, 50))
      assert.ok(gw.logs().includes(`"url":"/${version}/models/gemini-test:streamGenerateContent?alt=sse&key=[redacted]"`))
      assert.ok(!gw.logs().includes(KEY))
    })
  }

  test('?key= is still refused on the OpenAI routes', async () => {
    const res = await fetch(`${gw.url}/v1/chat/completions?key=${KEY}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-test', messages: [] }),
    })
    assert.equal(res.status, 401)
  })
})
