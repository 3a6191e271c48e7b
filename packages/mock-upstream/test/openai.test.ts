import assert from 'node:assert/strict'
import { after, before, beforeEach, describe, test } from 'node:test'
import { expectedContent, type MockUpstream, promptTokensFor, startMockUpstream } from '../src/index.js'
import { get, parseSse, post, sseJson } from './helpers.js'

const messages = [{ role: 'user', content: 'Hello there' }]

describe('OpenAI endpoints', () => {
  let mock: MockUpstream
  before(async () => {
    mock = await startMockUpstream({ models: ['m-1', 'm-2'] })
  })
  beforeEach(() => mock.reset())
  after(() => mock.close())

  test('chat completion, non-streamed: content, model echo and usage', async () => {
    const res = await post(mock, '/v1/chat/completions', { model: 'gpt-x', messages })
    assert.equal(res.status, 200)
    assert.match(String(res.headers['content-type']), /application\/json/)
    const body = JSON.parse(res.text)
    assert.equal(body.object, 'chat.completion')
    assert.equal(body.model, 'gpt-x')
    assert.equal(body.choices[0].message.role, 'assistant')
    assert.equal(body.choices[0].message.content, expectedContent(8))
    assert.equal(body.choices[0].finish_reason, 'stop')
    const prompt = promptTokensFor({ messages })
    assert.ok(prompt > 0)
    assert.deepEqual(body.usage, {
      prompt_tokens: prompt,
      completion_tokens: 8,
      total_tokens: prompt + 8,
      prompt_tokens_details: { cached_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0 },
    })
  })

  test('chat completion, streamed without include_usage: no usage anywhere, [DONE] last', async () => {
    const res = await post(mock, '/v1/chat/completions', { model: 'gpt-x', messages, stream: true })
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-type'], 'text/event-stream')
    const events = parseSse(res.text)
    assert.equal(events.at(-1)?.data, '[DONE]')
    const chunks = sseJson(res.text)
    assert.equal(chunks.length, 1 + 8 + 1)
    for (const chunk of chunks) {
      assert.equal(chunk.object, 'chat.completion.chunk')
      assert.equal(chunk.model, 'gpt-x')
      assert.equal('usage' in chunk, false)
    }
    const choices = chunks.map((c) => (c.choices as { delta: { role?: string; content?: string }; finish_reason: string | null }[])[0])
    assert.deepEqual(choices[0]?.delta, { role: 'assistant', content: '' })
    assert.equal(choices.map((c) => c?.delta.content ?? '').join(''), expectedContent(8))
    assert.equal(choices.at(-1)?.finish_reason, 'stop')
    assert.ok(choices.slice(0, -1).every((c) => c?.finish_reason === null))
  })

  test('chat completion, streamed with include_usage: usage chunk with empty choices, "usage":null on the others', async () => {
    const res = await post(mock, '/v1/chat/completions', {
      model: 'gpt-x',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    })
    const chunks = sseJson(res.text)
    assert.equal(chunks.length, 1 + 8 + 1 + 1)
    const usageChunk = chunks.at(-1)
    assert.deepEqual(usageChunk?.choices, [])
    const prompt = promptTokensFor({ messages })
    assert.deepEqual(usageChunk?.usage, {
      prompt_tokens: prompt,
      completion_tokens: 8,
      total_tokens: prompt + 8,
      prompt_tokens_details: { cached_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0 },
    })
    for (const chunk of chunks.slice(0, -1)) assert.equal(chunk.usage, null)
    assert.equal(parseSse(res.text).at(-1)?.data, '[DONE]')
  })

  test('usage: false never reports usage, even with include_usage', async () => {
    const streamed = await post(mock, '/v1/chat/completions', {
      messages,
      stream: true,
      stream_options: { include_usage: true },
      mock: { usage: false, tokens: 2 },
    })
    const chunks = sseJson(streamed.text)
    assert.equal(chunks.length, 1 + 2 + 1)
    assert.ok(chunks.every((c) => !('usage' in c)))
    const plain = JSON.parse((await post(mock, '/v1/chat/completions', { messages, mock: { usage: false } })).text)
    assert.equal('usage' in plain, false)
  })

  test('max_tokens and max_completion_tokens cap the tokens, finish_reason length', async () => {
    const capped = JSON.parse((await post(mock, '/v1/chat/completions', { messages, max_tokens: 3 })).text)
    assert.equal(capped.choices[0].message.content, expectedContent(3))
    assert.equal(capped.choices[0].finish_reason, 'length')
    assert.equal(capped.usage.completion_tokens, 3)
    const streamed = await post(mock, '/v1/chat/completions', { messages, max_completion_tokens: 2, stream: true })
    const choices = sseJson(streamed.text).map((c) => (c.choices as { delta: { content?: string }; finish_reason: string | null }[])[0])
    assert.equal(choices.map((c) => c?.delta.content ?? '').join(''), expectedContent(2))
    assert.equal(choices.at(-1)?.finish_reason, 'length')
    const notCapped = JSON.parse((await post(mock, '/v1/chat/completions', { messages, max_tokens: 100 })).text)
    assert.equal(notCapped.usage.completion_tokens, 8)
    assert.equal(notCapped.choices[0].finish_reason, 'stop')
  })

  test('model defaults to the first of `models` when the request names none', async () => {
    const body = JSON.parse((await post(mock, '/v1/chat/completions', { messages })).text)
    assert.equal(body.model, 'm-1')
  })

  test('completions, non-streamed and streamed (include_usage on)', async () => {
    const plain = JSON.parse((await post(mock, '/v1/completions', { model: 'c', prompt: 'Say hi', mock: { tokens: 5 } })).text)
    assert.equal(plain.object, 'text_completion')
    assert.equal(plain.choices[0].text, expectedContent(5))
    const prompt = promptTokensFor({ prompt: 'Say hi' })
    assert.equal(plain.usage.prompt_tokens, prompt)
    assert.equal(plain.usage.completion_tokens, 5)
    assert.equal(plain.usage.total_tokens, prompt + 5)

    const res = await post(mock, '/v1/completions', { model: 'c', prompt: 'Say hi', stream: true, stream_options: { include_usage: true } })
    const chunks = sseJson(res.text)
    const usage = chunks.at(-1) ?? {}
    assert.deepEqual(usage.choices, [])
    assert.equal((usage.usage as { completion_tokens: number }).completion_tokens, 8)
    const texts = chunks.slice(0, -1).map((c) => (c.choices as { text: string }[])[0]?.text)
    assert.equal(texts.join(''), expectedContent(8))
    assert.ok(chunks.slice(0, -1).every((c) => c.object === 'text_completion' && c.usage === null))
    assert.equal(parseSse(res.text).at(-1)?.data, '[DONE]')
  })

  test('responses, non-streamed: output message and usage', async () => {
    const body = JSON.parse((await post(mock, '/v1/responses', { model: 'r', input: 'Hi' })).text)
    assert.equal(body.object, 'response')
    assert.equal(body.status, 'completed')
    assert.equal(body.model, 'r')
    assert.equal(body.output[0].content[0].text, expectedContent(8))
    const prompt = promptTokensFor({ input: 'Hi' })
    assert.deepEqual(body.usage, {
      input_tokens: prompt,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: 8,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: prompt + 8,
    })
  })

  test('responses, streamed: created … deltas … completed with usage; max_output_tokens gives incomplete', async () => {
    const res = await post(mock, '/v1/responses', { model: 'r', input: 'Hi', stream: true })
    const events = parseSse(res.text)
    assert.equal(events[0]?.event, 'response.created')
    assert.equal(events.at(-1)?.event, 'response.completed')
    const deltas = events.filter((e) => e.event === 'response.output_text.delta').map((e) => JSON.parse(e.data).delta)
    assert.equal(deltas.join(''), expectedContent(8))
    const sequence = events.map((e) => JSON.parse(e.data).sequence_number)
    assert.deepEqual(
      sequence,
      events.map((_, i) => i),
    )
    for (const e of events) assert.equal(JSON.parse(e.data).type, e.event)
    const completed = JSON.parse(events.at(-1)?.data ?? '{}')
    assert.equal(completed.response.usage.output_tokens, 8)
    assert.equal(completed.response.usage.input_tokens, promptTokensFor({ input: 'Hi' }))

    const capped = parseSse((await post(mock, '/v1/responses', { input: 'Hi', stream: true, max_output_tokens: 3 })).text)
    const last = JSON.parse(capped.at(-1)?.data ?? '{}')
    assert.equal(capped.at(-1)?.event, 'response.incomplete')
    assert.deepEqual(last.response.incomplete_details, { reason: 'max_output_tokens' })
    assert.equal(last.response.usage.output_tokens, 3)
  })

  test('embeddings: deterministic vectors, 8 dims or `dimensions`, usage', async () => {
    const one = JSON.parse((await post(mock, '/v1/embeddings', { model: 'e', input: 'hello' })).text)
    assert.equal(one.object, 'list')
    assert.equal(one.model, 'e')
    assert.equal(one.data.length, 1)
    assert.equal(one.data[0].embedding.length, 8)
    const prompt = promptTokensFor({ input: 'hello' })
    assert.deepEqual(one.usage, { prompt_tokens: prompt, total_tokens: prompt })
    const again = JSON.parse((await post(mock, '/v1/embeddings', { model: 'e', input: 'hello' })).text)
    assert.deepEqual(again.data, one.data)
    const many = JSON.parse((await post(mock, '/v1/embeddings', { input: ['a', 'bb', 'ccc'], dimensions: 4 })).text)
    assert.deepEqual(
      many.data.map((d: { index: number; embedding: number[] }) => [d.index, d.embedding.length]),
      [
        [0, 4],
        [1, 4],
        [2, 4],
      ],
    )
  })

  test('GET /v1/models lists the `models` option', async () => {
    const res = await get(mock, '/v1/models')
    assert.equal(res.status, 200)
    const body = JSON.parse(res.text)
    assert.equal(body.object, 'list')
    assert.deepEqual(
      body.data.map((m: { id: string }) => m.id),
      ['m-1', 'm-2'],
    )
  })

  test('promptTokensFor: ceil(bytes of JSON of messages ?? prompt ?? input ?? contents ?? inputs / 4)', () => {
    assert.equal(promptTokensFor({ messages: 'abcdef' }), 2)
    assert.equal(promptTokensFor({ prompt: 'é' }), 1)
    assert.equal(promptTokensFor({ inputs: 'abcdefghijklmn' }), 4)
    assert.equal(promptTokensFor({ model: 'x' }), 0)
    assert.equal(promptTokensFor('not an object'), 0)
  })

  test('expectedContent concatenates word tokens', () => {
    assert.equal(expectedContent(0), '')
    assert.equal(expectedContent(3), 'lorem ipsum dolor ')
    assert.equal(expectedContent(20).split(' ').length, 21)
  })
})
