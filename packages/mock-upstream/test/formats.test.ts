import assert from 'node:assert/strict'
import { after, before, beforeEach, describe, test } from 'node:test'
import { request } from 'undici'
import { expectedContent, type MockUpstream, promptTokensFor, startMockUpstream } from '../src/index.js'
import { get, parseSse, post, sseJson } from './helpers.js'

const messages = [{ role: 'user', content: 'Bonjour' }]
const contents = [{ role: 'user', parts: [{ text: 'Hallo' }] }]

describe('Anthropic, Gemini, TGI and other routes', () => {
  let mock: MockUpstream
  before(async () => {
    mock = await startMockUpstream({ defaults: { tokens: 5 } })
  })
  beforeEach(() => mock.reset())
  after(() => mock.close())

  test('anthropic messages, non-streamed', async () => {
    const body = JSON.parse((await post(mock, '/v1/messages', { model: 'claude-x', max_tokens: 100, messages })).text)
    assert.equal(body.type, 'message')
    assert.equal(body.model, 'claude-x')
    assert.equal(body.content[0].text, expectedContent(5))
    assert.equal(body.stop_reason, 'end_turn')
    assert.deepEqual(body.usage, {
      input_tokens: promptTokensFor({ messages }),
      output_tokens: 5,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
    })
  })

  test('anthropic messages, streamed: the real event sequence and usage', async () => {
    const res = await post(mock, '/v1/messages', { model: 'claude-x', max_tokens: 3, messages, stream: true })
    assert.equal(res.headers['content-type'], 'text/event-stream')
    const events = parseSse(res.text)
    assert.deepEqual(
      events.map((e) => e.event),
      [
        'message_start',
        'content_block_start',
        'ping',
        'content_block_delta',
        'content_block_delta',
        'content_block_delta',
        'content_block_stop',
        'message_delta',
        'message_stop',
      ],
    )
    for (const e of events) assert.equal(JSON.parse(e.data).type, e.event)
    const start = JSON.parse(events[0]?.data ?? '{}')
    assert.equal(start.message.usage.input_tokens, promptTokensFor({ messages }))
    assert.equal(start.message.usage.output_tokens, 1)
    const text = events.filter((e) => e.event === 'content_block_delta').map((e) => JSON.parse(e.data).delta.text)
    assert.equal(text.join(''), expectedContent(3))
    const delta = JSON.parse(events[7]?.data ?? '{}')
    assert.equal(delta.usage.output_tokens, 3)
    assert.equal(delta.delta.stop_reason, 'max_tokens')
  })

  test('gemini generateContent: model from the path, usageMetadata', async () => {
    const body = JSON.parse((await post(mock, '/v1beta/models/gemini-pro:generateContent', { contents })).text)
    assert.equal(body.modelVersion, 'gemini-pro')
    assert.equal(body.candidates[0].content.parts[0].text, expectedContent(5))
    assert.equal(body.candidates[0].finishReason, 'STOP')
    const prompt = promptTokensFor({ contents })
    assert.deepEqual(body.usageMetadata, { promptTokenCount: prompt, candidatesTokenCount: 5, totalTokenCount: prompt + 5 })
  })

  test('gemini streamGenerateContent?alt=sse: one event per token with cumulative usageMetadata', async () => {
    const res = await post(mock, '/v1beta/models/gemini-pro:streamGenerateContent?alt=sse', {
      contents,
      generationConfig: { maxOutputTokens: 4 },
    })
    assert.equal(res.headers['content-type'], 'text/event-stream')
    const events = sseJson(res.text) as {
      candidates: { content: { parts: { text: string }[] }; finishReason?: string }[]
      usageMetadata: { candidatesTokenCount: number; promptTokenCount: number; totalTokenCount: number }
    }[]
    const prompt = promptTokensFor({ contents })
    assert.equal(events.map((e) => e.candidates[0]?.content.parts[0]?.text).join(''), expectedContent(4))
    assert.deepEqual(
      events.map((e) => e.usageMetadata.candidatesTokenCount),
      [1, 2, 3, 4, 4],
    )
    assert.ok(events.every((e) => e.usageMetadata.promptTokenCount === prompt))
    assert.equal(events.at(-1)?.usageMetadata.totalTokenCount, prompt + 4)
    assert.equal(events.at(-1)?.candidates[0]?.finishReason, 'MAX_TOKENS')
  })

  test('gemini streamGenerateContent without alt=sse: a JSON array written progressively', async () => {
    const res = await request(`${mock.url}/v1beta/models/gemini-pro:streamGenerateContent`, {
      method: 'POST',
      body: JSON.stringify({ contents, mock: { gapMs: 20 } }),
    })
    assert.match(String(res.headers['content-type']), /application\/json/)
    const parts: string[] = []
    for await (const chunk of res.body) parts.push(String(chunk))
    assert.ok(parts.length >= 3, `expected the array in several chunks, got ${parts.length}`)
    const array = JSON.parse(parts.join('')) as { candidates: { content: { parts: { text: string }[] } }[] }[]
    assert.equal(array.length, 6)
    assert.equal(array.map((e) => e.candidates[0]?.content.parts[0]?.text).join(''), expectedContent(5))
  })

  test('TGI /generate: generated_text and details', async () => {
    const body = JSON.parse((await post(mock, '/generate', { inputs: 'Hi', parameters: { max_new_tokens: 2 } })).text)
    assert.deepEqual(body, { generated_text: expectedContent(2), details: { finish_reason: 'length', generated_tokens: 2, seed: null } })
  })

  test('dialect tgi: /v1/chat/completions as TGI writes it, usage in the choices: [] chunk and in the body', async () => {
    const tgi = { mock: { dialect: 'tgi' } }
    const head = '{"object":"chat.completion.chunk","id":"","created":'
    const stream = await post(mock, '/v1/chat/completions', {
      ...tgi,
      model: 'm',
      stream: true,
      stream_options: { include_usage: true },
      messages,
    })
    assert.ok(stream.text.startsWith(`data:${head}`), 'axum writes no space after data:')
    assert.ok(stream.text.endsWith('\n\ndata:[DONE]\n\n'))
    const chunks = sseJson(stream.text.slice(0, -'data:[DONE]\n\n'.length)) as {
      choices: { delta: { role: string; content: string }; finish_reason: string | null }[]
      usage: Record<string, number> | null
    }[]
    assert.equal(chunks.length, 7, 'a chunk per token, the end-of-sequence chunk with the finish, the usage chunk')
    assert.ok(chunks.slice(0, -1).every((c) => c.usage === null && c.choices[0]?.delta.role === 'assistant'))
    assert.equal(chunks.map((c) => c.choices[0]?.delta.content ?? '').join(''), expectedContent(5))
    assert.equal(chunks.at(-2)?.choices[0]?.finish_reason, 'stop')
    const usage = { prompt_tokens: promptTokensFor({ messages }), completion_tokens: 5, total_tokens: promptTokensFor({ messages }) + 5 }
    assert.deepEqual(chunks.at(-1)?.choices, [])
    assert.deepEqual(chunks.at(-1)?.usage, usage)
    const plain = await post(mock, '/v1/chat/completions', { ...tgi, model: 'm', stream: true, messages })
    assert.ok(!plain.text.includes('"choices":[]'), 'no usage chunk unless asked')
    const body = JSON.parse((await post(mock, '/v1/chat/completions', { ...tgi, model: 'm', messages })).text)
    assert.equal(body.id, '')
    assert.deepEqual(body.choices, [
      { index: 0, message: { role: 'assistant', content: expectedContent(5) }, logprobs: null, finish_reason: 'stop' },
    ])
    assert.deepEqual(body.usage, usage)
  })

  test('TGI /generate_stream: token events, the last carries generated_text and details', async () => {
    const res = await post(mock, '/generate_stream', { inputs: 'Hi' })
    assert.equal(res.headers['content-type'], 'text/event-stream')
    assert.ok(res.text.startsWith('data:{"index":0,'))
    const events = sseJson(res.text) as {
      index: number
      token: { id: number; text: string; logprob: number; special: boolean }
      generated_text: string | null
      details: { finish_reason: string; generated_tokens: number } | null
    }[]
    assert.equal(events.length, 5)
    assert.deepEqual(
      events.map((e) => e.index),
      [0, 1, 2, 3, 4],
    )
    assert.equal(events.map((e) => e.token.text).join(''), expectedContent(5))
    assert.ok(events.slice(0, -1).every((e) => e.generated_text === null && e.details === null))
    assert.equal(events.at(-1)?.generated_text, expectedContent(5))
    assert.equal(events.at(-1)?.details?.generated_tokens, 5)
    assert.equal(events.at(-1)?.details?.finish_reason, 'eos_token')
  })

  test('GET /health and /info', async () => {
    assert.equal((await get(mock, '/health')).status, 200)
    const info = await get(mock, '/info')
    assert.equal(info.status, 200)
    assert.equal(JSON.parse(info.text).model_id, 'mock-model')
  })

  test('unknown path or method: 404 with an OpenAI-shaped error', async () => {
    for (const res of [
      await post(mock, '/v2/nothing', {}),
      await get(mock, '/v1/chat/completions'),
      await post(mock, '/v1beta/models/x:explode', {}),
    ]) {
      assert.equal(res.status, 404)
      const body = JSON.parse(res.text)
      assert.equal(body.error.type, 'not_found_error')
      assert.equal(body.error.code, 'mock_not_found')
      assert.equal(typeof body.error.message, 'string')
    }
  })

  test('a body that is not a JSON object: 400, recorded as the raw string', async () => {
    const res = await request(`${mock.url}/v1/chat/completions`, { method: 'POST', body: 'hello' })
    assert.equal(res.statusCode, 400)
    assert.equal(((await res.body.json()) as { error: { code: string } }).error.code, 'mock_invalid_body')
    assert.equal(mock.requests[0]?.body, 'hello')
  })
})
