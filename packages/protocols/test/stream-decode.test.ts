import assert from 'node:assert/strict'
import { test } from 'node:test'
import { MAX_EVENT_CHARS, SseDecoder } from '../src/convert/sse.js'
import { type ApiFamily, MalformedStreamError, type StreamEvent } from '../src/index.js'
import {
  ANTHROPIC_TOOLS,
  decodeAll,
  GEMINI_TOOLS,
  OPENAI_TEXT,
  OPENAI_TOOLS,
  OPENAI_TOOLS_INDEX_ZERO,
  OPENAI_TOOLS_INTERLEAVED,
  OPENAI_TOOLS_NO_INDEX,
} from './stream-fixtures.js'

/** Records the framing layer's output. */
class Recorder extends SseDecoder {
  readonly events: { event: string; data: string }[] = []
  readonly complete = false
  readonly finished = false
  protected onEvent(event: string, data: string): void {
    this.events.push({ event, data })
  }
}

/** The event-stream rules applied to a whole body at once (a second, independent reading to compare with). */
function referenceParse(body: string): { event: string; data: string }[] {
  const events: { event: string; data: string }[] = []
  let event = ''
  let data: string[] | null = null
  const dispatch = () => {
    if (data !== null) events.push({ event, data: data.join('\n') })
    event = ''
    data = null
  }
  for (const line of body.replace(/^\uFEFF/, '').split(/\r\n|\r|\n/)) {
    if (line === '') dispatch()
    else if (line.startsWith(':')) continue
    else {
      const match = /^([^:]*)(?::(.*))?$/.exec(line)
      const name = match?.[1] ?? ''
      const value = (match?.[2] ?? '').replace(/^ /, '')
      if (name === 'data') data = data === null ? [value] : [...data, value]
      else if (name === 'event') event = value
    }
  }
  dispatch()
  return events
}

function record(pieces: Buffer[]): { event: string; data: string }[] {
  const recorder = new Recorder()
  for (const piece of pieces) recorder.push(piece, [])
  recorder.end([])
  return recorder.events
}

function splits(bytes: Buffer): Buffer[][] {
  const ways: Buffer[][] = [[bytes], Array.from(bytes, (byte) => Buffer.from([byte]))]
  for (let at = 0; at <= bytes.length; at++) ways.push([bytes.subarray(0, at), bytes.subarray(at)])
  return ways
}

const FRAMING_CASES = [
  'data: {"a":1}\n\n',
  'event: message_start\ndata: {"type":"message_start"}\n\nevent: ping\ndata: {}\n\n',
  ': keep-alive\n\ndata: one\ndata: two\n\n:comment\ndata:no-space\n\n',
  'id: 7\nretry: 100\nunknown\ndata\n\ndata: x\n\n',
  'event: orphan\n\ndata: after an event without data\n\n',
  'data: {"text":"wörld 👋 ünïcödé"}\n\n',
  'data: last event without a blank line',
  '\uFEFFdata: after a byte order mark\n\n',
]

test('SSE framing matches the reference reading at every split, byte by byte, with LF, CRLF and CR line ends', () => {
  for (const body of FRAMING_CASES) {
    for (const variant of [body, body.replaceAll('\n', '\r\n'), body.replaceAll('\n', '\r')]) {
      const expected = referenceParse(variant)
      for (const pieces of splits(Buffer.from(variant))) {
        assert.deepEqual(record(pieces), expected, `${JSON.stringify(variant)} in ${pieces.length} pieces`)
      }
    }
  }
})

test('SSE framing: a CR at a chunk end and its LF in the next chunk are one line end, also across an empty chunk', () => {
  const pieces = ['data: a\r', '', '\n', '\r\n', 'data: b\r\n\r\n'].map((text) => Buffer.from(text))
  assert.deepEqual(record(pieces), [
    { event: '', data: 'a' },
    { event: '', data: 'b' },
  ])
})

/** Events with generated tool-call ids made comparable. */
function comparable(events: StreamEvent[]): StreamEvent[] {
  return events.map((event) =>
    event.type === 'tool_start' && /^call_[0-9a-f]{24}$/.test(event.id) ? { ...event, id: 'generated' } : event,
  )
}

const STREAMS: [ApiFamily, string[]][] = [
  ['openai', OPENAI_TEXT],
  ['openai', OPENAI_TOOLS],
  ['openai', OPENAI_TOOLS_INTERLEAVED],
  ['openai', OPENAI_TOOLS_NO_INDEX],
  ['openai', OPENAI_TOOLS_INDEX_ZERO],
  ['anthropic', ANTHROPIC_TOOLS],
  ['gemini', GEMINI_TOOLS],
]

test('decoders give the same events for any chunking and any line ends', () => {
  for (const [upstream, pieces] of STREAMS) {
    const body = pieces.join('')
    const expected = decodeAll(upstream, pieces)
    assert.equal(expected.complete, true)
    const lf = body.replaceAll('\r\n', '\n')
    for (const variant of [lf, lf.replaceAll('\n', '\r\n'), lf.replaceAll('\n', '\r')]) {
      for (const split of splits(Buffer.from(variant))) {
        const got = decodeAll(upstream, split)
        assert.deepEqual(comparable(got.events), comparable(expected.events), `${upstream} in ${split.length} pieces`)
        assert.equal(got.complete, true)
      }
    }
  }
})

test('OpenAI decoder: reasoning, text, finish, then the usage chunk; complete after [DONE]', () => {
  const { events } = decodeAll('openai', OPENAI_TEXT.slice(0, -1))
  assert.deepEqual(events, [
    { type: 'start', id: 'chatcmpl-up1', model: 'Qwen/Qwen3-8B' },
    { type: 'reasoning', text: 'Let me think' },
    { type: 'reasoning', text: ' about it.' },
    { type: 'text', text: 'Hello' },
    { type: 'text', text: ', wörld 👋' },
    { type: 'finish', reason: 'stop', rawReason: 'stop' },
    { type: 'usage', usage: { inputTokens: 20, outputTokens: 30, cacheReadTokens: 100 } },
  ])
  assert.equal(decodeAll('openai', OPENAI_TEXT.slice(0, -1)).complete, false, 'no [DONE] yet')
  assert.equal(decodeAll('openai', OPENAI_TEXT).complete, true)
})

function openAi(choice: string, extra = ''): string {
  return `data: {"id":"c1","model":"m","choices":[${choice}]${extra}}\n\n`
}

test('OpenAI decoder: a chunk with content and a finish reason is two events; vLLM `reasoning` and stop strings', () => {
  const { events } = decodeAll('openai', [
    openAi('{"index":0,"delta":{"reasoning":"hmm"}}'),
    openAi('{"index":0,"delta":{"content":"end"},"finish_reason":"stop","stop_reason":"###"}'),
  ])
  assert.deepEqual(events.slice(1), [
    { type: 'reasoning', text: 'hmm' },
    { type: 'text', text: 'end' },
    { type: 'finish', reason: 'stop_sequence', stopSequence: '###', rawReason: 'stop' },
  ])
})

test('OpenAI decoder: a refusal is text and a content-filter finish', () => {
  const { events } = decodeAll('openai', [
    openAi('{"index":0,"delta":{"refusal":"I cannot help with that."}}'),
    openAi('{"index":0,"delta":{},"finish_reason":"stop"}'),
  ])
  assert.deepEqual(events.slice(1), [
    { type: 'text', text: 'I cannot help with that.' },
    { type: 'finish', reason: 'content_filter', rawReason: 'stop' },
  ])
})

test('OpenAI decoder: arguments before the name wait for it; a call without an id gets one; later names are ignored', () => {
  const { events } = decodeAll('openai', [
    openAi('{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"a\\""}}]}}'),
    openAi('{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":":1}"}}]}}'),
    openAi('{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":""}}]}}'),
    openAi('{"index":0,"delta":{},"finish_reason":"tool_calls"}'),
  ])
  assert.deepEqual(comparable(events.slice(1)), [
    { type: 'tool_start', index: 0, id: 'generated', name: 'f' },
    { type: 'tool_args', index: 0, json: '{"a":1}' },
    { type: 'finish', reason: 'tool_calls', rawReason: 'tool_calls' },
  ])
})

test('OpenAI decoder: calls without an index, or all at index 0, are told apart by a new id or, without an index, a new name', () => {
  const weather = { type: 'tool_start', index: 0, id: 'call_a', name: 'get_weather' }
  assert.deepEqual(comparable(decodeAll('openai', OPENAI_TOOLS_NO_INDEX).events.slice(1, -2)), [
    weather,
    { type: 'tool_args', index: 0, json: '{"city":' },
    { type: 'tool_args', index: 0, json: '"Paris"}' },
    { type: 'tool_start', index: 1, id: 'generated', name: 'get_time' },
    { type: 'tool_args', index: 1, json: '{"tz":"CET"}' },
  ])
  assert.deepEqual(decodeAll('openai', OPENAI_TOOLS_INDEX_ZERO).events.slice(1, -2), [
    weather,
    { type: 'tool_args', index: 0, json: '{"city":' },
    { type: 'tool_args', index: 0, json: '"Paris"}' },
    { type: 'tool_start', index: 1, id: 'call_b', name: 'get_time' },
    { type: 'tool_args', index: 1, json: '{"tz":' },
    { type: 'tool_args', index: 1, json: '"CET"}' },
  ])
})

test('OpenAI decoder: a call that never gets a name is malformed at the finish', () => {
  assert.throws(
    () =>
      decodeAll('openai', [
        openAi('{"index":0,"delta":{"tool_calls":[{"index":0,"id":"x","function":{"arguments":"{}"}}]}}'),
        openAi('{"index":0,"delta":{},"finish_reason":"tool_calls"}'),
      ]),
    MalformedStreamError,
  )
})

test('OpenAI decoder: an error data line and an aborted generation are error events, not a finish', () => {
  const error = decodeAll('openai', [
    openAi('{"index":0,"delta":{"content":"a"}}'),
    'data: {"error":{"message":"boom","type":"server_error"}}\n\n',
  ])
  assert.deepEqual(error.events.at(-1), { type: 'error', message: 'boom', errorType: 'server_error' })
  const aborted = decodeAll('openai', [openAi('{"index":0,"delta":{},"finish_reason":"abort"}'), 'data: [DONE]\n\n'])
  assert.deepEqual(aborted.events.at(-1), {
    type: 'error',
    message: 'The upstream ended the generation with finish_reason abort.',
    errorType: 'abort',
  })
  assert.equal(aborted.complete, false)
})

test('OpenAI decoder: usage on the first chunk (continuous usage stats) goes with the start', () => {
  const { events } = decodeAll('openai', [
    openAi('{"index":0,"delta":{"role":"assistant"}}', ',"usage":{"prompt_tokens":7,"completion_tokens":0}'),
  ])
  assert.deepEqual(events, [{ type: 'start', id: 'c1', model: 'm', usage: { inputTokens: 7, outputTokens: 0 } }])
})

test('Anthropic decoder: every event of a stream with thinking, text and a tool call', () => {
  const { events, complete } = decodeAll('anthropic', ANTHROPIC_TOOLS)
  assert.equal(complete, true)
  assert.deepEqual(events, [
    {
      type: 'start',
      id: 'msg_up1',
      model: 'claude-sonnet-4-5',
      usage: { inputTokens: 20, outputTokens: 1, cacheReadTokens: 100, cacheWriteTokens: 50 },
    },
    { type: 'reasoning', text: 'Let me think' },
    { type: 'reasoning', text: '', signature: 'sig-abc' },
    { type: 'text', text: 'Hello' },
    { type: 'text', text: ', wörld 👋' },
    { type: 'tool_start', index: 0, id: 'toolu_01', name: 'get_weather' },
    { type: 'tool_args', index: 0, json: '{"city":' },
    { type: 'tool_args', index: 0, json: '"Paris"}' },
    { type: 'finish', reason: 'tool_calls', rawReason: 'tool_use' },
    { type: 'usage', usage: { outputTokens: 42 } },
  ])
})

function anthropic(type: string, body: string): string {
  return `event: ${type}\ndata: {"type":"${type}"${body}}\n\n`
}

test('Anthropic decoder: stop sequences, refusals, redacted thinking; server tool blocks are not passed on', () => {
  const { events } = decodeAll('anthropic', [
    anthropic('content_block_start', ',"index":0,"content_block":{"type":"redacted_thinking","data":"opaque"}'),
    anthropic('content_block_stop', ',"index":0'),
    anthropic(
      'content_block_start',
      ',"index":1,"content_block":{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}',
    ),
    anthropic('content_block_delta', ',"index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"query\\":\\"x\\"}"}'),
    anthropic('content_block_stop', ',"index":1'),
    anthropic('message_delta', ',"delta":{"stop_reason":"stop_sequence","stop_sequence":"END"},"usage":{"output_tokens":3}'),
  ])
  assert.deepEqual(events, [
    { type: 'redacted_reasoning', data: 'opaque' },
    { type: 'finish', reason: 'stop_sequence', stopSequence: 'END', rawReason: 'stop_sequence' },
    { type: 'usage', usage: { outputTokens: 3 } },
  ])
  const refusal = decodeAll('anthropic', [anthropic('message_delta', ',"delta":{"stop_reason":"refusal"}')])
  assert.deepEqual(refusal.events, [{ type: 'finish', reason: 'content_filter', rawReason: 'refusal' }])
})

test('Anthropic decoder: an error event; no message_stop means not complete', () => {
  const { events, complete } = decodeAll('anthropic', [
    anthropic('message_delta', ',"delta":{"stop_reason":"end_turn"}'),
    'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n',
  ])
  assert.deepEqual(events.at(-1), { type: 'error', message: 'Overloaded', errorType: 'overloaded_error' })
  assert.equal(complete, false)
})

test('Gemini decoder: thoughts, text, a whole function call with its signature, the finish, then usage', () => {
  const { events, complete } = decodeAll('gemini', GEMINI_TOOLS)
  assert.equal(complete, true)
  assert.deepEqual(comparable(events), [
    { type: 'start', id: 'resp-up1', model: 'gemini-2.5-flash', usage: { inputTokens: 20, outputTokens: 0, cacheReadTokens: 100 } },
    { type: 'reasoning', text: 'Let me think' },
    { type: 'text', text: 'Hello' },
    { type: 'usage', usage: { inputTokens: 20, outputTokens: 0, cacheReadTokens: 100 } },
    { type: 'text', text: ', wörld 👋' },
    { type: 'usage', usage: { inputTokens: 20, outputTokens: 0, cacheReadTokens: 100 } },
    { type: 'tool_start', index: 0, id: 'generated', name: 'get_weather', signature: 'gsig-1' },
    { type: 'tool_args', index: 0, json: '{"city":"Paris"}' },
    { type: 'finish', reason: 'tool_calls', rawReason: 'STOP' },
    { type: 'usage', usage: { inputTokens: 20, outputTokens: 30, cacheReadTokens: 100, reasoningTokens: 18 } },
  ])
})

function gemini(candidate: string, extra = ''): string {
  return `data: {"candidates":[${candidate}]${extra}}\n\n`
}

test('Gemini decoder: generated tool-call ids are well formed, distinct and stable; a given id is kept', () => {
  const { events } = decodeAll('gemini', [
    gemini(
      '{"content":{"role":"model","parts":[{"functionCall":{"name":"a","args":{}}},{"functionCall":{"id":"given","name":"b"}}]},"index":0}',
    ),
    gemini('{"content":{"role":"model","parts":[{"functionCall":{"name":"c","args":{"x":[1]}}}]},"finishReason":"STOP","index":0}'),
  ])
  const starts = events.filter((event) => event.type === 'tool_start')
  assert.equal(starts.length, 3)
  assert.equal(starts[1]?.id, 'given')
  assert.match(starts[0]?.id ?? '', /^call_[0-9a-f]{24}$/)
  assert.notEqual(starts[0]?.id, starts[2]?.id)
  assert.deepEqual(
    events.filter((event) => event.type === 'tool_args').map((event) => event.json),
    ['{}', '{}', '{"x":[1]}'],
  )
})

test('Gemini decoder: blocked output is a content filter; MALFORMED_FUNCTION_CALL and OTHER are errors, never a stop (BerriAI/litellm#21744)', () => {
  for (const reason of ['SAFETY', 'RECITATION', 'BLOCKLIST', 'PROHIBITED_CONTENT', 'SPII']) {
    const { events, complete } = decodeAll('gemini', [gemini(`{"finishReason":"${reason}","index":0}`)])
    assert.deepEqual(events.at(-1), { type: 'finish', reason: 'content_filter', rawReason: reason })
    assert.equal(complete, true)
  }
  const blocked = decodeAll('gemini', ['data: {"promptFeedback":{"blockReason":"SAFETY"}}\n\n'])
  assert.deepEqual(blocked.events.at(-1), { type: 'finish', reason: 'content_filter', rawReason: 'SAFETY' })
  for (const reason of ['MALFORMED_FUNCTION_CALL', 'OTHER', 'FINISH_REASON_UNSPECIFIED']) {
    const { events, complete } = decodeAll('gemini', [gemini(`{"finishReason":"${reason}","finishMessage":"why","index":0}`)])
    assert.deepEqual(events.at(-1), { type: 'error', message: `The upstream ended the generation with ${reason}: why`, errorType: reason })
    assert.equal(complete, false)
  }
  const error = decodeAll('gemini', ['data: {"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}\n\n'])
  assert.deepEqual(error.events, [{ type: 'error', message: 'The model is overloaded.', errorType: 'UNAVAILABLE' }])
})

test('decoders throw MalformedStreamError on data that is not a JSON object', () => {
  for (const upstream of ['openai', 'anthropic', 'gemini'] as const) {
    for (const data of ['{"choices":[', 'null', '[1]', '"text"']) {
      assert.throws(() => decodeAll(upstream, [`data: ${data}\n\n`]), MalformedStreamError, `${upstream}: ${data}`)
    }
  }
  // A trailing event cut in the middle, completed by end().
  assert.throws(() => decodeAll('openai', ['data: {"choices":[']), MalformedStreamError)
})

test('an event whose end never comes is malformed once it passes MAX_EVENT_CHARS, not held without bound', () => {
  const piece = Buffer.alloc(64 * 1024, 'x')
  // A line that never ends, and data lines that never get their blank line.
  for (const [opening, chunk] of [
    ['data: {"a":"', piece],
    ['', Buffer.concat([Buffer.from('data: '), piece, Buffer.from('\n')])],
  ] as const) {
    const recorder = new Recorder()
    recorder.push(Buffer.from(opening), [])
    let pushed = opening.length
    try {
      while (pushed <= 2 * MAX_EVENT_CHARS) {
        recorder.push(chunk, [])
        pushed += chunk.length
      }
    } catch (err) {
      assert.ok(err instanceof MalformedStreamError)
    }
    assert.ok(pushed > MAX_EVENT_CHARS - chunk.length && pushed <= MAX_EVENT_CHARS, `${pushed} bytes read before the failure`)
    // What was held of it is dropped: a later event is read on its own.
    recorder.push(Buffer.from('\n\ndata: {}\n\n'), [])
    assert.deepEqual(recorder.events, [{ event: '', data: '{}' }])
  }
  // An event just within the bound is read whole.
  const within = Buffer.from(`data: ${'x'.repeat(MAX_EVENT_CHARS - 6)}\n\n`)
  assert.equal(record([within.subarray(0, within.length >> 1), within.subarray(within.length >> 1)])[0]?.data.length, MAX_EVENT_CHARS - 6)
})

test('vLLM ends a tool call the request forced by name with finish_reason "stop": it is a tool-call finish', () => {
  const chunk = (fields: Record<string, unknown>) => `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', ...fields })}\n\n`
  const stream = [
    chunk({ choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] }),
    chunk({
      choices: [
        {
          index: 0,
          delta: { tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'lookup', arguments: '{"q":1}' } }] },
          finish_reason: null,
        },
      ],
    }),
    chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] }),
    'data: [DONE]\n\n',
  ].join('')
  const finish = decodeAll('openai', [stream]).events.find((event) => event.type === 'finish')
  assert.equal(finish?.type === 'finish' ? finish.reason : null, 'tool_calls')
})

test('an Anthropic-compatible server that ends a tool_use answer with end_turn: it is a tool-call finish', () => {
  const { events } = decodeAll('anthropic', [
    anthropic('content_block_start', ',"index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_date","input":{}}'),
    anthropic('content_block_stop', ',"index":0'),
    anthropic('message_delta', ',"delta":{"stop_reason":"end_turn"}'),
  ])
  assert.deepEqual(events.at(-1), { type: 'finish', reason: 'tool_calls', rawReason: 'end_turn' })
})
