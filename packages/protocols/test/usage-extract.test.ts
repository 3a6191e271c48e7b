import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { Protocol, Usage } from '@llmproxy/core'
import { UsageExtractor } from '../src/usage-extract.js'

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
