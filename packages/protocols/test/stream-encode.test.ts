import assert from 'node:assert/strict'
import { test } from 'node:test'
import { type ApiFamily, createDecoder, createEncoder, type FinishReason, MalformedStreamError, type StreamEvent } from '../src/index.js'
import {
  ANTHROPIC_TOOLS,
  convertStream,
  GEMINI_TEXT,
  GEMINI_TOOLS,
  OPENAI_TEXT,
  OPENAI_TOOLS,
  OPENAI_TOOLS_INTERLEAVED,
  sseEvents,
  upstreamFailure,
} from './stream-fixtures.js'

const UPSTREAMS: [ApiFamily, string[]][] = [
  ['openai', OPENAI_TEXT],
  ['anthropic', ANTHROPIC_TOOLS],
  ['gemini', GEMINI_TOOLS],
]

test('zero buffering: the write for the upstream chunk that carries a text delta carries its text, in every pair', () => {
  for (const [upstream, pieces] of UPSTREAMS) {
    for (const client of ['openai', 'anthropic', 'gemini'] as const) {
      if (client === upstream) continue
      const decoder = createDecoder(upstream)
      const encoder = createEncoder(client, { model: 'm' })
      for (const piece of pieces) {
        const events: StreamEvent[] = []
        decoder.push(Buffer.from(piece), events)
        const written = events.map((event) => encoder.encode(event)).join('')
        for (const event of events) {
          if (event.type === 'text' || (event.type === 'reasoning' && event.text !== '')) {
            assert.ok(written.includes(JSON.stringify(event.text).slice(1, -1)), `${upstream} → ${client}: ${event.text}`)
          }
        }
      }
    }
  }
})

test('OpenAI framing: one role chunk first, one id/created/model, the finish chunk, the usage chunk when asked, [DONE] last', () => {
  for (const includeUsage of [true, false]) {
    const body = convertStream('anthropic', 'openai', ANTHROPIC_TOOLS, { model: 'gpt-4o', id: 'chatcmpl-1', includeUsage }).join('')
    const events = sseEvents(body)
    assert.equal(events.at(-1)?.data, '[DONE]')
    const chunks = events.slice(0, -1).map((event) => JSON.parse(event.data))
    assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' })
    assert.equal(chunks.filter((chunk) => chunk.choices[0]?.delta.role !== undefined).length, 1)
    assert.deepEqual(new Set(chunks.map((chunk) => `${chunk.id} ${chunk.created} ${chunk.model} ${chunk.object}`)).size, 1)
    assert.equal(chunks[0].id, 'chatcmpl-1')
    const finishes = chunks.filter((chunk) => chunk.choices[0]?.finish_reason)
    assert.equal(finishes.length, 1)
    assert.equal(finishes[0].choices[0].finish_reason, 'tool_calls')
    const usage = chunks.filter((chunk) => chunk.usage !== undefined)
    assert.equal(usage.length, includeUsage ? 1 : 0)
    if (includeUsage) assert.deepEqual(usage[0].choices, [])
  }
})

const DELTA_BLOCK: Record<string, string> = {
  text_delta: 'text',
  thinking_delta: 'thinking',
  signature_delta: 'thinking',
  input_json_delta: 'tool_use',
}

/** Checks the Anthropic event grammar: message_start, blocks opened and closed one at a time in index order, message_delta, message_stop. */
function assertAnthropicGrammar(body: string): { type: string; data: Record<string, unknown> }[] {
  const events = sseEvents(body).map(({ event, data }) => {
    const parsed = JSON.parse(data)
    assert.equal(parsed.type, event, 'event name = data type')
    return { type: event, data: parsed }
  })
  assert.equal(events[0]?.type, 'message_start')
  assert.equal(events.at(-1)?.type, 'message_stop')
  assert.equal(events.at(-2)?.type, 'message_delta')
  const start = events[0]?.data.message as { usage: Record<string, unknown> } | undefined
  const usage = start?.usage ?? {}
  for (const key of ['input_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens', 'output_tokens']) {
    assert.equal(typeof usage[key], 'number', `message_start usage.${key}`)
  }
  let open = -1
  let next = 0
  let blockType = ''
  let lastDelta = ''
  for (const { type, data } of events.slice(1, -2)) {
    if (type === 'content_block_start') {
      assert.equal(open, -1, 'a block opens only after the previous one closed')
      assert.equal(data.index, next)
      open = next++
      blockType = (data.content_block as { type: string }).type
    } else if (type === 'content_block_delta') {
      assert.equal(data.index, open)
      // A delta of another kind than its block breaks Claude Code ("Content block is not a thinking block").
      assert.equal(DELTA_BLOCK[(data.delta as { type: string }).type], blockType)
      lastDelta = (data.delta as { type: string }).type
    } else if (type === 'content_block_stop') {
      assert.equal(data.index, open)
      // Anthropic ends a thinking block with its signature (@ai-sdk/anthropic drops the block's reasoning without one).
      if (blockType === 'thinking') assert.equal(lastDelta, 'signature_delta', 'a thinking block ends with its signature_delta')
      open = -1
    } else {
      assert.fail(`unexpected ${type}`)
    }
  }
  assert.equal(open, -1)
  return events
}

test('Anthropic framing as Claude Code reads it (BerriAI/litellm#30043, #33224): blocks never interleave, deltas match their block, usage complete', () => {
  for (const [upstream, pieces] of [
    ['openai', OPENAI_TEXT],
    ['openai', OPENAI_TOOLS],
    ['openai', OPENAI_TOOLS_INTERLEAVED],
    ['gemini', GEMINI_TOOLS],
  ] as const) {
    assertAnthropicGrammar(convertStream(upstream, 'anthropic', pieces).join(''))
  }
})

test('Anthropic: message_delta waits for the usage chunk that follows the finish chunk, not longer', () => {
  const writes = convertStream('openai', 'anthropic', OPENAI_TEXT)
  const finishWrite = writes.findIndex((write) => write.includes('content_block_stop') && !write.includes('content_block_start'))
  assert.ok(!writes[finishWrite]?.includes('message_delta'), 'held at the finish chunk')
  assert.ok(writes[finishWrite + 1]?.startsWith('event: message_delta'), 'sent with the usage chunk')
  assert.ok(!writes[finishWrite + 1]?.includes('message_stop'))
  assert.equal(writes.at(-1), 'event: message_stop\ndata: {"type":"message_stop"}\n\n')
  // Without a usage chunk it goes out at the end of the upstream stream.
  const noUsage = convertStream('openai', 'anthropic', [...OPENAI_TEXT.slice(0, 6), 'data: [DONE]\n\n'])
  assert.ok(noUsage.at(-1)?.startsWith('event: message_delta'))
})

test('Anthropic: message_start carries the usage known at the start; message_delta the final usage and the stop sequence', () => {
  const events = assertAnthropicGrammar(convertStream('gemini', 'anthropic', GEMINI_TEXT).join(''))
  const start = events[0]?.data.message as { usage: Record<string, number> }
  assert.equal(start.usage.input_tokens, 20)
  assert.equal(start.usage.cache_read_input_tokens, 100)
  const stop = decodeEncode('anthropic', [
    { type: 'start' },
    { type: 'text', text: 'a' },
    { type: 'finish', reason: 'stop_sequence', stopSequence: '###' },
  ])
  const delta = sseEvents(stop).find((event) => event.event === 'message_delta')
  assert.deepEqual(JSON.parse(delta?.data ?? '{}').delta, { stop_reason: 'stop_sequence', stop_sequence: '###' })
})

test('Anthropic: text that arrives while a tool call is incomplete waits until its JSON closes', () => {
  const body = decodeEncode('anthropic', [
    { type: 'start' },
    { type: 'tool_start', index: 0, id: 'call_a', name: 'f' },
    { type: 'tool_args', index: 0, json: '{"a":"}{' },
    { type: 'text', text: 'later' },
    { type: 'tool_args', index: 0, json: '\\""}' },
    { type: 'tool_args', index: 0, json: ' ' },
    { type: 'finish', reason: 'tool_calls' },
  ])
  const events = assertAnthropicGrammar(body)
  assert.deepEqual(
    events
      .slice(1, -2)
      .map(
        ({ type, data }) =>
          `${type}:${JSON.stringify((data.delta as { partial_json?: string; text?: string })?.partial_json ?? (data.delta as { text?: string })?.text ?? '')}`,
      ),
    [
      'content_block_start:""',
      'content_block_delta:"{\\"a\\":\\"}{"',
      'content_block_delta:"\\\\\\"\\"}"',
      'content_block_stop:""',
      'content_block_start:""',
      'content_block_delta:"later"',
      'content_block_stop:""',
    ],
  )
})

test('Anthropic: thinking with signatures, redacted thinking; a signature closes its block', () => {
  const events = assertAnthropicGrammar(
    decodeEncode('anthropic', [
      { type: 'start' },
      { type: 'reasoning', text: 'one' },
      { type: 'reasoning', text: '', signature: 's1' },
      { type: 'reasoning', text: 'two', signature: 's2' },
      { type: 'redacted_reasoning', data: 'opaque' },
      { type: 'text', text: 'answer' },
    ]),
  )
  const blocks = events.filter((event) => event.type === 'content_block_start').map((event) => event.data.content_block)
  assert.deepEqual(blocks, [
    { type: 'thinking', thinking: '', signature: '' },
    { type: 'thinking', thinking: '', signature: '' },
    { type: 'redacted_thinking', data: 'opaque' },
    { type: 'text', text: '' },
  ])
  const signatures = events.flatMap((event) => {
    const delta = event.data.delta as { type?: string; signature?: string } | undefined
    return delta?.type === 'signature_delta' ? [delta.signature] : []
  })
  assert.deepEqual(signatures, ['s1', 's2'])
})

test('Gemini: JSON-array mode writes the same chunks as SSE mode, element by element', () => {
  const sse = sseEvents(convertStream('openai', 'gemini', OPENAI_TOOLS, { model: 'm', id: 'r1', geminiSse: true }).join('')).map((event) =>
    JSON.parse(event.data),
  )
  const writes = convertStream('openai', 'gemini', OPENAI_TOOLS, { model: 'm', id: 'r1', geminiSse: false })
  assert.ok(writes[0]?.startsWith('['))
  assert.ok(writes.slice(1, -1).every((write) => write.startsWith(',')))
  assert.ok(writes.at(-1)?.endsWith(']'))
  assert.deepEqual(JSON.parse(writes.join('')), sse)
  assert.equal(sse.at(-1).candidates[0].finishReason, 'STOP')
  // An answer with no chunk before the end is still a JSON array.
  const empty = createEncoder('gemini', { model: 'm', geminiSse: false })
  assert.ok(Array.isArray(JSON.parse(empty.finish())))
})

test('Gemini: a function call goes out when its arguments close; arguments that are not an object end with MALFORMED_FUNCTION_CALL', () => {
  const encoder = createEncoder('gemini', { model: 'm' })
  encoder.encode({ type: 'start' })
  assert.equal(encoder.encode({ type: 'tool_start', index: 0, id: 'c1', name: 'f' }), '')
  assert.equal(encoder.encode({ type: 'tool_args', index: 0, json: '{"x":' }), '')
  assert.match(encoder.encode({ type: 'tool_args', index: 0, json: '1}' }), /"functionCall":\{"id":"c1","name":"f","args":\{"x":1\}\}/)
  encoder.encode({ type: 'tool_start', index: 1, id: 'c2', name: 'g' })
  encoder.encode({ type: 'tool_args', index: 1, json: 'not json' })
  const end = encoder.encode({ type: 'finish', reason: 'tool_calls' }) + encoder.finish()
  const last = JSON.parse(sseEvents(end).at(-1)?.data ?? '{}')
  assert.equal(last.candidates[0].finishReason, 'MALFORMED_FUNCTION_CALL')
  assert.equal(last.candidates[0].finishMessage, 'Malformed function call g: not json')
})

test('Gemini: calls go out in their order, a call whose arguments never close holding back the ones after it', () => {
  const encoder = createEncoder('gemini', { model: 'm' })
  encoder.encode({ type: 'start' })
  // Call 0 streams no arguments (its JSON never closes); call 1's close first.
  encoder.encode({ type: 'tool_start', index: 0, id: 'c0', name: 'f0' })
  encoder.encode({ type: 'tool_args', index: 0, json: '' })
  encoder.encode({ type: 'tool_start', index: 1, id: 'c1', name: 'f1' })
  assert.equal(encoder.encode({ type: 'tool_args', index: 1, json: '{"a":1}' }), '', 'held behind call 0')
  const end = encoder.encode({ type: 'finish', reason: 'tool_calls' }) + encoder.finish()
  const names = sseEvents(end).flatMap((e) =>
    JSON.parse(e.data).candidates[0].content.parts.map((p: { functionCall?: { name: string } }) => p.functionCall?.name),
  )
  assert.deepEqual(
    names.filter((n: string | undefined) => n !== undefined),
    ['f0', 'f1'],
  )
})

test('the output cap cuts a tool call’s arguments (length): Anthropic closes its block as it is, Gemini leaves it out; neither is malformed', () => {
  const cut = (finish: FinishReason): StreamEvent[] => [
    { type: 'start' },
    { type: 'tool_start', index: 0, id: 'c0', name: 'get_weather' },
    { type: 'tool_args', index: 0, json: '{"city":"Paris"}' },
    { type: 'tool_start', index: 1, id: 'c1', name: 'get_time' },
    { type: 'tool_args', index: 1, json: '{"tz":' },
    { type: 'tool_args', index: 1, json: '"Europe/Par' },
    { type: 'finish', reason: finish },
  ]
  const anthropic = assertAnthropicGrammar(decodeEncode('anthropic', cut('length')))
  assert.deepEqual(
    anthropic.filter((event) => event.type === 'content_block_start').map((event) => event.data.content_block),
    [
      { type: 'tool_use', id: 'c0', name: 'get_weather', input: {} },
      { type: 'tool_use', id: 'c1', name: 'get_time', input: {} },
    ],
  )
  assert.equal(anthropic.filter((event) => event.type === 'content_block_stop').length, 2)
  assert.equal((anthropic.at(-2)?.data.delta as { stop_reason?: string } | undefined)?.stop_reason, 'max_tokens')

  const gemini = sseEvents(decodeEncode('gemini', cut('length'))).map((event) => JSON.parse(event.data).candidates[0])
  assert.deepEqual(
    gemini.flatMap((candidate) => candidate.content.parts.filter((part: { functionCall?: unknown }) => part.functionCall)),
    [{ functionCall: { id: 'c0', name: 'get_weather', args: { city: 'Paris' } } }],
  )
  assert.equal(gemini.at(-1).finishReason, 'MAX_TOKENS')
  assert.equal(gemini.at(-1).finishMessage, undefined)

  // The same arguments in an answer that finished normally are a malformed call.
  assert.throws(() => decodeEncode('anthropic', cut('tool_calls')), MalformedStreamError)
  const finished = sseEvents(decodeEncode('gemini', cut('tool_calls'))).at(-1)
  assert.equal(JSON.parse(finished?.data ?? '{}').candidates[0].finishReason, 'MALFORMED_FUNCTION_CALL')
})

/** Encodes events for a client, then finishes. */
function decodeEncode(client: ApiFamily, events: StreamEvent[], includeUsage = false): string {
  const encoder = createEncoder(client, { model: 'm', id: 'id-1', includeUsage })
  return events.map((event) => encoder.encode(event)).join('') + encoder.finish()
}

test('finish reasons in every client format', () => {
  const expected: Record<FinishReason, [string, string, string]> = {
    stop: ['stop', 'end_turn', 'STOP'],
    stop_sequence: ['stop', 'stop_sequence', 'STOP'],
    length: ['length', 'max_tokens', 'MAX_TOKENS'],
    tool_calls: ['tool_calls', 'tool_use', 'STOP'],
    content_filter: ['content_filter', 'refusal', 'SAFETY'],
    pause: ['stop', 'pause_turn', 'STOP'],
  }
  for (const [reason, [openai, anthropic, gemini]] of Object.entries(expected) as [FinishReason, [string, string, string]][]) {
    const events: StreamEvent[] = [{ type: 'start' }, { type: 'text', text: 'x' }, { type: 'finish', reason }]
    const openAiChunks = sseEvents(decodeEncode('openai', events))
      .slice(0, -1)
      .map((event) => JSON.parse(event.data))
    assert.equal(openAiChunks.at(-1).choices[0].finish_reason, openai)
    const delta = sseEvents(decodeEncode('anthropic', events)).find((event) => event.event === 'message_delta')
    assert.equal(JSON.parse(delta?.data ?? '{}').delta.stop_reason, anthropic)
    const last = sseEvents(decodeEncode('gemini', events)).at(-1)
    assert.equal(JSON.parse(last?.data ?? '{}').candidates[0].finishReason, gemini)
  }
})

test('one finish: events after the finish, a second finish and a finish() after it add nothing but the end', () => {
  for (const client of ['openai', 'anthropic', 'gemini'] as const) {
    const once = decodeEncode(client, [{ type: 'start' }, { type: 'text', text: 'a' }, { type: 'finish', reason: 'stop' }])
    const twice = decodeEncode(client, [
      { type: 'start' },
      { type: 'text', text: 'a' },
      { type: 'finish', reason: 'stop' },
      { type: 'text', text: 'late' },
      { type: 'finish', reason: 'length' },
    ])
    const sameSecond = (body: string) => body.replace(/"created":\d+/g, '"created":0')
    assert.equal(sameSecond(twice), sameSecond(once), client)
  }
})

test('in-band errors in each client format end the stream without its terminator; heartbeats add nothing', () => {
  const failure = upstreamFailure('upstream died')
  const openai = createEncoder('openai', { model: 'm' })
  assert.equal(
    openai.error(failure),
    'data: {"error":{"message":"upstream died","type":"upstream_error","param":null,"code":"llmproxy_upstream_error"}}\n\n',
  )
  const anthropic = createEncoder('anthropic', { model: 'm' })
  assert.equal(anthropic.error(failure), 'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"upstream died"}}\n\n')
  const gemini = createEncoder('gemini', { model: 'm' })
  assert.equal(gemini.error(failure), 'data: {"error":{"code":502,"message":"upstream died","status":"UNAVAILABLE"}}\n\n')
  const array = createEncoder('gemini', { model: 'm', geminiSse: false })
  array.encode({ type: 'start' })
  const body = array.encode({ type: 'text', text: 'a' }) + array.error(failure)
  assert.ok(body.startsWith('[{') && body.includes(',{"error":{"code":502') && !body.endsWith(']'))
  assert.throws(() => JSON.parse(body), SyntaxError, 'an unterminated array cannot pass for a whole answer')
  for (const encoder of [openai, gemini]) assert.equal(encoder.keepAlive(), ': keep-alive\n\n')
  assert.equal(anthropic.keepAlive(), 'event: ping\ndata: {"type":"ping"}\n\n')
  const beating = createEncoder('gemini', { model: 'm', geminiSse: false })
  beating.encode({ type: 'start' })
  const whole =
    beating.encode({ type: 'text', text: 'a' }) + beating.keepAlive() + beating.encode({ type: 'text', text: 'b' }) + beating.finish()
  assert.equal(JSON.parse(whole).length, 3, 'a JSON array takes whitespace between its elements')
  assert.equal(
    createEncoder('anthropic', { model: 'm' }).encode({ type: 'error', message: 'x' }),
    '',
    'the router decides what an error event becomes',
  )
})

test('continuation: a second decoder feeding the same encoder continues one stream (one opening, one block, one finish, usage summed)', () => {
  for (const client of ['openai', 'anthropic', 'gemini'] as const) {
    const encoder = createEncoder(client, { model: 'm', id: 'one-id', includeUsage: true })
    let body = ''
    const feed = (upstream: ApiFamily, pieces: string[]) => {
      const decoder = createDecoder(upstream)
      const events: StreamEvent[] = []
      for (const piece of pieces) decoder.push(Buffer.from(piece), events)
      for (const event of events) body += encoder.encode(event)
    }
    // The first upstream is cut after "Hello" (text only, no usage); the second continues.
    feed('gemini', GEMINI_TEXT.slice(0, 2))
    feed('openai', OPENAI_TEXT.slice(3))
    body += encoder.finish()
    const events = sseEvents(body)
    if (client === 'openai') {
      const chunks = events.slice(0, -1).map((event) => JSON.parse(event.data))
      assert.equal(chunks.filter((chunk) => chunk.choices[0]?.delta.role).length, 1)
      assert.equal(chunks.map((chunk) => chunk.choices[0]?.delta.content ?? '').join(''), 'HelloHello, wörld 👋')
      assert.equal(chunks.filter((chunk) => chunk.choices[0]?.finish_reason).length, 1)
      assert.equal(events.filter((event) => event.data === '[DONE]').length, 1)
      // 20 + 100 cached from the first attempt's start, 120 from the second's usage chunk.
      assert.equal(chunks.at(-1).usage.prompt_tokens, 240)
    } else if (client === 'anthropic') {
      const parsed = assertAnthropicGrammar(body)
      assert.equal(parsed.filter((event) => event.type === 'message_start').length, 1)
      const texts = parsed.filter(
        (event) => event.type === 'content_block_start' && (event.data.content_block as { type: string }).type === 'text',
      )
      assert.equal(texts.length, 1, 'the text continues in the open text block')
    } else {
      const chunks = events.map((event) => JSON.parse(event.data))
      assert.equal(chunks.filter((chunk) => chunk.candidates[0].finishReason).length, 1)
      assert.equal(new Set(chunks.map((chunk) => chunk.responseId)).size, 1)
    }
  }
})

test('resume: an encoder for a stream whose first part went out byte for byte sends no opening and continues the open block', () => {
  const anthropic = createEncoder('anthropic', { model: 'm', id: 'msg_1' }, { block: { index: 0, type: 'text', open: true } })
  const decoder = createDecoder('openai')
  const events: StreamEvent[] = []
  for (const piece of OPENAI_TEXT.slice(3)) decoder.push(Buffer.from(piece), events)
  const body = events.map((event) => anthropic.encode(event)).join('') + anthropic.finish()
  const types = sseEvents(body).map((event) => JSON.parse(event.data))
  assert.equal(types[0].type, 'content_block_delta')
  assert.equal(types[0].index, 0)
  assert.deepEqual(
    types.map((event) => event.type),
    ['content_block_delta', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop'],
  )

  const openai = createEncoder('openai', { model: 'm', id: 'chatcmpl-1' }, { created: 1234 })
  const chunk = openai.encode({ type: 'start' }) + openai.encode({ type: 'text', text: 'more' })
  assert.deepEqual(JSON.parse(chunk.slice(6)), {
    id: 'chatcmpl-1',
    object: 'chat.completion.chunk',
    created: 1234,
    model: 'm',
    choices: [{ index: 0, delta: { content: 'more' }, logprobs: null, finish_reason: null }],
  })

  const gemini = createEncoder('gemini', { model: 'm', geminiSse: false }, { usage: { inputTokens: 5, outputTokens: 3 } })
  const rest = gemini.encode({ type: 'text', text: 'more' }) + gemini.encode({ type: 'finish', reason: 'stop' }) + gemini.finish()
  assert.ok(rest.startsWith(',{'), 'the array was opened by the first part')
  assert.deepEqual(JSON.parse(`[{}${rest}`).at(-1).usageMetadata, { promptTokenCount: 5, candidatesTokenCount: 3, totalTokenCount: 8 })
})

test('reasoning reaches OpenAI clients as reasoning_content, its signature on the next call id', () => {
  const chunks = sseEvents(
    decodeEncode('openai', [
      { type: 'start' },
      { type: 'reasoning', text: 'think' },
      { type: 'reasoning', text: '', signature: 'sig' },
      { type: 'tool_start', index: 0, id: 'toolu_1', name: 'f' },
      { type: 'tool_start', index: 1, id: 'toolu_2', name: 'g' },
    ]),
  )
    .slice(0, -1)
    .map((event) => JSON.parse(event.data).choices[0]?.delta)
  assert.deepEqual(chunks.slice(1, 6), [
    { reasoning_content: 'think' },
    { tool_calls: [{ index: 0, id: 'toolu_1__sig__sig', type: 'function', function: { name: 'f', arguments: '' } }] },
    // Calls without arguments get `{}` (the first when the next starts, the last before the finish).
    { tool_calls: [{ index: 0, function: { arguments: '{}' } }] },
    { tool_calls: [{ index: 1, id: 'toolu_2', type: 'function', function: { name: 'g', arguments: '' } }] },
    { tool_calls: [{ index: 1, function: { arguments: '{}' } }] },
  ])
})

test('an answer with redacted thinking hands OpenAI and Gemini clients no signature (Claude takes its thinking back only whole)', () => {
  // Anthropic's order: the thinking block and its signature, then the redacted block, then the call.
  const signedFirst: StreamEvent[] = [
    { type: 'start' },
    { type: 'reasoning', text: 'think' },
    { type: 'reasoning', text: '', signature: 'sig' },
    { type: 'redacted_reasoning', data: 'opaque' },
    { type: 'reasoning', text: 'more' },
    { type: 'reasoning', text: '', signature: 'sig2' },
    { type: 'tool_start', index: 0, id: 'toolu_1', name: 'f' },
    { type: 'tool_args', index: 0, json: '{}' },
    { type: 'finish', reason: 'tool_calls' },
  ]
  const redactedFirst = [signedFirst[0], signedFirst[3], ...signedFirst.slice(1, 3), ...signedFirst.slice(4)] as StreamEvent[]
  for (const [what, events] of [
    ['signed first', signedFirst],
    ['redacted first', redactedFirst],
  ] as const) {
    const openai = sseEvents(decodeEncode('openai', events))
      .slice(0, -1)
      .map((event) => JSON.parse(event.data).choices[0]?.delta)
    assert.deepEqual(
      openai.flatMap((delta) => delta?.tool_calls?.map((call: { id?: string }) => call.id) ?? []),
      ['toolu_1', undefined],
      what,
    )
    const parts = sseEvents(decodeEncode('gemini', events)).flatMap((event) => JSON.parse(event.data).candidates[0].content.parts)
    assert.deepEqual(
      parts.filter((part) => part.thought === true),
      [
        { text: 'think', thought: true },
        { text: 'more', thought: true },
      ],
      what,
    )
    assert.ok(!JSON.stringify(parts).includes('thoughtSignature'), what)
  }
  // Without a redacted block the Gemini signature waits for the end of the reasoning, then goes out in order.
  const signed = signedFirst.filter((event) => event.type !== 'redacted_reasoning')
  const parts = sseEvents(decodeEncode('gemini', signed)).flatMap((event) => JSON.parse(event.data).candidates[0].content.parts)
  assert.deepEqual(parts.slice(0, 5), [
    { text: 'think', thought: true },
    { text: '', thought: true, thoughtSignature: 'sig' },
    { text: 'more', thought: true },
    { text: '', thought: true, thoughtSignature: 'sig2' },
    { functionCall: { id: 'toolu_1', name: 'f', args: {} } },
  ])
})

/** prompt (all input tokens), cached (cache reads) and completion tokens as each client format states them. */
function clientUsage(client: ApiFamily, body: string): [number, number, number] {
  const events = sseEvents(body).filter((event) => event.data !== '[DONE]')
  if (client === 'openai') {
    const usage = JSON.parse(events.at(-1)?.data ?? '{}').usage
    return [usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens, usage.completion_tokens]
  }
  if (client === 'anthropic') {
    const usage = JSON.parse(events.find((event) => event.event === 'message_delta')?.data ?? '{}').usage
    return [
      usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens,
      usage.cache_read_input_tokens,
      usage.output_tokens,
    ]
  }
  const usage = JSON.parse(events.at(-1)?.data ?? '{}').usageMetadata
  return [usage.promptTokenCount, usage.cachedContentTokenCount ?? 0, usage.candidatesTokenCount + (usage.thoughtsTokenCount ?? 0)]
}

test('usage on a translated stream is never zero (envoyproxy/ai-gateway#2352) and cached tokens are neither lost nor counted twice (QuantumNous/new-api#6144)', () => {
  // What each upstream fixture reports: all prompt tokens, cache reads, completion tokens.
  const upstreams: [ApiFamily, string[], [number, number, number]][] = [
    ['openai', OPENAI_TEXT, [120, 100, 30]],
    ['anthropic', ANTHROPIC_TOOLS, [170, 100, 42]],
    ['gemini', GEMINI_TOOLS, [120, 100, 30]],
  ]
  for (const [upstream, pieces, reported] of upstreams) {
    for (const client of ['openai', 'anthropic', 'gemini'] as const) {
      if (client === upstream) continue
      const body = convertStream(upstream, client, pieces, { model: 'm', includeUsage: true }).join('')
      assert.deepEqual(clientUsage(client, body), reported, `${upstream} → ${client}`)
    }
  }
})

test('continuous usage (vLLM --enable-force-include-usage): the cache reads of the final usage chunk reach Anthropic and Gemini clients', () => {
  // Every chunk, the finish chunk too, reports the running usage without prompt_tokens_details; only the usage
  // chunk after the finish has the cached tokens.
  const running = OPENAI_TEXT.map((piece, i) =>
    piece.endsWith(']}\n\n')
      ? `${piece.slice(0, -3)},"usage":{"prompt_tokens":120,"completion_tokens":${i},"total_tokens":${120 + i}}}\n\n`
      : piece,
  )
  for (const client of ['anthropic', 'gemini'] as const) {
    const body = convertStream('openai', client, running, { model: 'm', includeUsage: true }).join('')
    assert.deepEqual(clientUsage(client, body), [120, 100, 30], client)
  }
})

test('a content filter reaches Anthropic clients as refusal, never end_turn', () => {
  const fromOpenAi = convertStream('openai', 'anthropic', [
    'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"I"},"finish_reason":null}]}\n\n',
    'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"content_filter"}]}\n\n',
    'data: [DONE]\n\n',
  ]).join('')
  const fromGemini = convertStream('gemini', 'anthropic', [
    'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"I"}]},"finishReason":"SAFETY","index":0}]}\n\n',
  ]).join('')
  for (const body of [fromOpenAi, fromGemini]) {
    const delta = sseEvents(body).find((event) => event.event === 'message_delta')
    assert.equal(JSON.parse(delta?.data ?? '{}').delta.stop_reason, 'refusal')
  }
})
