import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { Protocol, Usage } from '@llmproxy/core'
import { type ApiFamily, convertResponse } from '../src/index.js'
import { UsageExtractor } from '../src/usage-extract.js'
import { anthropicEvent, convertStream, sseEvents } from './stream-fixtures.js'

test('OpenAI chat usage with cached and reasoning tokens', () => {
  const u = new UsageExtractor('openai')
  u.write(Buffer.from('data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30,'))
  u.write(
    Buffer.from('"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":7}}}\n\ndata: [DONE]\n\n'),
  )
  assert.deepEqual(u.result(), { promptTokens: 10, completionTokens: 20, totalTokens: 30, cachedTokens: 4, reasoningTokens: 7 })
  assert.equal(u.missingPrompt, false)
})

test('OpenAI responses usage', () => {
  const u = new UsageExtractor('openai')
  u.write(Buffer.from('event: response.created\ndata: {"response":{"usage":null}}\n\n'))
  u.write(
    Buffer.from(
      'event: response.completed\ndata: {"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":9,"total_tokens":14,"input_tokens_details":{"cached_tokens":0},"output_tokens_details":{"reasoning_tokens":1}}}}\n\n',
    ),
  )
  assert.deepEqual(u.result(), { promptTokens: 5, completionTokens: 9, totalTokens: 14, cachedTokens: 0, reasoningTokens: 1 })
})

test('Anthropic message_start + message_delta, cache tokens added to the prompt', () => {
  const u = new UsageExtractor('anthropic')
  u.write(
    Buffer.from(
      'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":12,"cache_creation_input_tokens":3,"cache_read_input_tokens":5,"output_tokens":1}}}\n\n',
    ),
  )
  u.write(
    Buffer.from('event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}\n\n'),
  )
  assert.deepEqual(u.result(), { promptTokens: 20, completionTokens: 42, totalTokens: 62, cachedTokens: 5 })
})

test('Gemini cumulative usageMetadata, thoughts counted as completion and reasoning', () => {
  const u = new UsageExtractor('gemini')
  u.write(Buffer.from('data: {"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":1,"totalTokenCount":8}}\r\n\r\n'))
  u.write(
    Buffer.from(
      'data: {"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":9,"thoughtsTokenCount":3,"totalTokenCount":19}}\r\n\r\n',
    ),
  )
  assert.deepEqual(u.result(), { promptTokens: 7, completionTokens: 12, totalTokens: 19, reasoningTokens: 3 })
})

test("TGI, on the OpenAI-compatible routes the gateway calls: the usage chunk (choices: []) and the body's usage", () => {
  const chunk = (rest: string) =>
    `data:{"object":"chat.completion.chunk","id":"","created":1,"model":"tgi","system_fingerprint":"3.3.6-native",${rest}}\n\n`
  const streamed = new UsageExtractor('tgi')
  streamed.write(
    Buffer.from(
      chunk('"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":"stop"}],"usage":null'),
    ),
  )
  streamed.write(Buffer.from(chunk('"choices":[],"usage":{"prompt_tokens":15,"completion_tokens":8,"total_tokens":23}')))
  assert.deepEqual(streamed.result(), { promptTokens: 15, completionTokens: 8, totalTokens: 23 })
  assert.equal(streamed.missingPrompt, false)
  const body = new UsageExtractor('tgi')
  body.write(
    Buffer.from(
      '{"object":"chat.completion","id":"","created":1,"model":"tgi","system_fingerprint":"3.3.6-native","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":15,"completion_tokens":8,"total_tokens":23}}',
    ),
  )
  assert.deepEqual(body.result(), { promptTokens: 15, completionTokens: 8, totalTokens: 23 })
})

test('nothing reported → null', () => {
  const u = new UsageExtractor('openai')
  u.write(Buffer.from('data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'))
  assert.equal(u.result(), null)
})

test('endsWithNullReport: an object ending with its usage key set to null, spaces allowed; nothing else', () => {
  const openai = new UsageExtractor('openai')
  const ends = (json: string) => openai.endsWithNullReport(Buffer.from(json), json.length - 1)
  assert.equal(ends('{"choices":[],"usage":null}'), true)
  assert.equal(ends('{"choices":[], "usage" : null }'), true)
  assert.equal(ends('{"choices":[],"usage":{"prompt_tokens":1}}'), false)
  assert.equal(ends('{"choices":[],"xusage":null}'.replace('"xusage"', '"my_usage"')), false)
  assert.equal(ends('{"usage":"null"}'), false)
  assert.equal(ends('{"usage":nul}'), false)
  assert.equal(ends('"usage":null}'), true)
  assert.equal(ends('age":null}'), false)
  const gemini = new UsageExtractor('gemini')
  assert.equal(gemini.endsWithNullReport(Buffer.from('{"usage":null}'), 13), false)
  assert.equal(gemini.endsWithNullReport(Buffer.from('{"usageMetadata":null}'), 21), true)
})

test('Gemini tool-use prompt tokens count as prompt tokens, as the converters count them', () => {
  const u = new UsageExtractor('gemini')
  u.write(
    Buffer.from(
      'data: {"usageMetadata":{"promptTokenCount":7,"toolUsePromptTokenCount":5,"candidatesTokenCount":2,"totalTokenCount":14}}\n\n',
    ),
  )
  assert.deepEqual(u.result(), { promptTokens: 12, completionTokens: 2, totalTokens: 14 })
})

/** Every way of cutting `text` in two, and byte by byte: the usage read is `expected` whatever the chunks. */
function assertUsageInAnyChunks(protocol: Protocol, text: string, expected: Usage): void {
  const bytes = Buffer.from(text)
  const cuts = [...Array(bytes.length + 1).keys()].map((at) => [bytes.subarray(0, at), bytes.subarray(at)])
  cuts.push([...bytes].map((byte) => Buffer.from([byte])))
  for (const chunks of cuts) {
    const u = new UsageExtractor(protocol)
    for (const chunk of chunks) u.write(chunk)
    assert.deepEqual(u.result(), expected, `${protocol}, chunks of ${chunks.map((chunk) => chunk.length).join('+')} bytes`)
  }
}

/** Tool-call arguments a model wrote, holding what looks like a usage report (Gemini and Anthropic send them as objects). */
const decoyArgs = {
  usage: {
    prompt_tokens_details: { cached_tokens: 900000 },
    input_tokens_details: { cached_tokens: 900000 },
    cache_read_input_tokens: 900000,
  },
  usageMetadata: { cachedContentTokenCount: 900000, thoughtsTokenCount: 800000 },
}
const reported: Usage = { promptTokens: 12, completionTokens: 13, totalTokens: 25 }
const sse = (events: object[]) => events.map((event) => `data: ${JSON.stringify(event)}\r\n\r\n`).join('')

test('Gemini: a usageMetadata in functionCall args is not a report (SSE stream, JSON body, JSON-array stream)', () => {
  const call = (usage: object) => ({
    candidates: [{ content: { parts: [{ functionCall: { name: 'save', args: decoyArgs } }], role: 'model' }, index: 0 }],
    usageMetadata: usage,
  })
  const first = call({ promptTokenCount: 12, candidatesTokenCount: 3, totalTokenCount: 15 })
  const last = call({ promptTokenCount: 12, candidatesTokenCount: 13, totalTokenCount: 25 })
  assertUsageInAnyChunks('gemini', sse([first, last]), reported)
  assertUsageInAnyChunks('gemini', JSON.stringify(last, null, 2), reported)
  // Without alt=sse: one array, each element a chunk (a level down).
  assertUsageInAnyChunks('gemini', `[${JSON.stringify(first, null, 2)}\r\n,\r\n${JSON.stringify(last, null, 2)}]`, reported)
})

test('Anthropic: a usage in tool_use input is not a report (JSON body, stream)', () => {
  const toolUse = { type: 'tool_use', id: 'toolu_1', name: 'save', input: decoyArgs }
  const usage = { input_tokens: 12, output_tokens: 13 }
  assertUsageInAnyChunks('anthropic', JSON.stringify({ type: 'message', content: [toolUse], stop_reason: 'tool_use', usage }), reported)
  const stream =
    `event: message_start\n${sse([{ type: 'message_start', message: { type: 'message', content: [], usage: { input_tokens: 12, output_tokens: 1 } } }])}` +
    // A compatible server may send the input whole at the block's start.
    `event: content_block_start\n${sse([{ type: 'content_block_start', index: 0, content_block: toolUse }])}` +
    `event: message_delta\n${sse([{ type: 'message_delta', delta: { stop_reason: 'tool_use' }, usage: { output_tokens: 13 } }])}`
  assertUsageInAnyChunks('anthropic', stream, reported)
})

test('OpenAI: a usage in tool arguments sent as an object is not a report (chat stream, Responses stream and body)', () => {
  const toolCall = { index: 0, id: 'call_1', type: 'function', function: { name: 'save', arguments: decoyArgs } }
  const chat = sse([
    { object: 'chat.completion.chunk', choices: [{ index: 0, delta: { tool_calls: [toolCall] }, finish_reason: null }], usage: null },
    { object: 'chat.completion.chunk', choices: [], usage: { prompt_tokens: 12, completion_tokens: 13, total_tokens: 25 } },
  ])
  assertUsageInAnyChunks('openai', `${chat}data: [DONE]\n\n`, reported)
  const response = {
    object: 'response',
    output: [{ type: 'function_call', call_id: 'call_1', name: 'save', arguments: decoyArgs }],
    usage: { input_tokens: 12, output_tokens: 13, total_tokens: 25 },
  }
  assertUsageInAnyChunks('openai', `event: response.completed\n${sse([{ type: 'response.completed', response }])}`, reported)
  assertUsageInAnyChunks('openai', JSON.stringify(response), reported)
})

/** The usage a converted OpenAI client is shown, in the record's terms (the record's fields are OpenAI's). */
function shownToOpenAi(usage: {
  prompt_tokens: number
  completion_tokens: number
  total_tokens: number
  prompt_tokens_details: { cached_tokens: number }
  completion_tokens_details?: { reasoning_tokens: number }
}): Usage {
  const shown: Usage = {
    promptTokens: usage.prompt_tokens,
    completionTokens: usage.completion_tokens,
    totalTokens: usage.total_tokens,
    cachedTokens: usage.prompt_tokens_details.cached_tokens,
  }
  const reasoning = usage.completion_tokens_details?.reasoning_tokens
  if (reasoning !== undefined) shown.reasoningTokens = reasoning
  return shown
}

function recordOf(protocol: Protocol, text: string): Usage | null {
  const extractor = new UsageExtractor(protocol)
  extractor.write(Buffer.from(text))
  return extractor.result()
}

/** An OpenAI-compatible final usage report (OpenRouter's: cache writes in the details), streamed and in the body alike. */
const OPENAI_USAGE = {
  prompt_tokens: 170,
  completion_tokens: 42,
  total_tokens: 212,
  prompt_tokens_details: { cached_tokens: 100, cache_write_tokens: 50 },
  completion_tokens_details: { reasoning_tokens: 12 },
}
/** Gemini's final usageMetadata (a tool-use prompt and thoughts), streamed and in the body alike. */
const GEMINI_USAGE = {
  promptTokenCount: 160,
  toolUsePromptTokenCount: 10,
  cachedContentTokenCount: 100,
  candidatesTokenCount: 30,
  thoughtsTokenCount: 12,
  totalTokenCount: 212,
}

/** Each format's every usage field: all prompt tokens 170 (100 cache reads), 42 output tokens of which 12 reasoning. */
const REPORTS: [string, ApiFamily, string[], object][] = [
  [
    'OpenAI-compatible (OpenRouter: cache writes in the details)',
    'openai',
    [
      sse([
        { id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'Hi' }, finish_reason: 'stop' }], usage: null },
      ]),
      sse([
        {
          id: 'c',
          object: 'chat.completion.chunk',
          choices: [],
          usage: OPENAI_USAGE,
        },
      ]),
      'data: [DONE]\n\n',
    ],
    {
      id: 'c',
      object: 'chat.completion',
      choices: [{ index: 0, message: { role: 'assistant', content: 'Hi' }, finish_reason: 'stop' }],
      usage: OPENAI_USAGE,
    },
  ],
  [
    // As @anthropic-ai/sdk 1.17 types them: message_delta's counts are cumulative, any of them may be null.
    'Anthropic (thinking tokens in output_tokens_details)',
    'anthropic',
    [
      anthropicEvent(
        'message_start',
        '"message":{"id":"msg_1","type":"message","role":"assistant","model":"c","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":20,"cache_creation_input_tokens":50,"cache_read_input_tokens":100,"output_tokens":1,"output_tokens_details":null}}',
      ),
      anthropicEvent('content_block_start', '"index":0,"content_block":{"type":"text","text":""}'),
      anthropicEvent('content_block_delta', '"index":0,"delta":{"type":"text_delta","text":"Hi"}'),
      anthropicEvent('content_block_stop', '"index":0'),
      anthropicEvent(
        'message_delta',
        '"delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":20,"cache_creation_input_tokens":50,"cache_read_input_tokens":100,"output_tokens":42,"output_tokens_details":{"thinking_tokens":12},"server_tool_use":null}',
      ),
      anthropicEvent('message_stop', '"x":0'),
    ],
    {
      id: 'msg_1',
      type: 'message',
      role: 'assistant',
      model: 'c',
      content: [{ type: 'text', text: 'Hi' }],
      stop_reason: 'end_turn',
      stop_sequence: null,
      usage: {
        input_tokens: 20,
        cache_creation_input_tokens: 50,
        cache_read_input_tokens: 100,
        output_tokens: 42,
        output_tokens_details: { thinking_tokens: 12 },
        server_tool_use: null,
        service_tier: 'standard',
      },
    },
  ],
  [
    'Anthropic (a message_delta with the output counts only)',
    'anthropic',
    [
      anthropicEvent(
        'message_start',
        '"message":{"id":"msg_1","type":"message","role":"assistant","model":"c","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":20,"cache_creation_input_tokens":50,"cache_read_input_tokens":100,"output_tokens":1}}',
      ),
      anthropicEvent(
        'message_delta',
        '"delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":null,"cache_creation_input_tokens":null,"cache_read_input_tokens":null,"output_tokens":42,"output_tokens_details":{"thinking_tokens":12}}',
      ),
      anthropicEvent('message_stop', '"x":0'),
    ],
    {
      type: 'message',
      role: 'assistant',
      content: [],
      stop_reason: 'end_turn',
      usage: {
        input_tokens: 20,
        cache_creation_input_tokens: 50,
        cache_read_input_tokens: 100,
        output_tokens: 42,
        output_tokens_details: { thinking_tokens: 12 },
      },
    },
  ],
  [
    'Gemini (tool-use prompt and thoughts)',
    'gemini',
    [
      sse([
        {
          candidates: [{ content: { parts: [{ text: 'Hi' }], role: 'model' }, index: 0 }],
          usageMetadata: { promptTokenCount: 160, toolUsePromptTokenCount: 10, cachedContentTokenCount: 100, totalTokenCount: 170 },
        },
      ]),
      sse([
        {
          candidates: [{ content: { parts: [{ text: '!' }], role: 'model' }, finishReason: 'STOP', index: 0 }],
          usageMetadata: GEMINI_USAGE,
        },
      ]),
    ],
    {
      candidates: [{ content: { parts: [{ text: 'Hi!' }], role: 'model' }, finishReason: 'STOP', index: 0 }],
      usageMetadata: GEMINI_USAGE,
    },
  ],
]

test('the usage record counts what a converted OpenAI client is shown, field by field, in every format, streamed and not', () => {
  const expected: Usage = { promptTokens: 170, completionTokens: 42, totalTokens: 212, cachedTokens: 100, reasoningTokens: 12 }
  for (const [name, upstream, stream, body] of REPORTS) {
    const chunks = sseEvents(convertStream(upstream, 'openai', stream, { model: 'm', includeUsage: true }).join(''))
    const usageChunk = JSON.parse(chunks.filter((event) => event.data !== '[DONE]').at(-1)?.data ?? '{}')
    assert.deepEqual(shownToOpenAi(usageChunk.usage), expected, `${name}, streamed: the client`)
    assert.deepEqual(recordOf(upstream, stream.join('')), expected, `${name}, streamed: the record`)
    const answer = convertResponse(upstream, 'openai', body, { model: 'm' }) as { usage: Parameters<typeof shownToOpenAi>[0] }
    assert.deepEqual(shownToOpenAi(answer.usage), expected, `${name}: the client`)
    assert.deepEqual(recordOf(upstream, JSON.stringify(body)), expected, `${name}: the record`)
  }
})
