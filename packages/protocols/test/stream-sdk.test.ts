// Converted streams read by the official SDKs' own stream parsers: what each SDK surfaces is what a user gets.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { type GenerateContentResponse, GoogleGenAI } from '@google/genai'
import OpenAI from 'openai'
import { type ApiFamily, splitToolCallId } from '../src/index.js'
import {
  ANTHROPIC_TOOLS,
  anthropicEvent,
  convertStream,
  fetchReturning,
  GEMINI_TEXT,
  GEMINI_TOOLS,
  OPENAI_TEXT,
  OPENAI_TOOLS,
  OPENAI_TOOLS_INDEX_ZERO,
  OPENAI_TOOLS_INTERLEAVED,
  OPENAI_TOOLS_NO_INDEX,
} from './stream-fixtures.js'

const TEXT = 'Hello, wörld 👋'

function openAiClient(writes: string[]): OpenAI {
  return new OpenAI({ apiKey: 'test', baseURL: 'http://gateway.test/v1', fetch: fetchReturning(writes), maxRetries: 0 })
}

function anthropicClient(writes: string[]): Anthropic {
  return new Anthropic({ apiKey: 'test', baseURL: 'http://gateway.test', fetch: fetchReturning(writes), maxRetries: 0 })
}

function geminiClient(writes: string[]): GoogleGenAI {
  return new GoogleGenAI({ apiKey: 'test', httpOptions: { baseUrl: 'http://gateway.test', fetch: fetchReturning(writes) } })
}

/** The OpenAI SDK's ChatCompletionStream over a converted stream: its final completion and the reasoning deltas it saw. */
async function readWithOpenAi(upstream: ApiFamily, pieces: string[], includeUsage = true) {
  const writes = convertStream(upstream, 'openai', pieces, { model: 'gpt-4o', includeUsage })
  const stream = openAiClient(writes).chat.completions.stream({
    model: 'gpt-4o',
    messages: [{ role: 'user', content: 'hi' }],
    stream_options: { include_usage: includeUsage },
  })
  let reasoning = ''
  const ids = new Set<string>()
  for await (const chunk of stream) {
    ids.add(chunk.id)
    const delta = chunk.choices[0]?.delta as { reasoning_content?: string } | undefined
    reasoning += delta?.reasoning_content ?? ''
  }
  return { completion: await stream.finalChatCompletion(), reasoning, ids }
}

/** The Anthropic SDK's MessageStream over a converted stream: its final message. */
async function readWithAnthropic(upstream: ApiFamily, pieces: string[]) {
  const writes = convertStream(upstream, 'anthropic', pieces, { model: 'claude-sonnet-4-5' })
  const stream = anthropicClient(writes).messages.stream({
    model: 'claude-sonnet-4-5',
    max_tokens: 100,
    messages: [{ role: 'user', content: 'hi' }],
  })
  return stream.finalMessage()
}

/** The Gemini SDK's generateContentStream over a converted stream: every chunk it yields. */
async function readWithGemini(upstream: ApiFamily, pieces: string[]): Promise<GenerateContentResponse[]> {
  const writes = convertStream(upstream, 'gemini', pieces, { model: 'gemini-2.5-flash', geminiSse: true })
  const chunks: GenerateContentResponse[] = []
  for await (const chunk of await geminiClient(writes).models.generateContentStream({ model: 'gemini-2.5-flash', contents: 'hi' }))
    chunks.push(chunk)
  return chunks
}

test('Anthropic → OpenAI SDK: text, reasoning, a tool call with parsed arguments and the thinking signature in its id, finish, usage', async () => {
  const { completion, reasoning, ids } = await readWithOpenAi('anthropic', ANTHROPIC_TOOLS)
  assert.equal(ids.size, 1, 'one id on every chunk')
  const choice = completion.choices[0]
  assert.ok(choice)
  assert.equal(choice.message.content, TEXT)
  assert.equal(reasoning, 'Let me think')
  assert.equal(choice.finish_reason, 'tool_calls')
  const call = choice.message.tool_calls?.[0]
  assert.ok(call?.type === 'function')
  assert.equal(call.function.name, 'get_weather')
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' })
  assert.deepEqual(splitToolCallId(call.id), { id: 'toolu_01', signature: 'sig-abc' })
  assert.equal(completion.model, 'gpt-4o')
  // Anthropic input 20 + cache writes 50 + cache reads 100 = OpenAI prompt 170, of which 100 cached.
  assert.deepEqual(completion.usage, {
    prompt_tokens: 170,
    completion_tokens: 42,
    total_tokens: 212,
    prompt_tokens_details: { cached_tokens: 100, cache_write_tokens: 50 },
  })
})

test('Anthropic → OpenAI SDK: a call of a tool without parameters has the arguments "{}", as OpenAI sends them', async () => {
  // Claude streams such a call as one empty input_json_delta: two calls here, the second with arguments.
  const at = ANTHROPIC_TOOLS.findIndex((event) => event.includes('"tool_use"'))
  const noArgs = [
    anthropicEvent('content_block_start', '"index":3,"content_block":{"type":"tool_use","id":"toolu_00","name":"get_time","input":{}}'),
    anthropicEvent('content_block_delta', '"index":3,"delta":{"type":"input_json_delta","partial_json":""}'),
    anthropicEvent('content_block_stop', '"index":3'),
  ]
  const pieces = [...ANTHROPIC_TOOLS.slice(0, at), ...noArgs, ...ANTHROPIC_TOOLS.slice(at)].map((event) =>
    event.replaceAll('"index":2', '"index":4'),
  )
  const writes = convertStream('anthropic', 'openai', pieces, { model: 'gpt-4o', includeUsage: true })
  // A strict tool: the SDK's helper parses every call's arguments (it threw on "").
  const stream = openAiClient(writes).chat.completions.stream({
    model: 'gpt-4o',
    messages: [{ role: 'user', content: 'hi' }],
    tools: [
      {
        type: 'function',
        function: { name: 'get_time', strict: true, parameters: { type: 'object', properties: {}, additionalProperties: false } },
      },
    ],
  })
  const calls = (await stream.finalChatCompletion()).choices[0]?.message.tool_calls ?? []
  assert.deepEqual(
    calls.map((call) => (call.type === 'function' ? [call.function.name, call.function.arguments] : null)),
    [
      ['get_time', '{}'],
      ['get_weather', '{"city":"Paris"}'],
    ],
  )
})

test('Gemini → OpenAI SDK: the function call keeps its thought signature in its id; reasoning tokens are reported', async () => {
  const { completion, reasoning } = await readWithOpenAi('gemini', GEMINI_TOOLS)
  const choice = completion.choices[0]
  assert.ok(choice)
  assert.equal(choice.message.content, TEXT)
  assert.equal(reasoning, 'Let me think')
  assert.equal(choice.finish_reason, 'tool_calls')
  const call = choice.message.tool_calls?.[0]
  assert.ok(call?.type === 'function')
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' })
  const { id, signature } = splitToolCallId(call.id)
  assert.equal(signature, 'gsig-1')
  assert.match(id, /^call_[0-9a-f]{24}$/)
  assert.deepEqual(completion.usage, {
    prompt_tokens: 120,
    completion_tokens: 30,
    total_tokens: 150,
    prompt_tokens_details: { cached_tokens: 100 },
    completion_tokens_details: { reasoning_tokens: 18 },
  })
})

test('OpenAI SDK: no usage chunk when the client did not ask for one', async () => {
  const { completion } = await readWithOpenAi('gemini', GEMINI_TEXT, false)
  assert.equal(completion.usage, undefined)
  assert.equal(completion.choices[0]?.finish_reason, 'stop')
  assert.equal(completion.choices[0]?.message.content, TEXT)
})

test('OpenAI → Anthropic SDK: thinking, text, finish and usage without double-counted cache reads', async () => {
  const message = await readWithAnthropic('openai', OPENAI_TEXT)
  assert.deepEqual(
    message.content.map((block) => block.type),
    ['thinking', 'text'],
  )
  const [thinking, text] = message.content
  assert.ok(thinking?.type === 'thinking' && text?.type === 'text')
  assert.equal(thinking.thinking, 'Let me think about it.')
  assert.equal(text.text, TEXT)
  assert.equal(message.stop_reason, 'end_turn')
  assert.equal(message.model, 'claude-sonnet-4-5')
  // OpenAI prompt 120 includes the 100 cached: Anthropic input 20, cache reads 100.
  assert.equal(message.usage.input_tokens, 20)
  assert.equal(message.usage.cache_read_input_tokens, 100)
  assert.equal(message.usage.cache_creation_input_tokens, 0)
  assert.equal(message.usage.output_tokens, 30)
})

test('OpenAI → Anthropic SDK: parallel tool calls become consecutive tool_use blocks, interleaved or not', async () => {
  for (const pieces of [OPENAI_TOOLS, OPENAI_TOOLS_INTERLEAVED]) {
    const message = await readWithAnthropic('openai', pieces)
    assert.equal(message.stop_reason, 'tool_use')
    const calls = message.content.map((block) =>
      block.type === 'tool_use' ? { id: block.id, name: block.name, input: block.input } : block.type,
    )
    assert.deepEqual(calls, [
      { id: 'call_a', name: 'get_weather', input: { city: 'Paris' } },
      { id: 'call_b', name: 'get_time', input: { tz: 'CET' } },
    ])
  }
})

/** An upstream stream as sent, and cut into pieces of 1 and of 5 bytes (inside ids, names and argument fragments). */
function chunkings(pieces: string[]): string[][] {
  const body = pieces.join('')
  const cut = (size: number) => Array.from({ length: Math.ceil(body.length / size) }, (_, at) => body.slice(at * size, at * size + size))
  return [pieces, cut(1), cut(5)]
}

const WEATHER_AND_TIME = [
  { name: 'get_weather', input: { city: 'Paris' } },
  { name: 'get_time', input: { tz: 'CET' } },
]

test('OpenAI → Anthropic and Gemini SDKs: calls streamed without an index, or all at index 0 with new ids, are all kept', async () => {
  for (const pieces of [OPENAI_TOOLS_NO_INDEX, OPENAI_TOOLS_INDEX_ZERO].flatMap(chunkings)) {
    const message = await readWithAnthropic('openai', pieces)
    assert.equal(message.stop_reason, 'tool_use')
    assert.deepEqual(
      message.content.map((block) => (block.type === 'tool_use' ? { name: block.name, input: block.input } : block.type)),
      WEATHER_AND_TIME,
    )
    const chunks = await readWithGemini('openai', pieces)
    assert.deepEqual(
      chunks.flatMap((chunk) => chunk.functionCalls ?? []).map((call) => ({ name: call.name, input: call.args })),
      WEATHER_AND_TIME,
    )
    assert.equal(chunks.at(-1)?.candidates?.[0]?.finishReason, 'STOP')
  }
})

test('Gemini → Anthropic SDK: a function call with its signature in the id; usage with thinking tokens', async () => {
  const message = await readWithAnthropic('gemini', GEMINI_TOOLS)
  assert.deepEqual(
    message.content.map((block) => block.type),
    ['thinking', 'text', 'tool_use'],
  )
  const call = message.content[2]
  assert.ok(call?.type === 'tool_use')
  assert.deepEqual(call.input, { city: 'Paris' })
  assert.equal(splitToolCallId(call.id).signature, 'gsig-1')
  assert.equal(message.stop_reason, 'tool_use')
  assert.equal(message.usage.input_tokens, 20)
  assert.equal(message.usage.cache_read_input_tokens, 100)
  assert.equal(message.usage.output_tokens, 30)
  assert.deepEqual(message.usage.output_tokens_details, { thinking_tokens: 18 })
})

test('OpenAI → Gemini SDK: text and thought parts, finishReason and usageMetadata on the last chunk', async () => {
  const chunks = await readWithGemini('openai', OPENAI_TEXT)
  assert.equal(chunks.map((chunk) => chunk.text ?? '').join(''), TEXT)
  const thoughts = chunks.flatMap((chunk) => chunk.candidates?.[0]?.content?.parts?.filter((part) => part.thought === true) ?? [])
  assert.equal(thoughts.map((part) => part.text).join(''), 'Let me think about it.')
  const last = chunks.at(-1)
  assert.equal(last?.candidates?.[0]?.finishReason, 'STOP')
  assert.equal(chunks.filter((chunk) => chunk.candidates?.[0]?.finishReason !== undefined).length, 1)
  assert.deepEqual(last?.usageMetadata, {
    promptTokenCount: 120,
    cachedContentTokenCount: 100,
    candidatesTokenCount: 30,
    totalTokenCount: 150,
  })
  assert.equal(last?.modelVersion, 'gemini-2.5-flash')
})

test('Anthropic → Gemini SDK: a function call with parsed args; the thinking signature on a thought part', async () => {
  const chunks = await readWithGemini('anthropic', ANTHROPIC_TOOLS)
  const calls = chunks.flatMap((chunk) => chunk.functionCalls ?? [])
  assert.deepEqual(calls, [{ id: 'toolu_01', name: 'get_weather', args: { city: 'Paris' } }])
  const parts = chunks.flatMap((chunk) => chunk.candidates?.[0]?.content?.parts ?? [])
  assert.ok(parts.some((part) => part.thought === true && part.thoughtSignature === 'sig-abc'))
  const last = chunks.at(-1)
  assert.equal(last?.candidates?.[0]?.finishReason, 'STOP')
  // Anthropic input 20 + cache writes 50 + cache reads 100 = Gemini prompt 170.
  assert.deepEqual(last?.usageMetadata, {
    promptTokenCount: 170,
    cachedContentTokenCount: 100,
    candidatesTokenCount: 42,
    totalTokenCount: 212,
  })
})

test('Gemini SDK chat keeps a converted answer in its history (every chunk valid, one with a finishReason)', async () => {
  const writes = convertStream('openai', 'gemini', OPENAI_TOOLS, { model: 'gemini-2.5-flash', geminiSse: true })
  const chat = geminiClient(writes).chats.create({ model: 'gemini-2.5-flash' })
  for await (const _ of await chat.sendMessageStream({ message: 'hi' })) {
    // read to the end
  }
  // The SDK keeps each streamed chunk's content as a model turn; it keeps none when a chunk is invalid.
  const [user, ...model] = chat.getHistory()
  assert.equal(user?.role, 'user')
  assert.ok(model.length > 0 && model.every((content) => content.role === 'model'))
  const calls = model.flatMap(
    (content) => content.parts?.flatMap((part) => (part.functionCall === undefined ? [] : [part.functionCall])) ?? [],
  )
  assert.deepEqual(calls, [
    { id: 'call_a', name: 'get_weather', args: { city: 'Paris' } },
    { id: 'call_b', name: 'get_time', args: { tz: 'CET' } },
  ])
})

const BROKEN_ANTHROPIC = [
  ...ANTHROPIC_TOOLS.slice(0, 8),
  'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n',
]

test('an upstream error inside the stream makes the OpenAI SDK throw an APIError with the gateway code', async () => {
  const writes = convertStream('anthropic', 'openai', BROKEN_ANTHROPIC, { model: 'gpt-4o' })
  assert.ok(!writes.join('').includes('[DONE]'))
  const stream = await openAiClient(writes).chat.completions.create({
    model: 'gpt-4o',
    messages: [{ role: 'user', content: 'hi' }],
    stream: true,
  })
  let text = ''
  await assert.rejects(
    async () => {
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? ''
    },
    (error: unknown) => {
      assert.ok(error instanceof OpenAI.APIError)
      assert.equal(error.message, 'Overloaded')
      assert.equal(error.code, 'llmproxy_upstream_error')
      assert.equal(error.type, 'upstream_error')
      return true
    },
  )
  assert.equal(text, 'Hello')
})

test('an upstream error inside the stream makes the Anthropic SDK throw an APIError of the error type', async () => {
  const writes = convertStream('gemini', 'anthropic', [
    ...GEMINI_TEXT.slice(0, 2),
    'data: {"candidates":[{"content":{"parts":[],"role":"model"},"finishReason":"MALFORMED_FUNCTION_CALL","finishMessage":"bad call","index":0}]}\n\n',
  ])
  assert.ok(!writes.join('').includes('message_stop'))
  const stream = anthropicClient(writes).messages.stream({
    model: 'claude-sonnet-4-5',
    max_tokens: 100,
    messages: [{ role: 'user', content: 'hi' }],
  })
  await assert.rejects(stream.finalMessage(), (error: unknown) => {
    assert.ok(error instanceof Anthropic.APIError)
    assert.equal(error.type, 'api_error')
    assert.equal(error.apiMessage, 'The upstream ended the generation with MALFORMED_FUNCTION_CALL: bad call')
    return true
  })
})

test('an upstream error inside the stream makes the Gemini SDK throw an ApiError with the status', async () => {
  const writes = convertStream('openai', 'gemini', [
    ...OPENAI_TEXT.slice(0, 4),
    'data: {"error":{"message":"CUDA out of memory","type":"InternalServerError","code":500}}\n\n',
  ])
  const stream = await geminiClient(writes).models.generateContentStream({ model: 'gemini-2.5-flash', contents: 'hi' })
  let text = ''
  await assert.rejects(
    async () => {
      for await (const chunk of stream) text += chunk.text ?? ''
    },
    (error: unknown) => {
      assert.ok(error instanceof Error)
      assert.equal(error.name, 'ApiError')
      assert.equal((error as Error & { status: number }).status, 502)
      assert.match(error.message, /CUDA out of memory/)
      return true
    },
  )
  assert.equal(text, 'Hello')
})
