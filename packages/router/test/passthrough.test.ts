// Anthropic and Gemini wire formats pass through unchanged to upstreams of that protocol, metered
// exactly from their own usage reports; OpenAI formats likewise, streamed and not.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { GoogleGenAI } from '@google/genai'
import type { UsageRecord } from '@llmproxy/core'
import { expectedContent, type MockUpstream, promptTokensFor, startMockUpstream } from '@llmproxy/mock-upstream'
import { upstreams } from '@llmproxy/upstreams'
import Fastify, { type FastifyInstance } from 'fastify'
import { request } from 'undici'
import { router } from '../src/index.js'
import { eventually, parseSse } from './helpers.js'

let mock: MockUpstream
let app: FastifyInstance
let url: string
const records: UsageRecord[] = []

before(async () => {
  mock = await startMockUpstream({ defaults: { tokens: 7 } })
  app = Fastify({ logger: false })
  await app.register(upstreams, {
    upstreams: [
      { name: 'oai', url: mock.url, protocol: 'vllm', apiKey: 'sk-oai' },
      { name: 'claude', url: mock.url, protocol: 'anthropic', apiKey: 'sk-ant' },
      { name: 'gem', url: mock.url, protocol: 'gemini', apiKey: 'sk-gem' },
    ],
    healthChecks: { enabled: false },
  })
  await app.register(router, {
    models: [
      { name: 'gpt', upstreams: ['oai'], upstreamModel: 'mock-model' },
      { name: 'claude', upstreams: ['claude'], upstreamModel: 'claude-upstream' },
      { name: 'gemini', upstreams: ['gem'], upstreamModel: 'gemini-upstream' },
      // Not continued: a stream's in-band error reaches the client.
      { name: 'claude-once', upstreams: ['claude'], upstreamModel: 'claude-upstream', resume: false },
      { name: 'gemini-once', upstreams: ['gem'], upstreamModel: 'gemini-upstream', resume: false },
    ],
  })
  app.llm.addHook('onUsage', (record) => {
    records.push(record)
  })
  url = await app.listen({ port: 0, host: '127.0.0.1' })
})
after(async () => {
  await app.close()
  await mock.close()
})

async function lastRecord(): Promise<UsageRecord> {
  await eventually(() => records.length === 1, 2000, 'usage record')
  return records[0] as UsageRecord
}

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  records.length = 0
  mock.reset()
  const res = await request(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  })
  return { status: res.statusCode, text: await res.body.text() }
}

const messages = [{ role: 'user', content: 'Tell me something' }]

for (const stream of [false, true]) {
  test(`Anthropic Messages ${stream ? 'streamed' : 'not streamed'}: passed through, metered exactly`, async () => {
    const body = { model: 'claude', max_tokens: 100, messages, stream }
    const res = await post('/v1/messages', body, { 'anthropic-version': '2023-06-01', 'x-api-key': 'sk-client' })
    assert.equal(res.status, 200, res.text)
    const seen = mock.requests[0]
    assert.equal(seen?.path, '/v1/messages')
    assert.equal(seen?.headers['x-api-key'], 'sk-ant')
    assert.equal(seen?.headers['anthropic-version'], '2023-06-01')
    assert.equal((seen?.body as { model?: string } | undefined)?.model, 'claude-upstream')
    if (stream) {
      const events = parseSse(res.text)
      assert.equal(events.at(-1)?.event, 'message_stop')
      const text = events
        .filter((e) => e.event === 'content_block_delta')
        .map((e) => (JSON.parse(e.data) as { delta: { text: string } }).delta.text)
        .join('')
      assert.equal(text, expectedContent(7))
    } else {
      assert.equal((JSON.parse(res.text) as { content: { text: string }[] }).content[0]?.text, expectedContent(7))
    }
    const record = await lastRecord()
    assert.equal(record.protocol, 'anthropic')
    assert.equal(record.promptTokens, promptTokensFor(seen?.body))
    assert.equal(record.completionTokens, 7)
    assert.equal(record.estimated, false)
  })

  test(`Gemini ${stream ? 'streamGenerateContent (SSE)' : 'generateContent'}: passed through, metered exactly`, async () => {
    const action = stream ? 'streamGenerateContent?alt=sse&key=client-secret' : 'generateContent?key=client-secret'
    const body = { contents: [{ role: 'user', parts: [{ text: 'Tell me something' }] }] }
    const res = await post(`/v1beta/models/gemini:${action}`, body)
    assert.equal(res.status, 200, res.text)
    const seen = mock.requests[0]
    assert.equal(seen?.path, `/v1beta/models/gemini-upstream:${stream ? 'streamGenerateContent' : 'generateContent'}`)
    assert.equal(seen?.headers['x-goog-api-key'], 'sk-gem')
    assert.equal((seen?.body as { model?: string } | undefined)?.model, undefined, 'no model field is added to a Gemini body')
    const record = await lastRecord()
    assert.equal(record.protocol, 'gemini')
    assert.equal(record.stream, stream)
    assert.equal(record.promptTokens, promptTokensFor(seen?.body))
    assert.equal(record.completionTokens, 7)
    assert.equal(record.estimated, false)
  })

  test(`OpenAI-compatible (vLLM) ${stream ? 'streamed' : 'not streamed'}: metered exactly`, async () => {
    const res = await post('/v1/chat/completions', { model: 'gpt', messages, stream })
    assert.equal(res.status, 200)
    const record = await lastRecord()
    assert.equal(record.protocol, 'vllm')
    assert.equal(record.promptTokens, promptTokensFor(mock.requests[0]?.body))
    assert.equal(record.completionTokens, 7)
    assert.equal(record.estimated, false)
  })
}

test("the client's Gemini key in the query string never reaches the upstream", async () => {
  await post('/v1beta/models/gemini:streamGenerateContent?alt=sse&key=client-secret', { contents: [] })
  const seen = mock.requests[0]
  assert.ok(seen)
  assert.ok(!JSON.stringify(seen.headers).includes('client-secret'))
  assert.ok(!seen.path.includes('client-secret'))
})

test('only chat routes are converted: a completions request for an Anthropic model is refused', async () => {
  const res = await post('/v1/completions', { model: 'claude', prompt: 'hi' })
  assert.equal(res.status, 400)
  assert.equal((JSON.parse(res.text) as { error: { code: string } }).error.code, 'llmproxy_wrong_api')
  assert.equal(mock.requests.length, 0)
})

test('an unknown Gemini action is a 404', async () => {
  const res = await post('/v1beta/models/gemini:deleteEverything', {})
  assert.equal(res.status, 404)
})

test('a server that reports no usage is estimated, and says so', async () => {
  const res = await post('/v1/chat/completions', { model: 'gpt', messages, stream: true, mock: { usage: false, tokens: 9 } })
  assert.equal(res.status, 200)
  const record = await lastRecord()
  assert.equal(record.estimated, true)
  assert.equal(record.completionTokens, 11, 'one per data event: role chunk, 9 tokens, finish chunk')
  assert.ok(record.promptTokens > 0)
})

test("an upstream's error inside a same-format stream keeps its kind: Anthropic's overloaded_error, Gemini's RESOURCE_EXHAUSTED", async () => {
  const anthropic = new Anthropic({ baseURL: url, apiKey: 'k', maxRetries: 0 })
  const failed = await anthropic.messages
    .stream(
      { model: 'claude-once', max_tokens: 50, messages: [{ role: 'user', content: 'hi' }] },
      { headers: { 'x-mock-behavior': JSON.stringify({ fault: 'error-event', faultAfter: 2 }) } },
    )
    .finalMessage()
    .then(
      () => null,
      (err: unknown) => err,
    )
  assert.ok(failed instanceof Anthropic.APIError, String(failed))
  assert.equal((failed.error as { error: { type: string } }).error.type, 'overloaded_error')

  const gemini = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: url } })
  const behavior = { fault: 'error-event', faultAfter: 2, errorCode: 'RESOURCE_EXHAUSTED' }
  const stream = await gemini.models.generateContentStream({
    model: 'gemini-once',
    contents: 'hi',
    config: { httpOptions: { headers: { 'x-mock-behavior': JSON.stringify(behavior) } } },
  })
  const thrown = await (async () => {
    for await (const _ of stream) {
      // the tokens before the error
    }
  })().then(
    () => null,
    (err: unknown) => err as Error,
  )
  assert.match(String(thrown?.message), /RESOURCE_EXHAUSTED/)

  // Converted: a Gemini client of the overloaded Anthropic upstream reads UNAVAILABLE, with Google's code for it.
  const converted = await post(
    '/v1beta/models/claude-once:streamGenerateContent?alt=sse',
    { contents: [{ role: 'user', parts: [{ text: 'hi' }] }] },
    { 'x-mock-behavior': JSON.stringify({ fault: 'error-event', faultAfter: 2 }) },
  )
  const error = converted.text.split('\n').find((line) => line.includes('"error"')) ?? converted.text
  assert.match(error, /"code":503,.*"status":"UNAVAILABLE"/)
  // The same as a JSON array (no alt=sse).
  const array = await post(
    '/v1beta/models/claude-once:streamGenerateContent',
    { contents: [{ role: 'user', parts: [{ text: 'hi' }] }] },
    { 'x-mock-behavior': JSON.stringify({ fault: 'error-event', faultAfter: 2 }) },
  )
  assert.match(array.text, /"code":503,.*"status":"UNAVAILABLE"/)
})

test("a converted request leaves the client API's own headers behind; a same-format one keeps them", async () => {
  const anthropic = new Anthropic({
    baseURL: url,
    apiKey: 'k',
    maxRetries: 0,
    defaultHeaders: { 'anthropic-beta': 'interleaved-thinking-2025-05-14', 'x-claude-code-session-id': 'session-1' },
  })
  for (const model of ['gpt', 'claude']) {
    mock.reset()
    await anthropic.messages.create({ model, max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] })
    const headers = mock.requests.find((r) => r.method === 'POST')?.headers ?? {}
    const clientOwn = Object.keys(headers).filter((name) => /^(anthropic-|x-stainless-|x-claude-code-)/.test(name))
    if (model === 'gpt') assert.deepEqual(clientOwn, [], 'to the OpenAI-compatible upstream')
    else {
      assert.equal(headers['anthropic-beta'], 'interleaved-thinking-2025-05-14')
      assert.equal(headers['x-claude-code-session-id'], 'session-1')
      assert.ok(clientOwn.some((name) => name.startsWith('x-stainless-')))
    }
  }
})

test("Gemini's v1 API (Google's SDKs with apiVersion 'v1') is served as v1beta is: streamed, whole, and its errors in Gemini's shape", async () => {
  mock.reset()
  const gemini = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: url, apiVersion: 'v1' } })
  const whole = await gemini.models.generateContent({ model: 'gemini', contents: 'hi' })
  assert.equal(whole.text, expectedContent(7))
  let streamed = ''
  for await (const chunk of await gemini.models.generateContentStream({ model: 'gemini', contents: 'hi' })) streamed += chunk.text ?? ''
  assert.equal(streamed, expectedContent(7))
  assert.deepEqual(
    mock.requests.filter((r) => r.method === 'POST').map((r) => r.path.split('?')[0]),
    ['/v1beta/models/gemini-upstream:generateContent', '/v1beta/models/gemini-upstream:streamGenerateContent'],
  )
  const unknown = await post('/v1/models/nope:generateContent', { contents: [{ parts: [{ text: 'hi' }] }] })
  assert.equal(unknown.status, 404)
  assert.equal((JSON.parse(unknown.text) as { error: { status: string } }).error.status, 'NOT_FOUND')
})
