// Non-streamed answers and upstream error answers, converted and read by the official SDKs.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { GoogleGenAI } from '@google/genai'
import OpenAI from 'openai'
import {
  type ApiFamily,
  convertResponse,
  convertUpstreamError,
  createEncoder,
  fromRecordUsage,
  MalformedStreamError,
  splitToolCallId,
  streamResponse,
} from '../src/index.js'
import { fetchReturning } from './stream-fixtures.js'

const OPENAI_BODY = {
  id: 'chatcmpl-up',
  object: 'chat.completion',
  created: 1,
  model: 'Qwen/Qwen3-8B',
  choices: [
    {
      index: 0,
      message: {
        role: 'assistant',
        content: 'Hello',
        reasoning_content: 'think',
        tool_calls: [{ id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }],
      },
      finish_reason: 'tool_calls',
    },
  ],
  usage: { prompt_tokens: 120, completion_tokens: 30, total_tokens: 150, prompt_tokens_details: { cached_tokens: 100 } },
}

const ANTHROPIC_BODY = {
  id: 'msg_up',
  type: 'message',
  role: 'assistant',
  model: 'claude-sonnet-4-5',
  content: [
    { type: 'thinking', thinking: 'think', signature: 'sig-abc' },
    { type: 'text', text: 'Hello' },
    { type: 'tool_use', id: 'toolu_01', name: 'get_weather', input: { city: 'Paris' } },
  ],
  stop_reason: 'tool_use',
  stop_sequence: null,
  usage: { input_tokens: 20, cache_creation_input_tokens: 50, cache_read_input_tokens: 100, output_tokens: 42 },
}

const GEMINI_BODY = {
  candidates: [
    {
      content: {
        role: 'model',
        parts: [
          { text: 'think', thought: true },
          { text: 'Hello' },
          { functionCall: { name: 'get_weather', args: { city: 'Paris' } }, thoughtSignature: 'gsig-1' },
        ],
      },
      finishReason: 'STOP',
      index: 0,
    },
  ],
  usageMetadata: {
    promptTokenCount: 120,
    cachedContentTokenCount: 100,
    candidatesTokenCount: 12,
    thoughtsTokenCount: 18,
    totalTokenCount: 150,
  },
  modelVersion: 'gemini-2.5-flash',
  responseId: 'resp-up',
}

const BODIES: Record<ApiFamily, unknown> = { openai: OPENAI_BODY, anthropic: ANTHROPIC_BODY, gemini: GEMINI_BODY }

/** A fetch answering with this JSON body and status. */
function json(body: unknown, status = 200): typeof fetch {
  return fetchReturning([typeof body === 'string' ? body : JSON.stringify(body)], status, 'application/json')
}

async function openAiReads(upstream: ApiFamily) {
  const body = convertResponse(upstream, 'openai', BODIES[upstream], { model: 'gpt-4o' })
  const client = new OpenAI({ apiKey: 'k', baseURL: 'http://gateway.test/v1', fetch: json(body), maxRetries: 0 })
  return client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] })
}

async function anthropicReads(upstream: ApiFamily) {
  const body = convertResponse(upstream, 'anthropic', BODIES[upstream], { model: 'claude-sonnet-4-5' })
  const client = new Anthropic({ apiKey: 'k', baseURL: 'http://gateway.test', fetch: json(body), maxRetries: 0 })
  return client.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] })
}

async function geminiReads(upstream: ApiFamily) {
  const body = convertResponse(upstream, 'gemini', BODIES[upstream], { model: 'gemini-2.5-flash' })
  const client = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: 'http://gateway.test', fetch: json(body) } })
  return client.models.generateContent({ model: 'gemini-2.5-flash', contents: 'hi' })
}

test('Anthropic → OpenAI answer: text, reasoning, a tool call with the thinking signature in its id, usage with cache', async () => {
  const completion = await openAiReads('anthropic')
  assert.equal(completion.model, 'gpt-4o')
  assert.match(completion.id, /^chatcmpl-[0-9a-f]{32}$/)
  const message = completion.choices[0]?.message
  assert.equal(message?.content, 'Hello')
  assert.equal((message as { reasoning_content?: string }).reasoning_content, 'think')
  const call = message?.tool_calls?.[0]
  assert.ok(call?.type === 'function')
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' })
  assert.deepEqual(splitToolCallId(call.id), { id: 'toolu_01', signature: 'sig-abc' })
  assert.equal(completion.choices[0]?.finish_reason, 'tool_calls')
  assert.deepEqual(completion.usage, {
    prompt_tokens: 170,
    completion_tokens: 42,
    total_tokens: 212,
    prompt_tokens_details: { cached_tokens: 100, cache_write_tokens: 50 },
  })
})

test('an Anthropic-compatible server that ends a tool_use answer with end_turn: OpenAI clients get tool_calls', () => {
  const endTurn = { ...ANTHROPIC_BODY, stop_reason: 'end_turn' }
  const completion = convertResponse('anthropic', 'openai', endTurn, { model: 'gpt-4o' }) as { choices: { finish_reason: string }[] }
  assert.equal(completion.choices[0]?.finish_reason, 'tool_calls')
})

test('Gemini → OpenAI answer: the function call signature in its id, reasoning tokens', async () => {
  const completion = await openAiReads('gemini')
  const call = completion.choices[0]?.message.tool_calls?.[0]
  assert.ok(call?.type === 'function')
  assert.equal(splitToolCallId(call.id).signature, 'gsig-1')
  assert.equal(completion.choices[0]?.finish_reason, 'tool_calls')
  assert.deepEqual(completion.usage?.completion_tokens_details, { reasoning_tokens: 18 })
  assert.equal(completion.usage?.prompt_tokens, 120)
  assert.equal(completion.usage?.prompt_tokens_details?.cached_tokens, 100)
})

test('OpenAI → Anthropic answer: thinking, text, tool_use with its input object, usage without double-counted cache', async () => {
  const message = await anthropicReads('openai')
  assert.equal(message.model, 'claude-sonnet-4-5')
  assert.match(message.id, /^msg_[0-9a-f]{32}$/)
  assert.deepEqual(message.content, [
    { type: 'thinking', thinking: 'think', signature: '' },
    { type: 'text', text: 'Hello' },
    { type: 'tool_use', id: 'call_a', name: 'get_weather', input: { city: 'Paris' } },
  ])
  assert.equal(message.stop_reason, 'tool_use')
  assert.deepEqual(message.usage, { input_tokens: 20, cache_creation_input_tokens: 0, cache_read_input_tokens: 100, output_tokens: 30 })
})

test('Gemini → Anthropic answer: the function call signature rides in the tool_use id', async () => {
  const message = await anthropicReads('gemini')
  const call = message.content.find((block) => block.type === 'tool_use')
  assert.ok(call?.type === 'tool_use')
  assert.equal(splitToolCallId(call.id).signature, 'gsig-1')
  assert.deepEqual(call.input, { city: 'Paris' })
  assert.deepEqual(message.usage, {
    input_tokens: 20,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 100,
    output_tokens: 30,
    output_tokens_details: { thinking_tokens: 18 },
  })
})

test('OpenAI → Gemini answer: text, thought, function call; usage with cached content', async () => {
  const response = await geminiReads('openai')
  assert.equal(response.text, 'Hello')
  assert.deepEqual(response.functionCalls, [{ id: 'call_a', name: 'get_weather', args: { city: 'Paris' } }])
  assert.equal(response.candidates?.[0]?.finishReason, 'STOP')
  assert.equal(response.modelVersion, 'gemini-2.5-flash')
  assert.deepEqual(response.usageMetadata, {
    promptTokenCount: 120,
    cachedContentTokenCount: 100,
    candidatesTokenCount: 30,
    totalTokenCount: 150,
  })
})

test('Anthropic → Gemini answer: the thinking signature on its thought part; cache reads and writes in the prompt count', async () => {
  const response = await geminiReads('anthropic')
  const parts = response.candidates?.[0]?.content?.parts ?? []
  assert.deepEqual(parts[0], { text: 'think', thought: true, thoughtSignature: 'sig-abc' })
  assert.deepEqual(response.functionCalls, [{ id: 'toolu_01', name: 'get_weather', args: { city: 'Paris' } }])
  assert.deepEqual(response.usageMetadata, {
    promptTokenCount: 170,
    cachedContentTokenCount: 100,
    candidatesTokenCount: 42,
    totalTokenCount: 212,
  })
})

test('non-streamed: an answer with redacted thinking hands OpenAI and Gemini clients no signature', () => {
  const body = {
    id: 'msg_1',
    type: 'message',
    role: 'assistant',
    model: 'claude',
    content: [
      { type: 'thinking', thinking: 'think', signature: 'sig' },
      { type: 'redacted_thinking', data: 'opaque' },
      { type: 'tool_use', id: 'toolu_1', name: 'f', input: {} },
    ],
    stop_reason: 'tool_use',
    usage: { input_tokens: 1, output_tokens: 1 },
  }
  const openai = convertResponse('anthropic', 'openai', body, { model: 'm' }) as { choices: { message: Record<string, unknown> }[] }
  const message = openai.choices[0]?.message as { reasoning_content: string; tool_calls: { id: string }[] }
  assert.equal(message.reasoning_content, 'think')
  assert.equal(message.tool_calls[0]?.id, 'toolu_1')
  const gemini = convertResponse('anthropic', 'gemini', body, { model: 'm' }) as { candidates: { content: { parts: unknown[] } }[] }
  assert.deepEqual(gemini.candidates[0]?.content.parts, [
    { text: 'think', thought: true },
    { functionCall: { id: 'toolu_1', name: 'f', args: {} } },
  ])
})

test('non-streamed: stop sequences, length and content filter reach each client; the id is the one given', () => {
  const anthropic = convertResponse(
    'openai',
    'anthropic',
    { choices: [{ index: 0, message: { role: 'assistant', content: 'a' }, finish_reason: 'stop', stop_reason: '###' }] },
    { model: 'm', id: 'msg_given' },
  ) as Record<string, unknown>
  assert.equal(anthropic.id, 'msg_given')
  assert.equal(anthropic.stop_reason, 'stop_sequence')
  assert.equal(anthropic.stop_sequence, '###')
  const openai = convertResponse(
    'anthropic',
    'openai',
    { content: [], stop_reason: 'max_tokens', usage: { input_tokens: 1, output_tokens: 2 } },
    { model: 'm' },
  ) as {
    choices: { finish_reason: string; message: { content: unknown } }[]
  }
  assert.equal(openai.choices[0]?.finish_reason, 'length')
  assert.equal(openai.choices[0]?.message.content, null)
  const gemini = convertResponse(
    'anthropic',
    'gemini',
    { content: [], stop_reason: 'refusal', usage: { input_tokens: 1, output_tokens: 0 } },
    { model: 'm' },
  ) as {
    candidates: { finishReason: string; content: { parts: unknown[] } }[]
  }
  assert.equal(gemini.candidates[0]?.finishReason, 'SAFETY')
  assert.deepEqual(gemini.candidates[0]?.content.parts, [{ text: '' }])
  const blocked = convertResponse('gemini', 'openai', { promptFeedback: { blockReason: 'PROHIBITED_CONTENT' } }, { model: 'm' }) as {
    choices: { finish_reason: string }[]
  }
  assert.equal(blocked.choices[0]?.finish_reason, 'content_filter')
})

test('non-streamed: a failed generation or a malformed answer is an error, not an answer that looks complete', () => {
  const malformedCall = {
    candidates: [{ content: { role: 'model', parts: [] }, finishReason: 'MALFORMED_FUNCTION_CALL', finishMessage: 'bad', index: 0 }],
  }
  assert.throws(() => convertResponse('gemini', 'anthropic', malformedCall, { model: 'm' }), {
    name: 'MalformedStreamError',
    message: 'The upstream ended the generation with MALFORMED_FUNCTION_CALL: bad',
  })
  assert.throws(() => convertResponse('openai', 'gemini', { choices: [] }, { model: 'm' }), MalformedStreamError)
  assert.throws(() => convertResponse('anthropic', 'openai', 'text', { model: 'm' }), MalformedStreamError)
  const badArgs = {
    choices: [
      {
        index: 0,
        message: { role: 'assistant', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{"a":' } }] },
        finish_reason: 'tool_calls',
      },
    ],
  }
  assert.throws(() => convertResponse('openai', 'anthropic', badArgs, { model: 'm' }), MalformedStreamError)
  const gemini = convertResponse('openai', 'gemini', badArgs, { model: 'm' }) as {
    candidates: { finishReason: string; finishMessage: string }[]
  }
  assert.equal(gemini.candidates[0]?.finishReason, 'MALFORMED_FUNCTION_CALL')
  assert.equal(gemini.candidates[0]?.finishMessage, 'Malformed function call f: {"a":')
})

test('non-streamed: a tool call the output cap cut off (length) is left out, the answer ending max_tokens / MAX_TOKENS', async () => {
  const cut = {
    choices: [
      {
        index: 0,
        message: {
          role: 'assistant',
          content: 'Checking.',
          tool_calls: [
            { id: 'c0', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
            { id: 'c1', type: 'function', function: { name: 'get_time', arguments: '{"tz":"Europe/Par' } },
          ],
        },
        finish_reason: 'length',
      },
    ],
    usage: { prompt_tokens: 10, completion_tokens: 16, total_tokens: 26 },
  }
  const body = convertResponse('openai', 'anthropic', cut, { model: 'claude-sonnet-4-5' })
  const message = await new Anthropic({ apiKey: 'k', baseURL: 'http://gateway.test', fetch: json(body), maxRetries: 0 }).messages.create({
    model: 'claude-sonnet-4-5',
    max_tokens: 16,
    messages: [{ role: 'user', content: 'hi' }],
  })
  assert.equal(message.stop_reason, 'max_tokens')
  assert.deepEqual(message.content, [
    { type: 'text', text: 'Checking.' },
    { type: 'tool_use', id: 'c0', name: 'get_weather', input: { city: 'Paris' } },
  ])
  const gemini = convertResponse('openai', 'gemini', cut, { model: 'm' }) as {
    candidates: { finishReason: string; finishMessage?: string; content: { parts: unknown[] } }[]
  }
  assert.equal(gemini.candidates[0]?.finishReason, 'MAX_TOKENS')
  assert.equal(gemini.candidates[0]?.finishMessage, undefined)
  assert.deepEqual(gemini.candidates[0]?.content.parts, [
    { text: 'Checking.' },
    { functionCall: { id: 'c0', name: 'get_weather', args: { city: 'Paris' } } },
  ])
})

/** The error a client's SDK throws for a converted upstream error answer. */
async function sdkError(upstream: ApiFamily, client: ApiFamily, status: number, body: string): Promise<unknown> {
  const converted = convertUpstreamError(upstream, client, status, body)
  const fetch = json(converted, status)
  try {
    if (client === 'openai') {
      await new OpenAI({ apiKey: 'k', baseURL: 'http://gateway.test/v1', fetch, maxRetries: 0 }).chat.completions.create({
        model: 'm',
        messages: [{ role: 'user', content: 'hi' }],
      })
    } else if (client === 'anthropic') {
      await new Anthropic({ apiKey: 'k', baseURL: 'http://gateway.test', fetch, maxRetries: 0 }).messages.create({
        model: 'm',
        max_tokens: 10,
        messages: [{ role: 'user', content: 'hi' }],
      })
    } else {
      await new GoogleGenAI({
        apiKey: 'k',
        httpOptions: { baseUrl: 'http://gateway.test', fetch, retryOptions: { attempts: 1 } },
      }).models.generateContent({
        model: 'm',
        contents: 'hi',
      })
    }
  } catch (error) {
    return error
  }
  assert.fail('no error thrown')
}

const ANTHROPIC_OVERLOADED = '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
const GEMINI_QUOTA = '{"error":{"code":429,"message":"Quota exceeded.","status":"RESOURCE_EXHAUSTED"}}'
const OPENAI_BAD = '{"error":{"message":"max_tokens is too large","type":"invalid_request_error","param":"max_tokens","code":null}}'

test('upstream errors → OpenAI SDK errors of the right class, with the upstream message and its error name as code', async () => {
  const overloaded = await sdkError('anthropic', 'openai', 529, ANTHROPIC_OVERLOADED)
  assert.ok(overloaded instanceof OpenAI.InternalServerError)
  assert.equal(overloaded.message, '529 Overloaded')
  assert.equal(overloaded.code, 'overloaded_error')
  assert.equal(overloaded.type, 'server_error')
  const quota = await sdkError('gemini', 'openai', 429, GEMINI_QUOTA)
  assert.ok(quota instanceof OpenAI.RateLimitError)
  assert.equal(quota.code, 'RESOURCE_EXHAUSTED')
  assert.equal(quota.type, 'rate_limit_error')
  // Google's OpenAI-compatible endpoint wraps errors in an array.
  assert.deepEqual(convertUpstreamError('gemini', 'openai', 400, `[${GEMINI_QUOTA}]`), {
    error: { message: 'Quota exceeded.', type: 'invalid_request_error', param: null, code: 'RESOURCE_EXHAUSTED' },
  })
})

test('upstream errors → Anthropic SDK errors of the right class and type', async () => {
  const bad = await sdkError('openai', 'anthropic', 400, OPENAI_BAD)
  assert.ok(bad instanceof Anthropic.BadRequestError)
  assert.equal(bad.type, 'invalid_request_error')
  assert.equal(bad.apiMessage, 'max_tokens is too large')
  const denied = await sdkError(
    'gemini',
    'anthropic',
    403,
    '{"error":{"code":403,"message":"Permission denied.","status":"PERMISSION_DENIED"}}',
  )
  assert.ok(denied instanceof Anthropic.PermissionDeniedError)
  // vLLM's own error shape.
  const vllm = await sdkError(
    'openai',
    'anthropic',
    404,
    '{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}',
  )
  assert.ok(vllm instanceof Anthropic.NotFoundError)
  assert.equal(vllm.type, 'not_found_error')
  assert.equal(vllm.apiMessage, 'The model `x` does not exist.')
  const overloaded = await sdkError(
    'gemini',
    'anthropic',
    503,
    '{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}',
  )
  assert.ok(overloaded instanceof Anthropic.InternalServerError)
  assert.equal(overloaded.type, 'overloaded_error')
  // A 504 is Anthropic's timeout_error (the type its own API sends), not the generic api_error.
  const timeout = await sdkError('openai', 'anthropic', 504, '{"error":{"message":"Gateway timeout","type":"server_error"}}')
  assert.ok(timeout instanceof Anthropic.InternalServerError)
  assert.equal(timeout.type, 'timeout_error')
})

test('upstream errors → Gemini SDK ApiError with the status and the upstream message', async () => {
  const quota = await sdkError(
    'openai',
    'gemini',
    429,
    '{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}',
  )
  assert.ok(quota instanceof Error && quota.name === 'ApiError')
  assert.equal((quota as Error & { status: number }).status, 429)
  assert.match(quota.message, /Rate limit reached/)
  assert.deepEqual(
    convertUpstreamError(
      'anthropic',
      'gemini',
      401,
      '{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}',
    ),
    {
      error: { code: 401, message: 'invalid x-api-key', status: 'UNAUTHENTICATED' },
    },
  )
})

test('upstream error bodies in no known shape are quoted; TGI errors are read', () => {
  assert.deepEqual(convertUpstreamError('openai', 'anthropic', 502, '<html>Bad Gateway</html>'), {
    type: 'error',
    error: { type: 'api_error', message: 'The upstream answered HTTP 502: <html>Bad Gateway</html>' },
  })
  assert.deepEqual(convertUpstreamError('gemini', 'openai', 500, ''), {
    error: { message: 'The upstream answered HTTP 500 with no body.', type: 'server_error', param: null, code: null },
  })
  assert.deepEqual(
    convertUpstreamError(
      'openai',
      'gemini',
      422,
      '{"error":"Input validation error: `inputs` must have less than 4096 tokens","error_type":"validation"}',
    ),
    {
      error: { code: 422, message: 'Input validation error: `inputs` must have less than 4096 tokens', status: 'INVALID_ARGUMENT' },
    },
  )
  const long = 'x'.repeat(5000)
  const quoted = convertUpstreamError('anthropic', 'openai', 500, long) as { error: { message: string } }
  assert.ok(quoted.error.message.length < 1100)
})

test('fromRecordUsage: the record fields back to neutral, cache reads out of the input; cache writes, which have no field there, as input', () => {
  assert.deepEqual(fromRecordUsage({ promptTokens: 120, completionTokens: 30, totalTokens: 150, cachedTokens: 100, reasoningTokens: 18 }), {
    inputTokens: 20,
    outputTokens: 30,
    cacheReadTokens: 100,
    reasoningTokens: 18,
  })
  // 20 input tokens, 100 cache reads and 50 cache writes, as the record counts them
  assert.deepEqual(fromRecordUsage({ promptTokens: 170, completionTokens: 42, totalTokens: 212, cachedTokens: 100 }), {
    inputTokens: 70,
    outputTokens: 42,
    cacheReadTokens: 100,
  })
  assert.deepEqual(fromRecordUsage({ promptTokens: 5, completionTokens: 0, totalTokens: 5 }), { inputTokens: 5, outputTokens: 0 })
})

test('a whole answer streamed (an upstream that does not stream) reads in the SDK stream helpers as the answer converted whole', async () => {
  // Gemini's calls have no ids: each conversion makes its own.
  const ids = (value: unknown) => JSON.parse(JSON.stringify(value).replace(/call_[0-9a-f]{24}/g, 'call_(generated)'))
  for (const upstream of ['openai', 'anthropic', 'gemini'] as const) {
    const anthropicStream = streamResponse(upstream, BODIES[upstream], createEncoder('anthropic', { model: 'claude-sonnet-4-5' }))
    const anthropic = new Anthropic({
      apiKey: 'k',
      baseURL: 'http://gateway.test',
      fetch: fetchReturning([anthropicStream]),
      maxRetries: 0,
    })
    const streamed = await anthropic.messages
      .stream({ model: 'claude-sonnet-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] })
      .finalMessage()
    const whole = await anthropicReads(upstream)
    assert.deepEqual(
      [ids(streamed.content), streamed.stop_reason, streamed.usage.input_tokens, streamed.usage.output_tokens],
      [ids(whole.content), whole.stop_reason, whole.usage.input_tokens, whole.usage.output_tokens],
      upstream,
    )
    const openaiStream = streamResponse(upstream, BODIES[upstream], createEncoder('openai', { model: 'gpt-4o', includeUsage: true }))
    const openai = new OpenAI({ apiKey: 'k', baseURL: 'http://gateway.test/v1', fetch: fetchReturning([openaiStream]), maxRetries: 0 })
    const completion = await openai.chat.completions
      .stream({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], stream_options: { include_usage: true } })
      .finalChatCompletion()
    const wholeCompletion = await openAiReads(upstream)
    const message = completion.choices[0]?.message
    const wholeMessage = wholeCompletion.choices[0]?.message
    assert.deepEqual(
      [
        message?.content,
        ids(message?.tool_calls),
        completion.choices[0]?.finish_reason,
        completion.usage?.prompt_tokens,
        completion.usage?.completion_tokens,
      ],
      [
        wholeMessage?.content,
        ids(wholeMessage?.tool_calls),
        wholeCompletion.choices[0]?.finish_reason,
        wholeCompletion.usage?.prompt_tokens,
        wholeCompletion.usage?.completion_tokens,
      ],
      upstream,
    )
  }
  assert.throws(
    () => streamResponse('openai', { object: 'chat.completion', choices: [] }, createEncoder('openai', { model: 'm' })),
    MalformedStreamError,
  )
})

test('a whole answer streamed keeps each of several tool calls apart, and the stop sequence that ended it', async () => {
  const calls = structuredClone(OPENAI_BODY)
  const message = calls.choices[0]?.message as { tool_calls: unknown[] }
  message.tool_calls.push({ id: 'call_b', type: 'function', function: { name: 'get_time', arguments: '{"zone":"CET"}' } })
  const stream = streamResponse('openai', calls, createEncoder('openai', { model: 'gpt-4o' }))
  const openai = new OpenAI({ apiKey: 'k', baseURL: 'http://gateway.test/v1', fetch: fetchReturning([stream]), maxRetries: 0 })
  const completion = await openai.chat.completions
    .stream({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] })
    .finalChatCompletion()
  assert.deepEqual(
    completion.choices[0]?.message.tool_calls?.map((call) => [call.function.name, call.function.arguments]),
    [
      ['get_weather', '{"city":"Paris"}'],
      ['get_time', '{"zone":"CET"}'],
    ],
  )
  const stopped = { ...ANTHROPIC_BODY, content: [{ type: 'text', text: 'Hello' }], stop_reason: 'stop_sequence', stop_sequence: 'END' }
  const anthropicStream = streamResponse('anthropic', stopped, createEncoder('anthropic', { model: 'claude-sonnet-4-5' }))
  const anthropic = new Anthropic({ apiKey: 'k', baseURL: 'http://gateway.test', fetch: fetchReturning([anthropicStream]), maxRetries: 0 })
  const final = await anthropic.messages
    .stream({ model: 'claude-sonnet-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] })
    .finalMessage()
  assert.deepEqual([final.stop_reason, final.stop_sequence], ['stop_sequence', 'END'])
})
