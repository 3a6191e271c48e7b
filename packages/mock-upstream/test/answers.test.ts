/** The wire shape of answers with reasoning, tool calls, forced finishes and cache usage, event by event. */
import assert from 'node:assert/strict'
import { after, before, beforeEach, describe, test } from 'node:test'
import { request } from 'undici'
import {
  expectedContent,
  expectedReasoning,
  type MockUpstream,
  promptTokensFor,
  REDACTED_THINKING_DATA,
  signatureFor,
  startMockUpstream,
} from '../src/index.js'
import { parseSse, post, sseJson } from './helpers.js'

const messages = [{ role: 'user', content: 'Weather?' }]
const contents = [{ role: 'user', parts: [{ text: 'Weather?' }] }]
const toolCalls = [
  { name: 'get_weather', arguments: { city: 'Paris' } },
  { name: 'get_time', arguments: {} },
]

describe('rich answers on the wire', () => {
  let mock: MockUpstream
  before(async () => {
    mock = await startMockUpstream()
  })
  beforeEach(() => mock.reset())
  after(() => mock.close())

  test('Anthropic stream: thinking (thinking_delta, signature_delta), text, tool_use blocks numbered 0…3', async () => {
    const res = await post(mock, '/v1/messages', {
      max_tokens: 100,
      messages,
      stream: true,
      mock: { reasoning: 2, tokens: 2, toolCalls, cachedTokens: 3, cacheWriteTokens: 1 },
    })
    const events = parseSse(res.text).map((e) => ({ name: e.event, data: JSON.parse(e.data) }))
    const lines = events.map(({ name, data }) => {
      if (name === 'content_block_start') return `start ${data.index} ${data.content_block.type}`
      if (name === 'content_block_delta') return `delta ${data.index} ${data.delta.type}`
      if (name === 'content_block_stop') return `stop ${data.index}`
      return name
    })
    const fragments = (args: object) => Array.from({ length: Math.ceil(JSON.stringify(args).length / 8) }, () => 'x')
    assert.deepEqual(lines, [
      'message_start',
      'start 0 thinking',
      'ping',
      'delta 0 thinking_delta',
      'delta 0 thinking_delta',
      'delta 0 signature_delta',
      'stop 0',
      'start 1 text',
      'delta 1 text_delta',
      'delta 1 text_delta',
      'stop 1',
      'start 2 tool_use',
      ...fragments({ city: 'Paris' }).map(() => 'delta 2 input_json_delta'),
      'stop 2',
      'start 3 tool_use',
      ...fragments({}).map(() => 'delta 3 input_json_delta'),
      'stop 3',
      'message_delta',
      'message_stop',
    ])
    const start = events[0]?.data.message
    assert.deepEqual(start.usage, {
      input_tokens: promptTokensFor({ messages }) - 4,
      output_tokens: 1,
      cache_creation_input_tokens: 1,
      cache_read_input_tokens: 3,
    })
    const thinking = events.filter((e) => e.data.delta?.type === 'thinking_delta').map((e) => e.data.delta.thinking)
    assert.equal(thinking.join(''), expectedReasoning(2))
    assert.equal(events.find((e) => e.data.delta?.type === 'signature_delta')?.data.delta.signature, signatureFor(2))
    const toolStart = events.find((e) => e.data.content_block?.type === 'tool_use')?.data.content_block
    assert.deepEqual(toolStart, { type: 'tool_use', id: `toolu_mock_${mock.requests[0]?.seq}_0`, name: 'get_weather', input: {} })
    const json = events
      .filter((e) => e.data.index === 2 && e.data.delta?.type === 'input_json_delta')
      .map((e) => e.data.delta.partial_json)
      .join('')
    assert.deepEqual(JSON.parse(json), { city: 'Paris' })
    const delta = events.at(-2)?.data
    assert.equal(delta.delta.stop_reason, 'tool_use')
    assert.equal(delta.usage.output_tokens, 2 + 2 + 2 + 1)
  })

  test('Anthropic redactedThinking: a redacted_thinking block after the signed thinking block, streamed and not', async () => {
    const behavior = { reasoning: 2, tokens: 0, toolCalls: toolCalls.slice(0, 1), redactedThinking: true }
    const streamed = await post(mock, '/v1/messages', { max_tokens: 100, messages, stream: true, mock: behavior })
    const events = parseSse(streamed.text).map((e) => JSON.parse(e.data))
    const starts = events.filter((e) => e.type === 'content_block_start').map((e) => [e.index, e.content_block.type])
    assert.deepEqual(starts, [
      [0, 'thinking'],
      [1, 'redacted_thinking'],
      [2, 'tool_use'],
    ])
    assert.deepEqual(events.find((e) => e.content_block?.type === 'redacted_thinking')?.content_block, {
      type: 'redacted_thinking',
      data: REDACTED_THINKING_DATA,
    })
    // The signature says a redacted block follows (the request checks tell when it does not come back).
    const signature = events.find((e) => e.delta?.type === 'signature_delta')?.delta.signature
    assert.equal(signature, signatureFor(2, true))
    assert.notEqual(signature, signatureFor(2))
    const whole = JSON.parse((await post(mock, '/v1/messages', { max_tokens: 100, messages, mock: behavior })).text)
    assert.deepEqual(whole.content.slice(0, 2), [
      { type: 'thinking', thinking: expectedReasoning(2), signature: signatureFor(2, true) },
      { type: 'redacted_thinking', data: REDACTED_THINKING_DATA },
    ])
  })

  test('OpenAI chat stream: reasoning_content deltas, then content, then tool_calls by index', async () => {
    const res = await post(mock, '/v1/chat/completions', { messages, stream: true, mock: { reasoning: 1, tokens: 1, toolCalls } })
    const deltas = sseJson(res.text).map((c) => (c.choices as { delta: Record<string, unknown>; finish_reason: string | null }[])[0])
    assert.deepEqual(deltas[0]?.delta, { role: 'assistant', content: '' })
    assert.deepEqual(deltas[1]?.delta, { reasoning_content: expectedReasoning(1) })
    assert.deepEqual(deltas[2]?.delta, { content: expectedContent(1) })
    const seq = mock.requests[0]?.seq
    assert.deepEqual(deltas[3]?.delta, {
      tool_calls: [{ index: 0, id: `call_mock_${seq}_0`, type: 'function', function: { name: 'get_weather', arguments: '' } }],
    })
    assert.deepEqual(deltas[4]?.delta, { tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] })
    assert.equal(deltas.at(-1)?.finish_reason, 'tool_calls')
  })

  test('Gemini JSON array stream: thought, text, functionCall and last elements, a valid array', async () => {
    const res = await request(`${mock.url}/v1beta/models/g:streamGenerateContent`, {
      method: 'POST',
      body: JSON.stringify({ contents, mock: { reasoning: 1, tokens: 1, toolCalls: toolCalls.slice(0, 1), cachedTokens: 2 } }),
    })
    const array = (await res.body.json()) as {
      candidates: { content: { parts: Record<string, unknown>[] }; finishReason?: string }[]
      usageMetadata: Record<string, number>
    }[]
    assert.deepEqual(
      array.map((e) => e.candidates[0]?.content.parts[0]),
      [
        { text: expectedReasoning(1), thought: true, thoughtSignature: signatureFor(1) },
        { text: expectedContent(1) },
        { functionCall: { name: 'get_weather', args: { city: 'Paris' } }, thoughtSignature: signatureFor(1) },
        { text: '' },
      ],
    )
    assert.equal(array.at(-1)?.candidates[0]?.finishReason, 'STOP')
    const prompt = promptTokensFor({ contents })
    assert.deepEqual(array.at(-1)?.usageMetadata, {
      promptTokenCount: prompt,
      candidatesTokenCount: 1 + 2,
      totalTokenCount: prompt + 1 + 1 + 2,
      thoughtsTokenCount: 1,
      cachedContentTokenCount: 2,
    })
  })

  test('forced finishes, mapped to each format', async () => {
    const expected: Record<string, [string, string, string]> = {
      stop: ['stop', 'end_turn', 'STOP'],
      length: ['length', 'max_tokens', 'MAX_TOKENS'],
      content_filter: ['content_filter', 'refusal', 'SAFETY'],
      stop_sequence: ['stop', 'stop_sequence', 'STOP'],
      malformed_function_call: ['stop', 'end_turn', 'MALFORMED_FUNCTION_CALL'],
      pause: ['stop', 'pause_turn', 'STOP'],
    }
    for (const [finish, [openai, anthropic, gemini]] of Object.entries(expected)) {
      const mockField = { finish, toolCalls }
      const chat = JSON.parse((await post(mock, '/v1/chat/completions', { messages, mock: mockField })).text)
      assert.equal(chat.choices[0].finish_reason, openai, finish)
      const message = JSON.parse(
        (await post(mock, '/v1/messages', { max_tokens: 100, messages, stop_sequences: ['##'], mock: mockField })).text,
      )
      assert.equal(message.stop_reason, anthropic, finish)
      assert.equal(message.stop_sequence, finish === 'stop_sequence' ? '##' : null)
      const generated = JSON.parse((await post(mock, '/v1beta/models/g:generateContent', { contents, mock: mockField })).text)
      assert.equal(generated.candidates[0].finishReason, gemini, finish)
    }
  })

  test('completions, Responses and TGI answer text only; finish and cache usage still apply', async () => {
    const mockField = { reasoning: 3, toolCalls, tokens: 2, cachedTokens: 1, finish: 'content_filter' }
    const completion = JSON.parse((await post(mock, '/v1/completions', { prompt: 'x', mock: mockField })).text)
    assert.equal(completion.choices[0].text, expectedContent(2))
    assert.equal(completion.choices[0].finish_reason, 'content_filter')
    assert.equal(completion.usage.completion_tokens, 2)
    assert.equal(completion.usage.prompt_tokens_details.cached_tokens, 1)
    const response = JSON.parse((await post(mock, '/v1/responses', { input: 'x', mock: mockField })).text)
    assert.equal(response.status, 'incomplete')
    assert.deepEqual(response.incomplete_details, { reason: 'content_filter' })
    assert.equal(response.usage.output_tokens, 2)
    assert.equal(response.usage.input_tokens_details.cached_tokens, 1)
    const tgi = JSON.parse((await post(mock, '/generate', { inputs: 'x', mock: { ...mockField, finish: 'stop_sequence' } })).text)
    assert.deepEqual(tgi, {
      generated_text: expectedContent(2),
      details: { finish_reason: 'stop_sequence', generated_tokens: 2, seed: null },
    })
  })

  test('a literal text is split into tokens after each space', async () => {
    const res = await post(mock, '/v1/chat/completions', { messages, stream: true, mock: { text: 'héllo  wörld ✓' } })
    const pieces = sseJson(res.text)
      .map((c) => (c.choices as { delta: { content?: string } }[])[0]?.delta.content)
      .filter((t) => t !== undefined && t !== '')
    assert.deepEqual(pieces, ['héllo ', ' ', 'wörld ', '✓'])
  })

  test('prompt tokens are at least the cached and cache-written tokens', async () => {
    const body = JSON.parse(
      (await post(mock, '/v1/chat/completions', { messages, mock: { cachedTokens: 500, cacheWriteTokens: 20 } })).text,
    )
    assert.equal(body.usage.prompt_tokens, 520)
    const message = JSON.parse(
      (await post(mock, '/v1/messages', { max_tokens: 9, messages, mock: { cachedTokens: 500, cacheWriteTokens: 20 } })).text,
    )
    assert.deepEqual(message.usage, { input_tokens: 0, output_tokens: 8, cache_creation_input_tokens: 20, cache_read_input_tokens: 500 })
  })

  test("the mock's own errors take the route's shape; unknown routes keep OpenAI's", async () => {
    const anthropic = await post(mock, '/v1/messages', { max_tokens: 9, messages, mock: { tokens: -1 } })
    assert.equal(anthropic.status, 400)
    assert.equal(JSON.parse(anthropic.text).error.type, 'invalid_request_error')
    assert.match(JSON.parse(anthropic.text).error.message, /Invalid mock behavior: body mock: tokens must be an integer >= 0/)
    const gemini = await post(mock, '/v1beta/models/g:generateContent', { contents, mock: { fault: 'nope' } })
    assert.equal(JSON.parse(gemini.text).error.status, 'INVALID_ARGUMENT')
    const unknown = await post(mock, '/v1beta/models/g:countTokens', { contents })
    assert.equal(JSON.parse(unknown.text).error.code, 'mock_not_found')
  })
})
