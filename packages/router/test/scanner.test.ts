import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import type { Protocol } from '@llmproxy/core'
import { ANTHROPIC_MESSAGES, type Endpoint, GEMINI_GENERATE, OPENAI_ENDPOINTS, UsageExtractor } from '@llmproxy/protocols'
import { LineEnds } from '../src/line-ends.js'
import { StreamScanner } from '../src/scanner.js'

const CHAT = OPENAI_ENDPOINTS.find((e) => e.path === '/v1/chat/completions') as Endpoint
const RESPONSES = OPENAI_ENDPOINTS.find((e) => e.path === '/v1/responses') as Endpoint

const chatChunk = (content: string) =>
  `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":${JSON.stringify(content)}},"finish_reason":null}],"usage":null}\n\n`

/** One stream per wire format, as the upstreams write them. */
const STREAMS: { name: string; endpoint: Endpoint; protocol: Protocol; text: string }[] = [
  {
    name: 'OpenAI chat with include_usage',
    endpoint: CHAT,
    protocol: 'openai',
    text:
      chatChunk('lorem ') +
      chatChunk('data: ipsum ') +
      'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\n\n' +
      'data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}\n\n' +
      'data: [DONE]\n\n',
  },
  {
    name: 'OpenAI Responses',
    endpoint: RESPONSES,
    protocol: 'openai',
    text:
      'event: response.created\ndata: {"type":"response.created","response":{"id":"r","usage":null}}\n\n' +
      'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"lorem "}\n\n' +
      'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"ipsum "}\n\n' +
      'event: response.completed\ndata: {"type":"response.completed","response":{"id":"r","usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}}\n\n',
  },
  {
    name: 'Anthropic Messages',
    endpoint: ANTHROPIC_MESSAGES,
    protocol: 'anthropic',
    text:
      'event: message_start\ndata: {"type":"message_start","message":{"id":"m","usage":{"input_tokens":7,"output_tokens":1}}}\n\n' +
      'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n' +
      'event: ping\ndata: {"type":"ping"}\n\n' +
      'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lorem "}}\n\n' +
      'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n' +
      'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}\n\n' +
      'event: message_stop\ndata: {"type":"message_stop"}\n\n',
  },
  {
    name: 'Gemini alt=sse',
    endpoint: GEMINI_GENERATE,
    protocol: 'gemini',
    text:
      'data: {"candidates":[{"content":{"parts":[{"text":"lorem "}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":1,"totalTokenCount":5}}\n\n' +
      'data: {"candidates":[{"content":{"parts":[{"text":"ipsum "}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2,"totalTokenCount":6}}\n\n',
  },
]

/** The reference: the whole text parsed at once, by lines, as the SSE spec reads it. */
function reference(text: string, endpoint: Endpoint, protocol: Protocol) {
  const lines = text.split(/\r?\n/)
  let dataEvents = 0
  let valid = true
  for (const line of lines) {
    if (!line.startsWith('data:')) continue
    dataEvents++
    const value = line.slice(5).replace(/^ /, '')
    if (value === '[DONE]') continue
    try {
      JSON.parse(value)
    } catch {
      valid = false
    }
  }
  const terminated = endpoint.endsWithDone
    ? lines.some((line) => /^data: ?\[DONE\]$/.test(line))
    : endpoint.terminators.some((needle) => text.includes(needle.bytes.toString()))
  const usage = new UsageExtractor(protocol)
  usage.write(Buffer.from(text))
  return { dataEvents, valid, terminated, usage: usage.result() }
}

function scanChunks(chunks: Buffer[], endpoint: Endpoint, protocol: Protocol) {
  const extractor = new UsageExtractor(protocol)
  const scanner = new StreamScanner(endpoint, extractor)
  let valid = true
  for (const chunk of chunks) {
    if (!scanner.scan(chunk)) valid = false
    // The usage tap reads what the scanner says may carry a report; nothing else.
    if (scanner.tapFrom < chunk.length) extractor.write(chunk, scanner.tapFrom)
    scanner.checkEnd(chunk)
  }
  return { dataEvents: scanner.dataEvents, valid, terminated: scanner.sawTerminator, usage: extractor.result() }
}

/** A small deterministic PRNG (mulberry32), so a failing chunking can be replayed. */
function prng(seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function chunkings(bytes: Buffer, seed: number): { name: string; chunks: Buffer[] }[] {
  const out: { name: string; chunks: Buffer[] }[] = [{ name: 'whole', chunks: [bytes] }]
  for (let i = 1; i < bytes.length; i++) out.push({ name: `split at ${i}`, chunks: [bytes.subarray(0, i), bytes.subarray(i)] })
  out.push({ name: '1-byte chunks', chunks: Array.from(bytes, (_b, i) => bytes.subarray(i, i + 1)) })
  const random = prng(seed)
  for (let round = 0; round < 200; round++) {
    const chunks: Buffer[] = []
    let at = 0
    while (at < bytes.length) {
      const size = 1 + Math.floor(random() * 24)
      chunks.push(bytes.subarray(at, at + size))
      at += size
    }
    out.push({ name: `random chunking ${round} (seed ${seed})`, chunks })
  }
  return out
}

describe('StreamScanner agrees with a reference parser however the stream is cut', () => {
  for (const stream of STREAMS) {
    for (const [ending, text] of [
      ['LF', stream.text],
      ['CRLF', stream.text.replaceAll('\n', '\r\n')],
    ] as const) {
      test(`${stream.name}, ${ending}`, () => {
        const expected = reference(text, stream.endpoint, stream.protocol)
        assert.equal(expected.valid, true)
        assert.equal(expected.terminated, true)
        assert.notEqual(expected.usage, null)
        for (const { name, chunks } of chunkings(Buffer.from(text), text.length)) {
          assert.deepEqual(scanChunks(chunks, stream.endpoint, stream.protocol), expected, name)
        }
      })
    }
  }

  test('a stream without its terminator is seen as incomplete, however cut', () => {
    const text = STREAMS[0]?.text.replace('data: [DONE]\n\n', '') ?? ''
    for (const { name, chunks } of chunkings(Buffer.from(text), 7)) {
      assert.equal(scanChunks(chunks, CHAT, 'openai').terminated, false, name)
    }
  })

  test('a finish is told from an error by its value (end_turn is no error), however the value is cut', () => {
    const delta = (reason: string) =>
      `event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"${reason}","stop_sequence":null},"usage":{"output_tokens":3}}\n\n`
    for (const [reason, finish] of [
      ['end_turn', true],
      ['error', false],
    ] as const) {
      for (const { name, chunks } of chunkings(Buffer.from(delta(reason)), 13)) {
        const scanner = new StreamScanner(ANTHROPIC_MESSAGES, new UsageExtractor('anthropic'))
        for (const chunk of chunks) {
          scanner.scan(chunk)
          scanner.checkEnd(chunk)
        }
        assert.equal(scanner.complete, finish, `${reason}, ${name}`)
      }
    }
  })

  test('a data line that is not a JSON object is malformed, however cut', () => {
    const text = `${chatChunk('one ')}data: not json\n\n${chatChunk('two ')}`
    for (const { name, chunks } of chunkings(Buffer.from(text), 11)) {
      // A line split across chunks is counted but not checked: only chunkings that keep it whole must see it.
      const whole = chunks.some((chunk) => chunk.includes('data: not json\n'))
      if (whole) assert.equal(scanChunks(chunks, CHAT, 'openai').valid, false, name)
    }
  })
})

describe("the Responses API's last event ends the stream only as the event's type, however cut", () => {
  const response = (status: string) =>
    `{"id":"r","status":"${status}","instructions":"response.failed","metadata":{"last_event":"response.completed","type":"response.incomplete"},"usage":null}`
  const text = (answer: string) => ({ type: 'response.output_text.done', sequence_number: 2, text: answer })
  const created = { type: 'response.created', sequence_number: 0, response: JSON.parse(response('in_progress')) }
  /** One event as a server writes it: `event:` line or not, the keys in this order, JSON compact or spaced. */
  const sse = (fields: Record<string, unknown>, eventLine: boolean, spaced: boolean) =>
    `${eventLine ? `event: ${fields.type}\n` : ''}data: ${spaced ? JSON.stringify(fields).replaceAll('":', '": ').replaceAll(',"', ', "') : JSON.stringify(fields)}\n\n`
  /** The same without the space SSE makes optional after a field's colon (`event:x`, `data:{…}`). */
  const unspaced = (event: string) => event.replaceAll('event: ', 'event:').replaceAll('data: ', 'data:')
  const last = { sequence_number: 3, response: JSON.parse(response('completed')), type: 'response.completed' }
  const { type, ...rest } = last
  const shapes = {
    'type first': { type, ...rest },
    'type last (openai-python models, as vLLM serialises them)': last,
    'type in the middle': { sequence_number: 3, type, response: rest.response },
  }

  for (const eventLine of [true, false]) {
    for (const spaced of [false, true]) {
      for (const ending of ['LF', 'CRLF']) {
        const kind = `${eventLine ? 'event lines' : 'data lines only'}, ${spaced ? 'spaced' : 'compact'} JSON, ${ending}`
        const write = (events: Record<string, unknown>[], fieldSpace = true) => {
          const joined = events
            .map((fields) => (fieldSpace ? sse : (...a: Parameters<typeof sse>) => unspaced(sse(...a)))(fields, eventLine, spaced))
            .join('')
          return Buffer.from(ending === 'CRLF' ? joined.replaceAll('\n', '\r\n') : joined)
        }
        test(`${kind}: the name as text (instructions, metadata, an answer) ends nothing`, () => {
          // The client's own instructions and metadata, echoed in response.created; an answer that is the word.
          const echoes = write([created, text('response.completed'), text('response.failed')])
          for (const { name, chunks } of chunkings(echoes, 5)) {
            assert.equal(scanChunks(chunks, RESPONSES, 'openai').terminated, false, name)
          }
        })
        for (const [shape, fields] of Object.entries(shapes)) {
          // Without an event line, a type in the middle of the object is not looked for (data-only servers put it first or last).
          if (!eventLine && shape === 'type in the middle') continue
          test(`${kind}, ${shape}: the last event ends it, with or without the space after event: and data:`, () => {
            for (const fieldSpace of [true, false]) {
              for (const { name, chunks } of chunkings(write([created, text('response.completed'), fields], fieldSpace), 9)) {
                assert.equal(scanChunks(chunks, RESPONSES, 'openai').terminated, true, `${name}, field space ${fieldSpace}`)
              }
            }
          })
        }
      }
    }
  }
})

describe("Gemini's finishReason and blockReason end the stream only where Gemini puts them, however cut", () => {
  const usage = { promptTokenCount: 4, candidatesTokenCount: 2, totalTokenCount: 6 }
  const parts = (...content: Record<string, unknown>[]) => ({ content: { role: 'model', parts: content }, index: 0 })
  // A call whose arguments hold both keys, as objects too (deeper still), and text that names them.
  const call = {
    candidates: [
      parts(
        { text: 'Sets "finishReason": "STOP" and {"blockReason": 1}.' },
        { functionCall: { name: 'report', args: { finishReason: 'STOP', blockReason: { finishReason: 'x' } } } },
      ),
    ],
    usageMetadata: usage,
  }
  const shapes = {
    'candidates[0].finishReason': { candidates: [{ ...parts({ text: '' }), finishReason: 'STOP' }], usageMetadata: usage },
    'promptFeedback.blockReason': { promptFeedback: { blockReason: 'SAFETY' }, usageMetadata: usage },
  }
  for (const spaced of [false, true]) {
    for (const ending of ['LF', 'CRLF']) {
      const kind = `${spaced ? 'spaced (as Google writes it)' : 'compact'} JSON, ${ending}`
      const write = (events: Record<string, unknown>[]) => {
        const json = (fields: Record<string, unknown>) =>
          spaced ? JSON.stringify(fields).replaceAll('":', '": ').replaceAll(',"', ', "') : JSON.stringify(fields)
        const joined = events.map((fields) => `data: ${json(fields)}\n\n`).join('')
        return Buffer.from(ending === 'CRLF' ? joined.replaceAll('\n', '\r\n') : joined)
      }
      test(`${kind}: the keys in a function call's arguments end nothing`, () => {
        for (const { name, chunks } of chunkings(write([call, call]), 17)) {
          assert.equal(scanChunks(chunks, GEMINI_GENERATE, 'gemini').terminated, false, name)
        }
      })
      for (const [shape, fields] of Object.entries(shapes)) {
        test(`${kind}, ${shape}: ends it`, () => {
          for (const { name, chunks } of chunkings(write([call, fields]), 19)) {
            assert.equal(scanChunks(chunks, GEMINI_GENERATE, 'gemini').terminated, true, name)
          }
        })
      }
    }
  }
})

test("an upstream's error event is found however it is cut, in every format, its message with it", () => {
  const gemini = (text: string) => `data: {"candidates":[{"content":{"parts":[{"text":"${text}"}],"role":"model"},"index":0}]}\r\n\r\n`
  const anthropic = (text: string) =>
    `event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"${text}"}}\n\n`
  // Each with the status its error stands for (its code, or Anthropic's type): what a first event fails over with.
  const streams: [string, Endpoint, Protocol, string, number][] = [
    ['OpenAI', CHAT, 'openai', `${chatChunk('lorem ')}data: {"error":{"message":"Engine died.","code":500}}\n\n`, 500],
    [
      'Anthropic',
      ANTHROPIC_MESSAGES,
      'anthropic',
      `${anthropic('lorem ')}event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n`,
      529,
    ],
    [
      'Gemini',
      GEMINI_GENERATE,
      'gemini',
      `${gemini('lorem ')}data: {"error": {"code": 503, "message": "Overloaded", "status": "UNAVAILABLE"}}\r\n\r\n`,
      503,
    ],
  ]
  for (const [format, endpoint, protocol, text, status] of streams) {
    // Also with a message longer than the part of a split line kept (4 KB): known by its opening, however cut.
    for (const long of [false, true]) {
      const bytes = Buffer.from(long ? text.replace(/"(Overloaded|Engine died\.)"/, `"$1${' more'.repeat(1000)}"`) : text)
      for (const { name, chunks } of chunkings(bytes, 23)) {
        const scanner = new StreamScanner(endpoint, new UsageExtractor(protocol))
        const failing = chunks.find((chunk) => {
          scanner.scan(chunk)
          return scanner.errorAt !== -1
        })
        const kind = `${format}${long ? ', long' : ''}, ${name}`
        assert.ok(failing !== undefined, kind)
        // The text event before it is the answer's only data event: the error is none.
        assert.equal(scanner.dataEvents, 1, kind)
        if (long) continue
        // Its message and status too, its line read whole (Anthropic's: its data line, after the event line).
        assert.match(scanner.upstreamError(failing).message, /mid-stream: (Overloaded|Engine died\.)$/, kind)
        assert.equal(scanner.errorEvent(failing).status, status, kind)
      }
    }
  }
})

test('the usage readers start at the first line that may report usage', () => {
  const text = STREAMS[0]?.text ?? ''
  const scanner = new StreamScanner(CHAT, new UsageExtractor('openai'))
  const bytes = Buffer.from(text)
  assert.ok(scanner.scan(bytes))
  assert.equal(scanner.tapFrom, text.indexOf('data: {"id":"c","object":"chat.completion.chunk","choices":[]'))
  // Lines that all end with `"usage":null`: nothing to read.
  const nulls = Buffer.from(chatChunk('lorem ') + chatChunk('ipsum '))
  assert.ok(scanner.scan(nulls))
  assert.equal(scanner.tapFrom, nulls.length)
  // A chunk that starts inside a line is read whole.
  assert.ok(scanner.scan(Buffer.from('data: {"id":"c"')))
  assert.ok(scanner.scan(Buffer.from(',"usage":null}\n\n')))
  assert.equal(scanner.tapFrom, 0)
})

describe('a finish reason is seen however the stream is cut', () => {
  const body = (finish: string) =>
    `${chatChunk('lorem ')}${chatChunk('ipsum ')}` +
    `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":${finish}}],"usage":null}\n\n` +
    'data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}\n\n'
  const scanned = (text: string, size: number) => {
    const scanner = new StreamScanner(CHAT, new UsageExtractor('openai'))
    const bytes = Buffer.from(text)
    for (let at = 0; at < bytes.length; at += size) {
      const chunk = bytes.subarray(at, at + size)
      assert.ok(scanner.scan(chunk))
      scanner.checkEnd(chunk)
    }
    return scanner
  }

  test('a finish reason then the usage chunk, without [DONE], in one chunk or cut into 1, 7 or 64 bytes', () => {
    for (const size of [1, 7, 64, 100_000]) {
      const scanner = scanned(body('"stop"'), size)
      assert.equal(scanner.sawTerminator, false)
      assert.equal(scanner.complete, true, `chunks of ${size}`)
    }
  })

  test("no finish reason, or vLLM's abort, is no finish", () => {
    for (const finish of ['null', '"abort"']) assert.equal(scanned(body(finish), 7).complete, false, finish)
  })
})

describe('upstream error events', () => {
  const scannedOnce = (text: string, endpoint = CHAT, protocol: Protocol = 'openai') => {
    const scanner = new StreamScanner(endpoint, new UsageExtractor(protocol))
    const chunk = Buffer.from(text)
    assert.ok(scanner.scan(chunk))
    return { scanner, chunk }
  }
  const failedChunk = (finish: string, extra = '') =>
    `data: {"id":"c","object":"chat.completion.chunk"${extra},"choices":[{"index":0,"delta":{"content":""},"finish_reason":${finish}}]}\n\n`

  test("a failed finish (vLLM's abort, OpenRouter's error chunk) is an error event, not a line of the answer", () => {
    const openRouter = failedChunk('"error"', ',"error":{"code":502,"message":"Provider disconnected unexpectedly"}')
    for (const [failed, message] of [
      [failedChunk('"abort"'), 'The upstream ended the generation with finish_reason abort.'],
      [
        failedChunk('"error"').replace('"finish_reason":', '"finish_reason": '),
        'The upstream ended the generation with finish_reason error.',
      ],
      [openRouter, 'The upstream reported an error mid-stream: Provider disconnected unexpectedly'],
    ] as const) {
      const before = chatChunk('lorem ')
      const { scanner, chunk } = scannedOnce(`${before + failed}data: [DONE]\n\n`)
      assert.equal(scanner.errorAt, before.length, failed)
      assert.equal(scanner.dataEvents, 1, 'the error is no token of the answer')
      assert.equal(scanner.upstreamError(chunk).message, message)
    }
  })

  test('a failed finish is found however its line is cut: where it starts, or (begun in an earlier chunk) where its end comes', () => {
    const openRouter = failedChunk('"error"', ',"error":{"code":502,"message":"Provider disconnected unexpectedly"}')
    const usage = 'data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1}}\n\n'
    for (const failed of [failedChunk('"abort"'), failedChunk('"error"').replace('"finish_reason":', '"finish_reason": '), openRouter]) {
      const before = chatChunk('lorem ')
      const bytes = Buffer.from(`${before + failed + usage}data: [DONE]\n\n`)
      const start = before.length
      const valueEnd = start + (/"finish_reason": ?"\w+"/.exec(failed)?.[0].length ?? 0) + failed.indexOf('"finish_reason"')
      const lineEnd = bytes.indexOf('\n', start)
      const whole = scannedOnce(bytes.toString())
      for (const { name, chunks } of chunkings(bytes, 17)) {
        const scanner = new StreamScanner(CHAT, new UsageExtractor('openai'))
        let offset = 0
        let expected = -1
        for (const chunk of chunks) {
          // Its marker and value in the chunk where it starts: found there; else when its line end comes.
          if (offset <= start && start < offset + chunk.length) expected = valueEnd <= offset + chunk.length ? start : -1
          if (expected === -1 && offset <= lineEnd && lineEnd < offset + chunk.length) expected = offset
          assert.ok(scanner.scan(chunk), name)
          if (scanner.errorAt !== -1) {
            assert.equal(offset + scanner.errorAt, expected, name)
            assert.equal(scanner.dataEvents, 1, name)
            assert.equal(scanner.upstreamError(chunk).message, whole.scanner.upstreamError(whole.chunk).message, name)
            break
          }
          scanner.checkEnd(chunk)
          offset += chunk.length
        }
        assert.notEqual(expected, -1, `${name}: found`)
        assert.ok(offset < bytes.length, `${name}: found`)
      }
    }
  })

  test('a failed finish begun in an earlier chunk says what a whole one does, before the first byte too', () => {
    const openRouter = failedChunk('"error"', ',"error":{"code":502,"message":"Provider disconnected unexpectedly"}')
    const cut = openRouter.indexOf('"choices"')
    const scanner = new StreamScanner(CHAT, new UsageExtractor('openai'))
    assert.ok(scanner.scan(Buffer.from(openRouter.slice(0, cut))))
    const rest = Buffer.from(`${openRouter.slice(cut)}data: [DONE]\n\n`)
    assert.ok(scanner.scan(rest))
    assert.equal(scanner.errorAt, 0)
    const event = scanner.errorEvent(rest)
    assert.equal(event.status, 502)
    assert.equal(event.json, openRouter.slice('data: '.length, -2))
    assert.equal(event.error.message, 'The upstream reported an error: Provider disconnected unexpectedly')
  })

  test('a finish that did not fail, or the words in the text, is no error', () => {
    for (const text of [
      failedChunk('"stop"', ',"native_finish_reason":"error"'),
      chatChunk('he wrote "finish_reason":"error" in the answer'),
      failedChunk('null'),
    ]) {
      assert.equal(scannedOnce(text).scanner.errorAt, -1, text)
    }
  })

  test('an error before the first byte says the status it stands for: its code, else its name', () => {
    const cases: [string, Endpoint, Protocol, number | undefined][] = [
      ['data: {"error": {"message": "bad", "type": "BadRequestError", "param": null, "code": 400}}\n\n', CHAT, 'vllm', 400],
      [
        'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n',
        ANTHROPIC_MESSAGES,
        'anthropic',
        529,
      ],
      ['data: {"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED"}}\n\n', GEMINI_GENERATE, 'gemini', 429],
      // TGI writes 422 into every stream error, whatever failed: no status.
      ['data:{"error":{"message":"CUDA out of memory","http_status_code":422}}\n\n', CHAT, 'tgi', undefined],
      [failedChunk('"abort"'), CHAT, 'vllm', undefined],
    ]
    for (const [text, endpoint, protocol, status] of cases) {
      const { scanner, chunk } = scannedOnce(text, endpoint, protocol)
      const event = scanner.errorEvent(chunk)
      assert.equal(event.status, status, text)
      assert.equal(event.error.statusCode, status ?? 502, text)
      assert.doesNotMatch(event.error.message, /mid-stream/)
    }
  })
})

test('LineEnds: a CR-only or CRLF stream cut in two at any offset comes out with the line ends it has whole', () => {
  // A cut between the two CRs of a lone-CR blank line sent `\r` and then `\n`: one CRLF line end, and two events
  // became one on the wire.
  const base = (STREAMS[0] as (typeof STREAMS)[number]).text
  for (const [name, text] of [
    ['CR', base.replaceAll('\n', '\r')],
    ['CRLF', base.replaceAll('\n', '\r\n')],
  ] as const) {
    for (let cut = 1; cut < text.length; cut++) {
      const lineEnds = new LineEnds()
      const parts = [text.slice(0, cut), text.slice(cut)].map((part) => lineEnds.normalize(Buffer.from(part)))
      assert.equal(Buffer.concat(parts).toString().replaceAll('\r\n', '\n'), base, `${name}, cut at ${cut}`)
    }
  }
})
