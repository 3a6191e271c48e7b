/** The official `@anthropic-ai/sdk` pointed directly at the mock reads every shape it produces. */
import assert from 'node:assert/strict'
import { after, before, beforeEach, describe, test } from 'node:test'
import Anthropic, { type APIError } from '@anthropic-ai/sdk'
import {
  expectedContent,
  expectedReasoning,
  type MockBehavior,
  type MockUpstream,
  promptTokensFor,
  signatureFor,
  startMockUpstream,
} from '../src/index.js'
import { behaviorHeader } from './helpers.js'

const messages: Anthropic.MessageParam[] = [{ role: 'user', content: 'What is the weather in Paris and in Rome?' }]
const calls = [
  { name: 'get_weather', arguments: { city: 'Paris', unit: 'celsius' } },
  { name: 'get_time', arguments: { zone: 'Europe/Rome', format: { hours: 24 } } },
]
const base = { model: 'claude-x', max_tokens: 1000, messages }

function behave(b: MockBehavior): { headers: Record<string, string> } {
  return { headers: { 'x-mock-behavior': behaviorHeader(b) } }
}

/** What a message says, without the per-request ids. */
function summary(message: Anthropic.Message): unknown[][] {
  return message.content.map((block) => {
    if (block.type === 'text') return ['text', block.text]
    if (block.type === 'thinking') return ['thinking', block.thinking, block.signature]
    if (block.type === 'tool_use') return ['tool_use', block.id.startsWith('toolu_'), block.name, block.input]
    return [block.type]
  })
}

describe('@anthropic-ai/sdk against the mock', () => {
  let mock: MockUpstream
  let client: Anthropic
  before(async () => {
    mock = await startMockUpstream()
    client = new Anthropic({ apiKey: 'sk-ant-test', baseURL: mock.url, maxRetries: 0 })
  })
  beforeEach(() => mock.reset())
  after(() => mock.close())

  const rich: MockBehavior = { tokens: 3, reasoning: 2, toolCalls: calls, cachedTokens: 5, cacheWriteTokens: 7 }
  const expectedBlocks = [
    ['thinking', expectedReasoning(2), signatureFor(2)],
    ['text', expectedContent(3)],
    ['tool_use', true, 'get_weather', calls[0]?.arguments],
    ['tool_use', true, 'get_time', calls[1]?.arguments],
  ]

  test('messages.create: thinking with signature, text, tool_use input, stop_reason tool_use, usage with cache fields', async () => {
    const message = await client.messages.create(base, behave(rich))
    assert.deepEqual(summary(message), expectedBlocks)
    assert.equal(message.stop_reason, 'tool_use')
    const prompt = promptTokensFor({ messages })
    const argumentTokens = calls.reduce((sum, c) => sum + Math.ceil(JSON.stringify(c.arguments).length / 8), 0)
    assert.equal(message.usage.input_tokens, prompt - 5 - 7, 'input_tokens excludes the cache reads and writes')
    assert.equal(message.usage.cache_read_input_tokens, 5)
    assert.equal(message.usage.cache_creation_input_tokens, 7)
    assert.equal(message.usage.output_tokens, 2 + 3 + argumentTokens)
  })

  test('messages.stream().finalMessage(): the same message assembled from the events', async () => {
    const stream = client.messages.stream(base, behave(rich))
    const events: string[] = []
    stream.on('streamEvent', (event) => {
      events.push(event.type === 'content_block_delta' ? event.delta.type : event.type)
    })
    const message = await stream.finalMessage()
    assert.deepEqual(summary(message), expectedBlocks)
    assert.equal(message.stop_reason, 'tool_use')
    assert.equal(message.usage.cache_read_input_tokens, 5)
    assert.equal(message.usage.cache_creation_input_tokens, 7)
    const created = await client.messages.create(base, behave(rich))
    assert.equal(message.usage.output_tokens, created.usage.output_tokens)
    assert.equal(message.usage.input_tokens, created.usage.input_tokens)
    // thinking_delta, then signature_delta, then text, then the tool inputs in several fragments
    const first = (type: string): number => events.indexOf(type)
    assert.ok(first('thinking_delta') < first('signature_delta') && first('signature_delta') < first('text_delta'))
    assert.ok(first('text_delta') < first('input_json_delta'))
    assert.ok(events.filter((e) => e === 'input_json_delta').length > calls.length, 'tool inputs arrive in fragments')
    assert.equal(events.at(-1), 'message_stop')
  })

  test('stop reasons: max_tokens, stop_sequence with the sequence, refusal, pause_turn', async () => {
    const capped = await client.messages.create({ ...base, max_tokens: 2 })
    assert.equal(capped.stop_reason, 'max_tokens')
    assert.deepEqual(summary(capped), [['text', expectedContent(2)]])

    const stopped = client.messages.stream({ ...base, stop_sequences: ['END', 'STOP'] }, behave({ finish: 'stop_sequence' }))
    const stoppedMessage = await stopped.finalMessage()
    assert.equal(stoppedMessage.stop_reason, 'stop_sequence')
    assert.equal(stoppedMessage.stop_sequence, 'END')

    const refused = await client.messages.create(base, behave({ finish: 'content_filter' }))
    assert.equal(refused.stop_reason, 'refusal')
    const paused = await client.messages.create(base, behave({ finish: 'pause' }))
    assert.equal(paused.stop_reason, 'pause_turn')
  })

  test('typed errors in Anthropic shape: each status gives its SDK error class and error type', async () => {
    const cases: [number, new (...args: never[]) => APIError, string][] = [
      [400, Anthropic.BadRequestError, 'invalid_request_error'],
      [401, Anthropic.AuthenticationError, 'authentication_error'],
      [403, Anthropic.PermissionDeniedError, 'permission_error'],
      [404, Anthropic.NotFoundError, 'not_found_error'],
      [429, Anthropic.RateLimitError, 'rate_limit_error'],
      [500, Anthropic.InternalServerError, 'api_error'],
      [529, Anthropic.OverloadedError, 'overloaded_error'],
    ]
    for (const [status, type, errorType] of cases) {
      const error = await client.messages.create(base, behave({ status, retryAfter: 2 })).catch((e: unknown) => e)
      assert.ok(error instanceof type, `${status} gives ${type.name}`)
      assert.equal(error.status, status)
      assert.equal(error.type, errorType)
      assert.deepEqual(error.error, {
        type: 'error',
        error: { type: errorType, message: `Mock error (status ${status})` },
        request_id: `req_mock_${mock.requests.at(-1)?.seq}`,
      })
      assert.equal(error.headers?.get('retry-after'), '2')
    }
  })

  test('an in-stream error event makes the stream throw the API error', async () => {
    const stream = client.messages.stream(base, behave({ fault: 'error-event', faultAfter: 2 }))
    let text = ''
    stream.on('text', (delta) => {
      text += delta
    })
    const error = await stream.finalMessage().catch((e: unknown) => e)
    assert.ok(error instanceof Anthropic.APIError)
    assert.equal(error.type, 'overloaded_error')
    assert.equal(text, expectedContent(2))
  })

  test('request checks: a 400 BadRequestError as api.anthropic.com gives it', async () => {
    const invalid: [Anthropic.MessageCreateParamsNonStreaming, RegExp][] = [
      [{ model: 'claude-x', messages } as unknown as Anthropic.MessageCreateParamsNonStreaming, /^max_tokens: Field required$/],
      [{ ...base, messages: [] }, /at least one message is required/],
      [
        {
          ...base,
          messages: [{ role: 'system', content: 'be brief' }, ...messages],
        } as unknown as Anthropic.MessageCreateParamsNonStreaming,
        /Unexpected role "system"/,
      ],
      [
        {
          ...base,
          messages: [
            ...messages,
            { role: 'assistant', content: 'Let me check.' },
            { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_x', content: '18' }] },
          ],
        },
        /unexpected `tool_use_id` found in `tool_result` blocks: toolu_x/,
      ],
      [
        {
          ...base,
          messages: [
            ...messages,
            { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_a', name: 'get_weather', input: {} }] },
            { role: 'user', content: 'and?' },
          ],
        },
        /`tool_use` ids were found without `tool_result` blocks immediately after: toolu_a/,
      ],
      [
        {
          ...base,
          messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }],
        } as unknown as Anthropic.MessageCreateParamsNonStreaming,
        /Input tag 'image_url'/,
      ],
      [
        { ...base, messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'url', url: 'data:image/png;base64,AAAA' } }] }] },
        /Unable to download the file/,
      ],
      [
        { ...base, messages: [...messages, { role: 'assistant', content: 'The answer is ' }] },
        /final assistant content cannot end with trailing whitespace/,
      ],
    ]
    for (const [body, message] of invalid) {
      const error = await client.messages.create(body).catch((e: unknown) => e)
      assert.ok(error instanceof Anthropic.BadRequestError, `${JSON.stringify(body.messages)} is rejected`)
      assert.equal(error.type, 'invalid_request_error')
      assert.match((error.error as { error: { message: string } }).error.message, message)
    }
    // A valid tool round trip passes.
    const ok = await client.messages.create({
      ...base,
      messages: [
        ...messages,
        { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_a', name: 'get_weather', input: { city: 'Paris' } }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_a', content: '18°C' }] },
      ],
    })
    assert.equal(ok.stop_reason, 'end_turn')
  })

  test('prefill: the final assistant turn is continued; rejectPrefill answers as models without prefill do', async () => {
    // Anthropic refuses a prefill ending with whitespace: the gateway sends the prefix trimmed.
    const prefix = expectedContent(3).trimEnd()
    const conversation: Anthropic.MessageParam[] = [...messages, { role: 'assistant', content: prefix }]
    const continued = await client.messages.stream({ ...base, messages: conversation }).finalMessage()
    assert.equal(prefix + summary(continued)[0]?.at(1), expectedContent(8))
    assert.equal(continued.usage.output_tokens, 5, 'tokens 3 to 7: the trimmed space comes first with token 3')

    const refused = await client.messages
      .create({ ...base, messages: conversation }, behave({ rejectPrefill: true }))
      .catch((e: unknown) => e)
    assert.ok(refused instanceof Anthropic.BadRequestError)
    assert.match(refused.message, /does not support assistant message prefill/)
  })

  test('a gzip-compressed stream with CR line endings reads the same', async () => {
    for (const lineEnding of ['cr', 'crlf'] as const) {
      const message = await client.messages.stream(base, behave({ ...rich, contentEncoding: 'gzip', lineEnding })).finalMessage()
      assert.deepEqual(summary(message), expectedBlocks, lineEnding)
    }
  })
})
