/** The official `openai` SDK pointed directly at the mock reads every shape it produces. */
import assert from 'node:assert/strict'
import { after, before, beforeEach, describe, test } from 'node:test'
import OpenAI from 'openai'
import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions'
import {
  expectedContent,
  expectedReasoning,
  type MockBehavior,
  type MockUpstream,
  promptTokensFor,
  startMockUpstream,
} from '../src/index.js'
import { behaviorHeader } from './helpers.js'

const messages: ChatCompletionMessageParam[] = [{ role: 'user', content: 'What is the weather in Paris and in Rome?' }]
const calls = [
  { name: 'get_weather', arguments: { city: 'Paris', unit: 'celsius', days: [1, 2] } },
  { name: 'get_weather', arguments: { city: 'Rome', note: 'naïve "quotes" ✓' } },
]

/** Request options that set the mock's behavior through its header. */
function behave(b: MockBehavior): { headers: Record<string, string> } {
  return { headers: { 'x-mock-behavior': behaviorHeader(b) } }
}

/** vLLM's field, absent from the SDK's types. */
function reasoningOf(value: object): string | undefined {
  return (value as { reasoning_content?: string }).reasoning_content
}

describe('openai SDK against the mock', () => {
  let mock: MockUpstream
  let client: OpenAI
  before(async () => {
    mock = await startMockUpstream()
    client = new OpenAI({ apiKey: 'sk-test', baseURL: `${mock.url}/v1`, maxRetries: 0 })
  })
  beforeEach(() => mock.reset())
  after(() => mock.close())

  test('create, not streamed: content, reasoning_content, usage with cached and reasoning tokens', async () => {
    const res = await client.chat.completions.create(
      { model: 'gpt-x', messages },
      behave({ tokens: 5, reasoning: 3, cachedTokens: 4, cacheWriteTokens: 2 }),
    )
    const choice = res.choices[0]
    assert.equal(choice?.message.content, expectedContent(5))
    assert.equal(reasoningOf(choice?.message ?? {}), expectedReasoning(3))
    assert.equal(choice?.finish_reason, 'stop')
    const prompt = promptTokensFor({ messages })
    assert.deepEqual(res.usage, {
      prompt_tokens: prompt,
      completion_tokens: 8,
      total_tokens: prompt + 8,
      prompt_tokens_details: { cached_tokens: 4 },
      completion_tokens_details: { reasoning_tokens: 3 },
    })
  })

  test('create, streamed: reasoning deltas before content deltas, then the usage chunk', async () => {
    const stream = await client.chat.completions.create(
      { model: 'gpt-x', messages, stream: true, stream_options: { include_usage: true } },
      behave({ tokens: 4, reasoning: 2, cachedTokens: 3 }),
    )
    const order: string[] = []
    let content = ''
    let reasoning = ''
    let finish: string | null = null
    let usage: OpenAI.CompletionUsage | null | undefined
    for await (const chunk of stream) {
      const delta = chunk.choices[0]?.delta
      if (delta?.content) {
        content += delta.content
        order.push('content')
      }
      const thought = reasoningOf(delta ?? {})
      if (thought !== undefined) {
        reasoning += thought
        order.push('reasoning')
      }
      finish = chunk.choices[0]?.finish_reason ?? finish
      if (chunk.usage) usage = chunk.usage
    }
    assert.equal(content, expectedContent(4))
    assert.equal(reasoning, expectedReasoning(2))
    assert.deepEqual(order, ['reasoning', 'reasoning', 'content', 'content', 'content', 'content'])
    assert.equal(finish, 'stop')
    assert.equal(usage?.completion_tokens, 6)
    assert.equal(usage?.completion_tokens_details?.reasoning_tokens, 2)
    assert.equal(usage?.prompt_tokens_details?.cached_tokens, 3)
  })

  test('parallel tool calls, streamed: deltas as OpenAI streams them, assembled by the SDK with parsed arguments', async () => {
    const stream = await client.chat.completions.create({ model: 'gpt-x', messages, stream: true }, behave({ tokens: 2, toolCalls: calls }))
    const deltas: OpenAI.Chat.Completions.ChatCompletionChunk.Choice.Delta.ToolCall[] = []
    for await (const chunk of stream) deltas.push(...(chunk.choices[0]?.delta.tool_calls ?? []))
    // The first delta of each call carries its id, type, name and empty arguments; fragments follow.
    const firsts = deltas.filter((d) => d.id !== undefined)
    assert.deepEqual(
      firsts.map((d) => [d.index, d.type, d.function?.name, d.function?.arguments]),
      [
        [0, 'function', 'get_weather', ''],
        [1, 'function', 'get_weather', ''],
      ],
    )
    assert.ok(firsts.every((d) => d.id?.startsWith('call_')))
    assert.ok(deltas.filter((d) => d.index === 0 && d.id === undefined).length > 1, 'arguments come in several fragments')

    const helper = client.chat.completions.stream({ model: 'gpt-x', messages, stream: true }, behave({ tokens: 2, toolCalls: calls }))
    const final = await helper.finalChatCompletion()
    const message = final.choices[0]?.message
    assert.equal(message?.content, expectedContent(2))
    assert.equal(final.choices[0]?.finish_reason, 'tool_calls')
    const toolCalls = (message?.tool_calls ?? []).map((c) => (c.type === 'function' ? c.function : null))
    assert.deepEqual(
      toolCalls.map((f) => [f?.name, JSON.parse(f?.arguments ?? 'null')]),
      calls.map((c) => [c.name, c.arguments]),
    )
  })

  test('tool calls, not streamed: message.tool_calls, content null without text, usage counts the arguments', async () => {
    const res = await client.chat.completions.create({ model: 'gpt-x', messages }, behave({ tokens: 0, toolCalls: calls }))
    const message = res.choices[0]?.message
    assert.equal(message?.content, null)
    assert.equal(res.choices[0]?.finish_reason, 'tool_calls')
    const parsed = (message?.tool_calls ?? []).map((c) =>
      c.type === 'function' ? [c.id, c.function.name, JSON.parse(c.function.arguments)] : [],
    )
    assert.deepEqual(
      parsed.map(([, name, args]) => [name, args]),
      calls.map((c) => [c.name, c.arguments]),
    )
    assert.notEqual(parsed[0]?.[0], parsed[1]?.[0], 'each call has its own id')
    const argumentTokens = calls.reduce((sum, c) => sum + Math.ceil(JSON.stringify(c.arguments).length / 8), 0)
    assert.equal(res.usage?.completion_tokens, argumentTokens)
  })

  test('finish reasons: content_filter; length from max_tokens (the cap takes the reasoning first)', async () => {
    const filtered = await client.chat.completions.create({ model: 'gpt-x', messages }, behave({ finish: 'content_filter' }))
    assert.equal(filtered.choices[0]?.finish_reason, 'content_filter')
    const capped = await client.chat.completions.create({ model: 'gpt-x', messages, max_tokens: 3 }, behave({ reasoning: 2 }))
    assert.equal(capped.choices[0]?.finish_reason, 'length')
    assert.equal(capped.choices[0]?.message.content, expectedContent(1), 'the cap takes the reasoning first')
    assert.equal(capped.usage?.completion_tokens, 3)
  })

  test('errors: RateLimitError with Retry-After, BadRequestError from the request checks, an in-stream error thrown while iterating', async () => {
    const limited = await client.chat.completions
      .create({ model: 'gpt-x', messages }, behave({ status: 429, retryAfter: 3 }))
      .catch((e: unknown) => e)
    assert.ok(limited instanceof OpenAI.RateLimitError)
    assert.equal(limited.status, 429)
    assert.equal(limited.headers.get('retry-after'), '3')

    const orphan: ChatCompletionMessageParam[] = [...messages, { role: 'tool', tool_call_id: 'call_nowhere', content: '18°C' }]
    const invalid = await client.chat.completions.create({ model: 'gpt-x', messages: orphan }).catch((e: unknown) => e)
    assert.ok(invalid instanceof OpenAI.BadRequestError)
    assert.match(invalid.message, /messages with role 'tool' must be a response to a preceeding message with 'tool_calls'/)

    const stream = await client.chat.completions.create(
      { model: 'gpt-x', messages, stream: true },
      behave({ fault: 'error-event', faultAfter: 2 }),
    )
    let content = ''
    const failure = await (async () => {
      for await (const chunk of stream) content += chunk.choices[0]?.delta.content ?? ''
    })().catch((e: unknown) => e)
    assert.ok(failure instanceof OpenAI.APIError)
    assert.equal(content, expectedContent(2))
  })

  test('prefill: continue_final_message continues the assistant message; without it the answer starts afresh', async () => {
    const prefix = expectedContent(3)
    const conversation: ChatCompletionMessageParam[] = [...messages, { role: 'assistant', content: prefix }]
    const continued = await client.chat.completions.create({
      model: 'gpt-x',
      messages: conversation,
      // vLLM's prefill flags, absent from the SDK's types.
      ...{ continue_final_message: true, add_generation_prompt: false },
    })
    assert.equal(prefix + continued.choices[0]?.message.content, expectedContent(8))
    assert.equal(continued.usage?.completion_tokens, 5)
    const fresh = await client.chat.completions.create({ model: 'gpt-x', messages: conversation })
    assert.equal(fresh.choices[0]?.message.content, expectedContent(8))
  })

  test('a gzip-compressed stream with CR line endings reads the same', async () => {
    for (const lineEnding of ['cr', 'crlf'] as const) {
      const stream = await client.chat.completions.create(
        { model: 'gpt-x', messages, stream: true },
        behave({ contentEncoding: 'gzip', lineEnding }),
      )
      let content = ''
      for await (const chunk of stream) content += chunk.choices[0]?.delta.content ?? ''
      assert.equal(content, expectedContent(8), lineEnding)
    }
  })
})
