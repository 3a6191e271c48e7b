// Upstreams that misbehave in ways real servers do (hardening issue, items 5–8), read by the official SDKs:
// a response kept open after its terminator, a compressed body nobody asked for, CR-only SSE line ends, and
// Anthropic and Gemini streams that end before their final usage report.
import assert from 'node:assert/strict'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { connect } from 'node:net'
import { after, before, beforeEach, test } from 'node:test'
import { constants, createGzip, gzipSync } from 'node:zlib'
import Anthropic from '@anthropic-ai/sdk'
import { GoogleGenAI } from '@google/genai'
import { errors, type UsageRecord } from '@llmproxy/core'
import { upstreams } from '@llmproxy/upstreams'
import Fastify, { type FastifyInstance } from 'fastify'
import OpenAI from 'openai'
import { router } from '../src/index.js'
import { eventually } from './helpers.js'

type Script = (req: IncomingMessage, res: ServerResponse) => void

let script: Script = (_req, res) => res.end()
/** Upstream responses closed so far (by either side). */
let closedResponses = 0
let upstream: Server
let app: FastifyInstance
let url: string
const records: UsageRecord[] = []

before(async () => {
  upstream = createServer((req, res) => {
    res.on('close', () => closedResponses++)
    req.resume()
    req.on('end', () => script(req, res))
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  const origin = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`
  // Its close() ends every connection: one a client opened but never used would otherwise hold it for ~70 s.
  app = Fastify({ logger: false, forceCloseConnections: true })
  await app.register(upstreams, {
    upstreams: [
      { name: 'raw', url: origin, protocol: 'openai' },
      { name: 'raw-anthropic', url: origin, protocol: 'anthropic' },
      { name: 'raw-gemini', url: origin, protocol: 'gemini' },
    ],
    healthChecks: { enabled: false },
  })
  await app.register(router, {
    models: [
      { name: 'gpt-test', upstreams: ['raw'] },
      { name: 'claude-test', upstreams: ['raw-anthropic'] },
      { name: 'gemini-test', upstreams: ['raw-gemini'] },
    ],
    retry: { attempts: 1 },
    // Long enough that a client kept waiting for it would show as a hang (see `within`).
    timeouts: { idleMs: 60_000 },
  })
  app.llm.addHook('onUsage', (record) => {
    records.push(record)
  })
  url = await app.listen({ port: 0, host: '127.0.0.1' })
})

after(async () => {
  await app.close()
  upstream.closeAllConnections()
  await new Promise((resolve) => upstream.close(resolve))
})

beforeEach(() => {
  records.length = 0
  closedResponses = 0
})

/** Fails when `work` does not settle within `ms`: a client left hanging. */
async function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const hang = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([work, hang])
  } finally {
    clearTimeout(timer)
  }
}

const openai = () => new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 })
const anthropic = () => new Anthropic({ baseURL: url, apiKey: 'unused', maxRetries: 0 })

const chunk = (fields: Record<string, unknown>) =>
  `data: ${JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'm', ...fields })}\n\n`
/** A complete chat stream with the usage chunk the gateway asks for, and `[DONE]`. */
const CHAT_EVENTS = [
  chunk({ choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }], usage: null }),
  chunk({ choices: [{ index: 0, delta: { content: 'lorem ' }, finish_reason: null }], usage: null }),
  chunk({ choices: [{ index: 0, delta: { content: 'ipsum ' }, finish_reason: null }], usage: null }),
  chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }], usage: null }),
  chunk({ choices: [], usage: { prompt_tokens: 11, completion_tokens: 2, total_tokens: 13 } }),
  'data: [DONE]\n\n',
]

const anthropicEvent = (name: string, data: Record<string, unknown>) =>
  `event: ${name}\ndata: ${JSON.stringify({ type: name, ...data })}\n\n`
const messageStart = anthropicEvent('message_start', {
  message: {
    id: 'msg_1',
    type: 'message',
    role: 'assistant',
    model: 'claude',
    content: [],
    stop_reason: null,
    stop_sequence: null,
    usage: { input_tokens: 12, cache_read_input_tokens: 3, cache_creation_input_tokens: 0, output_tokens: 1 },
  },
})
const textDelta = (text: string) => anthropicEvent('content_block_delta', { index: 0, delta: { type: 'text_delta', text } })
const ANTHROPIC_HEAD = [messageStart, anthropicEvent('content_block_start', { index: 0, content_block: { type: 'text', text: '' } })]
const ANTHROPIC_TAIL = [
  anthropicEvent('content_block_stop', { index: 0 }),
  anthropicEvent('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 2 } }),
  anthropicEvent('message_stop', {}),
]

/** The Anthropic SDK's whole message from claude-test; a hang fails the test (see `within`). */
function anthropicMessage() {
  return within(
    10_000,
    'the Anthropic SDK stream',
    anthropic()
      .messages.stream({ model: 'claude-test', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] })
      .finalMessage(),
  )
}

async function streamChat(): Promise<string> {
  const stream = await openai().chat.completions.create({ model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'hi' }] })
  let text = ''
  for await (const part of stream) {
    assert.ok(part.choices.length > 0, 'the usage chunk the gateway asked for is not passed to a client that did not ask')
    text += part.choices[0]?.delta.content ?? ''
  }
  return text
}

test('an upstream that keeps its response open after [DONE]: the client’s stream ends at once, the upstream is released, the record is a success', async () => {
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    for (const event of CHAT_EVENTS) res.write(event)
    // …and never ends it.
  }
  assert.equal(await within(10_000, 'the openai SDK stream', streamChat()), 'lorem ipsum ')
  await eventually(() => records.length === 1, 5000, 'the usage record')
  const record = records[0] as UsageRecord
  assert.equal(record.status, 200)
  assert.equal(record.error, undefined)
  assert.equal(record.estimated, false)
  assert.deepEqual([record.promptTokens, record.completionTokens], [11, 2])
  await eventually(() => closedResponses === 1, 5000, 'the upstream response released')
})

test('an Anthropic upstream that keeps its response open after message_stop: finalMessage() resolves at once', async () => {
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    for (const event of [...ANTHROPIC_HEAD, textDelta('lorem '), textDelta('ipsum '), ...ANTHROPIC_TAIL]) res.write(event)
  }
  const message = await anthropicMessage()
  assert.deepEqual(
    message.content,
    [{ type: 'text', text: 'lorem ipsum ', citations: null }].map(({ citations: _c, ...rest }) => rest),
  )
  assert.equal(message.stop_reason, 'end_turn')
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.equal(records[0]?.error, undefined)
  assert.deepEqual([records[0]?.promptTokens, records[0]?.completionTokens, records[0]?.estimated], [15, 2, false])
  await eventually(() => closedResponses === 1, 5000, 'the upstream response released')
})

test('a Gemini upstream that keeps its response open after its finishReason: the answer ends 1 s later, whole, same-format or converted', async () => {
  const event = (candidate: Record<string, unknown>, usage: boolean) =>
    `data: ${JSON.stringify({
      candidates: [{ index: 0, content: { role: 'model', parts: [{ text: 'Hello' }] }, ...candidate }],
      ...(usage && { usageMetadata: { promptTokenCount: 4, candidatesTokenCount: 2, totalTokenCount: 6 } }),
    })}\r\n\r\n`
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write(event({}, false))
    res.write(event({ finishReason: 'STOP' }, true))
    // …and never ends it (idleMs is 60 s here).
  }
  const gemini = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: url } })
  const geminiText = async () => {
    let text = ''
    for await (const part of await gemini.models.generateContentStream({ model: 'gemini-test', contents: 'hi' })) text += part.text ?? ''
    return text
  }
  const openaiText = async () => {
    let text = ''
    const stream = await openai().chat.completions.create({
      model: 'gemini-test',
      stream: true,
      messages: [{ role: 'user', content: 'Hi' }],
    })
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? ''
    return text
  }
  assert.equal(await within(10_000, 'the Gemini SDK stream', geminiText()), 'HelloHello')
  assert.equal(await within(10_000, 'the openai SDK stream', openaiText()), 'HelloHello')
  await eventually(() => records.length === 2, 5000, 'the usage records')
  for (const record of records) {
    assert.equal(record.error, undefined)
    assert.deepEqual([record.promptTokens, record.completionTokens, record.estimated], [4, 2, false])
  }
  await eventually(() => closedResponses === 2, 5000, 'the upstream responses released')
})

test('a Gemini upstream whose usage comes 1.5 s after its finishReason (a running count before it): the client gets it, the record counts it (the 1 s grace waits for the usage)', async () => {
  const event = (body: Record<string, unknown>) => `data: ${JSON.stringify(body)}\r\n\r\n`
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    // A running count first (Gemini 2.x reports one on every chunk): it is not the answer's count.
    res.write(
      event({
        candidates: [{ index: 0, content: { role: 'model', parts: [{ text: 'Hel' }] } }],
        usageMetadata: { promptTokenCount: 4, candidatesTokenCount: 1, totalTokenCount: 5 },
      }),
    )
    res.write(event({ candidates: [{ index: 0, content: { role: 'model', parts: [{ text: 'lo' }] }, finishReason: 'STOP' }] }))
    setTimeout(() => res.end(event({ usageMetadata: { promptTokenCount: 4, candidatesTokenCount: 7, totalTokenCount: 11 } })), 1500)
  }
  const gemini = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: url } })
  let output: number | undefined
  for await (const part of await gemini.models.generateContentStream({ model: 'gemini-test', contents: 'hi' })) {
    output = part.usageMetadata?.candidatesTokenCount ?? output
  }
  assert.equal(output, 7)
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.deepEqual([records[0]?.error, records[0]?.completionTokens, records[0]?.estimated], [undefined, 7, false])
})

test('an answer that writes "event: message_stop" as text is not taken for the end of the stream, same-format or converted', async () => {
  const said = 'The stream ends with event: message_stop then data.'
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    // The text in a read of its own, its last event in the next: the gateway must not end the client's stream at it.
    res.write([...ANTHROPIC_HEAD, textDelta(said)].join(''))
    setTimeout(() => res.end([textDelta(' Done.'), ...ANTHROPIC_TAIL].join('')), 50)
  }
  const message = await anthropicMessage()
  assert.deepEqual(
    message.content.map((block) => (block.type === 'text' ? block.text : block.type)),
    [`${said} Done.`],
  )
  assert.equal(message.stop_reason, 'end_turn')
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.deepEqual([records[0]?.error, records[0]?.completionTokens, records[0]?.estimated], [undefined, 2, false])
  records.length = 0
  const stream = await openai().chat.completions.create({ model: 'claude-test', stream: true, messages: [{ role: 'user', content: 'hi' }] })
  let text = ''
  let finish: string | null | undefined
  for await (const part of stream) {
    text += part.choices[0]?.delta.content ?? ''
    finish = part.choices[0]?.finish_reason ?? finish
  }
  assert.deepEqual([text, finish], [`${said} Done.`, 'stop'])
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.equal(records[0]?.error, undefined)
})

test('a gzip-compressed stream the gateway did not ask for is decoded for the client and the tap', async () => {
  let asked: string | undefined
  script = (req, res) => {
    asked = req.headers['accept-encoding']
    res.writeHead(200, { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' })
    const gzip = createGzip({ flush: constants.Z_SYNC_FLUSH })
    gzip.pipe(res)
    for (const event of CHAT_EVENTS) gzip.write(event)
    gzip.end()
  }
  assert.equal(await streamChat(), 'lorem ipsum ')
  assert.equal(asked, 'identity')
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.equal(records[0]?.error, undefined)
  assert.deepEqual([records[0]?.promptTokens, records[0]?.completionTokens, records[0]?.estimated], [11, 2, false])
})

test('a gzip-compressed JSON answer is decoded for the client and the tap', async () => {
  script = (_req, res) => {
    const body = gzipSync(
      JSON.stringify({
        id: 'chatcmpl-2',
        object: 'chat.completion',
        created: 1,
        model: 'm',
        choices: [{ index: 0, message: { role: 'assistant', content: 'plain text' }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 },
      }),
    )
    res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': body.length })
    res.end(body)
  }
  const completion = await openai().chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'hi' }] })
  assert.equal(completion.choices[0]?.message.content, 'plain text')
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.deepEqual([records[0]?.promptTokens, records[0]?.completionTokens, records[0]?.estimated], [7, 2, false])
})

test('CR-only SSE line ends (allowed by the spec): the whole answer, no error event, the usage chunk not leaked', async () => {
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    for (const event of CHAT_EVENTS) res.write(event.replaceAll('\n', '\r'))
    res.end()
  }
  assert.equal(await streamChat(), 'lorem ipsum ')
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.equal(records[0]?.error, undefined)
  assert.deepEqual([records[0]?.promptTokens, records[0]?.completionTokens, records[0]?.estimated], [11, 2, false])
})

test('an Anthropic stream cut before message_delta: output estimated from what was streamed, the reported input kept', async () => {
  const deltas = Array.from({ length: 39 }, (_v, i) => textDelta(`w${i} `))
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    for (const event of [...ANTHROPIC_HEAD, ...deltas]) res.write(event)
    setTimeout(() => res.socket?.destroy(), 20)
  }
  const stream = anthropic().messages.stream({ model: 'claude-test', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] })
  await assert.rejects(stream.finalMessage())
  await eventually(() => records.length === 1, 5000, 'the usage record')
  const record = records[0] as UsageRecord
  assert.equal(record.estimated, true)
  assert.equal(record.promptTokens, 15, 'input_tokens + cache reads from message_start')
  // One per data event: message_start, content_block_start and the 39 deltas.
  assert.equal(record.completionTokens, 41)
  assert.equal(record.totalTokens, 56)
  assert.equal(record.error?.code, 'llmproxy_upstream_error')
})

test('an Anthropic stream the client leaves after 94 deltas: output estimated, not the 1 token of message_start', async () => {
  const deltas = Array.from({ length: 94 }, (_v, i) => textDelta(`w${i} `))
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    for (const event of [...ANTHROPIC_HEAD, ...deltas]) res.write(event)
    // …then the model keeps thinking; the client gives up.
  }
  const controller = new AbortController()
  const stream = anthropic().messages.stream(
    { model: 'claude-test', max_tokens: 512, messages: [{ role: 'user', content: 'hi' }] },
    { signal: controller.signal },
  )
  let seen = 0
  stream.on('text', () => {
    seen++
    if (seen === 94) controller.abort()
  })
  await assert.rejects(stream.finalMessage())
  await eventually(() => records.length === 1, 5000, 'the usage record')
  const record = records[0] as UsageRecord
  assert.equal(record.clientAborted, true)
  assert.equal(record.estimated, true)
  assert.equal(record.promptTokens, 15)
  assert.equal(record.completionTokens, 96)
})

/** A Gemini stream event with its text and the running count Gemini 2.x reports on every chunk (`tokens` so far). */
const geminiEvent = (text: string, tokens: number, finishReason?: string) =>
  `data: ${JSON.stringify({
    candidates: [{ index: 0, content: { role: 'model', parts: [{ text }] }, ...(finishReason && { finishReason }) }],
    usageMetadata: { promptTokenCount: 4, candidatesTokenCount: tokens, totalTokenCount: 4 + tokens },
  })}\r\n\r\n`

/** The Gemini SDK's streamed text from gemini-test. */
async function geminiStreamText(): Promise<string> {
  const gemini = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: url } })
  let text = ''
  for await (const part of await gemini.models.generateContentStream({ model: 'gemini-test', contents: 'hi' })) text += part.text ?? ''
  return text
}

/** The OpenAI SDK's streamed text from gemini-test (converted). */
async function openaiGeminiText(): Promise<string> {
  const stream = await openai().chat.completions.create({ model: 'gemini-test', stream: true, messages: [{ role: 'user', content: 'hi' }] })
  let text = ''
  for await (const part of stream) text += part.choices[0]?.delta.content ?? ''
  return text
}

/** A client that asks for a stream (`path`, `body`) and leaves once `until` came in it. */
async function leaveStream(path: string, body: Record<string, unknown>, until: string): Promise<void> {
  const leave = new AbortController()
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: leave.signal,
  })
  const reader = (res.body as ReadableStream<Uint8Array>).getReader()
  let received = ''
  while (!received.includes(until)) received += Buffer.from((await reader.read()).value ?? []).toString()
  leave.abort()
}

test('a Gemini stream cut after running counts: output estimated, the last running count not billed as exact; whole, it is exact (same-format or converted)', async () => {
  let complete = false
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    for (let i = 1; i <= 3; i++) res.write(geminiEvent(`w${i} `, i))
    // Whole: the answer's own count comes with its finishReason. Cut: it never comes.
    if (complete) res.end(geminiEvent('', 5, 'STOP'))
    else setTimeout(() => res.socket?.destroy(), 20)
  }
  await assert.rejects(within(10_000, 'the Gemini SDK stream', geminiStreamText()))
  await assert.rejects(within(10_000, 'the OpenAI SDK stream', openaiGeminiText()))
  await eventually(() => records.length === 2, 5000, 'the usage records')
  for (const record of records) {
    assert.deepEqual([record.error?.code, record.completionTokens, record.estimated], ['llmproxy_upstream_error', 3, true])
  }
  records.length = 0
  complete = true
  assert.equal(await within(10_000, 'the Gemini SDK stream', geminiStreamText()), 'w1 w2 w3 ')
  assert.equal(await within(10_000, 'the OpenAI SDK stream', openaiGeminiText()), 'w1 w2 w3 ')
  await eventually(() => records.length === 2, 5000, 'the usage records')
  for (const record of records) assert.deepEqual([record.error, record.completionTokens, record.estimated], [undefined, 5, false])
})

test('a Gemini stream the client leaves after 4 running counts: output estimated, the last running count not billed as exact (same-format or converted)', async () => {
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    for (let i = 1; i <= 4; i++) res.write(geminiEvent(`w${i} `, i))
    // …then the model keeps generating; the client gives up.
  }
  await leaveStream(
    '/v1beta/models/gemini-test:streamGenerateContent?alt=sse',
    { contents: [{ role: 'user', parts: [{ text: 'hi' }] }] },
    'w4 ',
  )
  await leaveStream('/v1/chat/completions', { model: 'gemini-test', stream: true, messages: [{ role: 'user', content: 'hi' }] }, 'w4 ')
  await eventually(() => records.length === 2, 5000, 'the usage records')
  for (const record of records) {
    assert.deepEqual([record.clientAborted, record.completionTokens, record.estimated], [true, 4, true])
  }
})

test('a Gemini stream as one JSON array (no alt=sse) cut after running counts: output estimated; whole, it is exact', async () => {
  const element = (text: string, tokens: number, finishReason?: string) => geminiEvent(text, tokens, finishReason).slice(6, -4)
  let complete = false
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.write(`[${element('w1 ', 1)},\r\n${element('w2 ', 2)},\r\n${element('w3 ', 3)}`)
    if (complete) res.end(`,\r\n${element('', 5, 'STOP')}]`)
    else setTimeout(() => res.socket?.destroy(), 20)
  }
  const ask = () =>
    fetch(`${url}/v1beta/models/gemini-test:streamGenerateContent`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
    }).then((res) => res.text())
  await assert.rejects(ask())
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.deepEqual([records[0]?.error?.code, records[0]?.estimated], ['llmproxy_upstream_error', true])
  assert.ok((records[0]?.completionTokens ?? 0) >= 3, 'the running count at least')
  records.length = 0
  complete = true
  assert.equal((JSON.parse(await ask()) as unknown[]).length, 4)
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.deepEqual([records[0]?.error, records[0]?.completionTokens, records[0]?.estimated], [undefined, 5, false])
})

test('tool-call arguments that are not a JSON object reach an Anthropic client as an error, never as input: {}', async () => {
  const toolCall = (args: string) =>
    chunk({
      choices: [
        { index: 0, delta: { tool_calls: [{ index: 0, id: 'call_0', type: 'function', function: { name: 'f0', arguments: args } }] } },
      ],
      usage: null,
    })
  const role = chunk({ choices: [{ index: 0, delta: { role: 'assistant' }, finish_reason: null }], usage: null })
  const streams: [string[], RegExp][] = [
    // Streamed: the arguments stop mid-literal, then the finish (a truncated or badly generated call).
    [
      [
        role,
        toolCall('{"a": tru'),
        chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'tool_calls' }], usage: null }),
        chunk({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 } }),
        'data: [DONE]\n\n',
      ],
      /not a JSON object/,
    ],
    // The same without a finish, straight to [DONE]: an answer cut short, an error too.
    [[role, toolCall('{"a": tru'), 'data: [DONE]\n\n'], /without finishing its answer/],
  ]
  for (const [events, reason] of streams) {
    records.length = 0
    script = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.end(events.join(''))
    }
    const streamed = anthropic().messages.stream({ model: 'gpt-test', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] })
    await assert.rejects(within(5000, 'the stream', streamed.finalMessage()), reason)
    await eventually(() => records.length === 1, 5000, 'the usage record')
    assert.equal(records[0]?.error?.code, 'llmproxy_upstream_error')
  }

  // Not streamed: the same arguments in a whole answer are a 502 that says why.
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(
      JSON.stringify({
        id: 'chatcmpl-1',
        object: 'chat.completion',
        created: 1,
        model: 'm',
        choices: [
          {
            index: 0,
            message: {
              role: 'assistant',
              content: null,
              tool_calls: [{ id: 'call_0', type: 'function', function: { name: 'f0', arguments: '{"a": tru' } }],
            },
            finish_reason: 'tool_calls',
          },
        ],
        usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 },
      }),
    )
  }
  const whole = anthropic().messages.create({ model: 'gpt-test', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] })
  await assert.rejects(whole, (err: unknown) => {
    assert.ok(err instanceof Anthropic.APIError, String(err))
    assert.equal(err.status, 502)
    assert.match(err.message, /tool call f0 has arguments that are not a JSON object/)
    return true
  })
})

test('an Anthropic stream that ends cleanly after its end_turn but without message_stop is complete: the client gets message_stop', async () => {
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.end([...ANTHROPIC_HEAD, textDelta('lorem '), textDelta('ipsum '), ...ANTHROPIC_TAIL.slice(0, 2)].join(''))
  }
  const stream = anthropic().messages.stream({ model: 'claude-test', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] })
  const message = await within(5000, 'the stream', stream.finalMessage())
  assert.equal(message.stop_reason, 'end_turn')
  assert.deepEqual(message.content, [{ type: 'text', text: 'lorem ipsum ' }])
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.equal(records[0]?.error, undefined)
  assert.equal(records[0]?.completionTokens, 2)
  // Converted for an OpenAI client: a whole answer too.
  const chat = await openai().chat.completions.create({ model: 'claude-test', stream: true, messages: [{ role: 'user', content: 'hi' }] })
  let text = ''
  let finish: string | null | undefined
  for await (const part of chat) {
    text += part.choices[0]?.delta.content ?? ''
    finish = part.choices[0]?.finish_reason ?? finish
  }
  assert.equal(text, 'lorem ipsum ')
  assert.equal(finish, 'stop')
})

test("the upstream's cookies, HSTS, Alt-Svc, CORS, auth challenges and hop-by-hop headers do not reach the client; its other headers do", async () => {
  script = (_req, res) => {
    res.writeHead(200, {
      'content-type': 'application/json',
      'set-cookie': '__cf_bm=upstream; path=/',
      'strict-transport-security': 'max-age=31536000',
      'alt-svc': 'h3=":443"',
      'access-control-allow-origin': '*',
      'www-authenticate': 'Bearer',
      'x-upstream-note': 'kept',
      // Hop-by-hop for the upstream's own hop: named in its `connection` header.
      connection: 'keep-alive, X-Hop-Note',
      'x-hop-note': 'for the gateway only',
    })
    res.end(
      JSON.stringify({
        id: 'c',
        object: 'chat.completion',
        created: 1,
        model: 'm',
        choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }],
      }),
    )
  }
  const { data, response } = await openai()
    .chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'Hi' }] })
    .withResponse()
  assert.equal(data.choices[0]?.message.content, 'hi')
  for (const name of [
    'set-cookie',
    'strict-transport-security',
    'alt-svc',
    'access-control-allow-origin',
    'www-authenticate',
    'x-hop-note',
  ]) {
    assert.equal(response.headers.get(name), null, `${name} reached the client`)
  }
  assert.equal(response.headers.get('x-upstream-note'), 'kept')
})

/** What the OpenAI SDK raises for a chat request (the test fails if it got an answer instead). */
function chatError(stream = false): Promise<unknown> {
  return openai()
    .chat.completions.create({ model: 'gpt-test', stream, messages: [{ role: 'user', content: 'Hi' }] })
    .then(
      () => assert.fail(`answered as a success (stream: ${stream})`),
      (err: unknown) => err,
    )
}

test("an upstream's redirect is an upstream error, its Location not passed on", async () => {
  script = (_req, res) => {
    res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/', 'set-cookie': 'a=b' })
    res.end()
  }
  const error = await chatError()
  assert.ok(error instanceof OpenAI.APIError, String(error))
  assert.equal(error.status, 502)
  assert.equal(error.code, 'llmproxy_upstream_error')
  assert.equal(error.headers.get('location'), null)
  assert.doesNotMatch(error.message, /169\.254/)
})

test('an upstream answering 200 with a web page is an upstream error, not a 200 the SDK cannot read', async () => {
  // Media types are case-insensitive.
  for (const [type, stream] of [
    ['text/html; charset=utf-8', false],
    ['Text/HTML', true],
  ] as const) {
    script = (_req, res) => {
      res.writeHead(200, { 'content-type': type })
      res.end('<html><body>Sign in to continue</body></html>')
    }
    const error = await chatError(stream)
    assert.ok(error instanceof OpenAI.APIError, String(error))
    assert.equal(error.status, 502)
    assert.equal(error.code, 'llmproxy_upstream_error')
    assert.match(error.message, /web page/)
  }
})

test("an upstream refusing the gateway's credential (401, 403) is a 502, not the client's own key refused", async () => {
  for (const status of [401, 403]) {
    script = (_req, res) => {
      res.writeHead(status, { 'content-type': 'application/json', 'www-authenticate': 'Bearer' })
      res.end(
        JSON.stringify({
          error: { message: 'Incorrect API key provided: sk-op…abcd.', type: 'invalid_request_error', code: 'invalid_api_key' },
        }),
      )
    }
    const error = await chatError()
    // An AuthenticationError would tell the user to fix a key they cannot fix (the gateway's own for the upstream).
    assert.ok(error instanceof OpenAI.InternalServerError, `${status}: ${String(error)}`)
    assert.equal(error.status, 502)
    assert.equal(error.code, 'llmproxy_upstream_error')
    assert.doesNotMatch(error.message, /sk-op/)
  }
})

test('a converted stream that reaches [DONE] without a finish reason ends with an error, not an invented end_turn', async () => {
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    // Text, then the terminator with no finish_reason ever sent: the answer was cut short upstream.
    res.end([CHAT_EVENTS[0], CHAT_EVENTS[1], 'data: [DONE]\n\n'].join(''))
  }
  const streamed = anthropic().messages.stream({ model: 'gpt-test', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] })
  await assert.rejects(within(5000, 'the stream', streamed.finalMessage()), /without finishing its answer/)
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.equal(records[0]?.error?.code, 'llmproxy_upstream_error')
})

test("a Gemini stream whose last event has no blank line after it is complete: its finish is read at the body's end", async () => {
  const event = (text: string, last: boolean) =>
    `data: ${JSON.stringify({
      candidates: [{ content: { role: 'model', parts: [{ text }] }, index: 0, ...(last ? { finishReason: 'STOP' } : {}) }],
      ...(last ? { usageMetadata: { promptTokenCount: 4, candidatesTokenCount: 2, totalTokenCount: 6 } } : {}),
    })}`
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.end(`${event('Hello', false)}\r\n\r\n${event(' world', true)}`)
  }
  const stream = await openai().chat.completions.create({
    model: 'gemini-test',
    stream: true,
    messages: [{ role: 'user', content: 'Hi' }],
  })
  let text = ''
  let finish: string | null = null
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta.content ?? ''
    finish = chunk.choices[0]?.finish_reason ?? finish
  }
  assert.equal(text, 'Hello world')
  assert.equal(finish, 'stop')
  await eventually(() => records.length === 1, 5000, 'the usage record')
  // The count came with the finishReason: the answer's own, exact (the relay saw no event end to note it by).
  assert.deepEqual([records[0]?.error, records[0]?.completionTokens, records[0]?.estimated], [undefined, 2, false])
})

test('a Gemini function call whose arguments hold the key finishReason or blockReason does not end the stream: cut there, it fails, same-format or converted', async () => {
  const event = (candidate: Record<string, unknown>, tokens: number) =>
    `data: ${JSON.stringify({
      candidates: [{ index: 0, ...candidate }],
      usageMetadata: { promptTokenCount: 4, candidatesTokenCount: tokens, totalTokenCount: 4 + tokens },
      modelVersion: 'gemini-2.5-flash',
    })}\r\n\r\n`
  // Keys a model may well write into a call's arguments (a status update), as deep as Gemini nests them.
  const call = event(
    { content: { role: 'model', parts: [{ functionCall: { name: 'set_status', args: { finishReason: 'STOP', blockReason: 'none' } } }] } },
    9,
  )
  const last = event({ content: { role: 'model', parts: [{ text: '' }] }, finishReason: 'STOP' }, 9)
  let complete = false
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    // The call in a read of its own; then the upstream ends, cleanly, before its last event (or with it).
    res.write(event({ content: { role: 'model', parts: [{ text: 'Updating.' }] } }, 2))
    setTimeout(() => res.write(call), 20)
    setTimeout(() => res.end(complete ? last : ''), 60)
  }
  const geminiCalls = async () => {
    const gemini = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: url } })
    const calls = []
    for await (const part of await gemini.models.generateContentStream({ model: 'gemini-test', contents: 'hi' })) {
      calls.push(...(part.functionCalls ?? []).map((fn) => fn.args))
    }
    return calls
  }
  const openaiCalls = async () => {
    const stream = await openai().chat.completions.create({
      model: 'gemini-test',
      stream: true,
      messages: [{ role: 'user', content: 'hi' }],
    })
    let args = ''
    for await (const part of stream) args += part.choices[0]?.delta.tool_calls?.[0]?.function?.arguments ?? ''
    return args
  }
  // Cut after the call: the Gemini SDK and the OpenAI SDK get the in-band error, the record says the upstream failed.
  // (A converted stream's decoder, which parses the events, also knows the answer is unfinished.)
  await assert.rejects(within(10_000, 'the Gemini SDK stream', geminiCalls()), /ended the stream before it was complete/)
  await assert.rejects(within(10_000, 'the OpenAI SDK stream', openaiCalls()), /The upstream ended/)
  await eventually(() => records.length === 2, 5000, 'the usage records')
  assert.deepEqual(
    records.map((record) => record.error?.code),
    ['llmproxy_upstream_error', 'llmproxy_upstream_error'],
  )
  // With its last event, the same answer is complete.
  records.length = 0
  complete = true
  assert.deepEqual(await within(10_000, 'the Gemini SDK stream', geminiCalls()), [{ finishReason: 'STOP', blockReason: 'none' }])
  assert.equal(JSON.parse(await within(10_000, 'the OpenAI SDK stream', openaiCalls())).blockReason, 'none')
  await eventually(() => records.length === 2, 5000, 'the usage records')
  assert.deepEqual(
    records.map((record) => record.error),
    [undefined, undefined],
  )
})

test("a shutdown's abort ends a stream with its error without counting against the upstream; an ended answer is left whole", async () => {
  // A stream under way: a first token, then nothing until the abort.
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write(CHAT_EVENTS[0] as string)
    res.write(CHAT_EVENTS[1] as string)
  }
  const stream = await openai().chat.completions.create({ model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'Hi' }] })
  const read = (async () => {
    for await (const _chunk of stream) {
      // the first token arrives; the abort comes while waiting for the next
    }
  })().then(
    () => null,
    (err: unknown) => err,
  )
  const failures = () => app.upstreams.snapshot().find((u) => u.name === 'raw')?.consecutiveFailures
  const before = failures()
  await eventually(() => records.length === 0 && app.llmRouter.abortInFlight(errors.shuttingDown()) === 1, 5000, 'the stream to be aborted')
  const error = await read
  assert.ok(error instanceof OpenAI.APIError, String(error))
  assert.equal(error.code, 'llmproxy_shutting_down')
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.equal(records[0]?.error?.code, 'llmproxy_shutting_down')
  assert.equal(failures(), before, 'the abort counted against the upstream')

  // A whole answer already ended, still on its way to a client that does not read: not cut. (A converted answer is
  // written in one piece once read whole: it ends at once, however slowly its client reads.)
  const big = 'x'.repeat(4 * 1024 * 1024)
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(
      JSON.stringify({
        id: 'msg_1',
        type: 'message',
        role: 'assistant',
        model: 'claude',
        content: [{ type: 'text', text: big }],
        stop_reason: 'end_turn',
        stop_sequence: null,
        usage: { input_tokens: 3, output_tokens: 5 },
      }),
    )
  }
  records.length = 0
  const socket = connect(Number(new URL(url).port), '127.0.0.1')
  const body = JSON.stringify({ model: 'claude-test', messages: [{ role: 'user', content: 'Hi' }] })
  socket.write(
    `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
  )
  socket.pause()
  await eventually(() => records.length === 1, 5000, 'the answer to end (its record)')
  assert.equal(app.llmRouter.abortInFlight(errors.shuttingDown()), 0)
  let received = 0
  socket.on('data', (data: Buffer) => {
    received += data.length
  })
  socket.resume()
  await eventually(() => received > big.length, 5000, 'the whole answer')
  socket.destroy()
})

/** The raw bytes a chat stream request gets. */
async function rawChat(): Promise<string> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
  })
  return res.text()
}

test('a stream ending in `data: [DONE]` without its line end: one [DONE] for the client', async () => {
  for (const done of ['data: [DONE]', 'data: [DONE]\n']) {
    script = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.end(CHAT_EVENTS.slice(0, -1).join('') + done)
    }
    const raw = await rawChat()
    assert.equal(raw.match(/data: \[DONE\]/g)?.length, 1, raw.slice(-80))
    assert.ok(raw.endsWith('data: [DONE]\n\n'))
  }
})

test('a last event longer than the gateway holds, ended without its blank line: it goes out whole, the answer is complete', async () => {
  const long = 'x'.repeat(1.5 * 1024 * 1024)
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write(CHAT_EVENTS[0])
    res.end(chunk({ choices: [{ index: 0, delta: { content: long }, finish_reason: 'stop' }] }).trimEnd())
  }
  const text = await streamChat()
  assert.equal(text.length, long.length)
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.equal(records[0]?.error, undefined)
})

test('an error event after a comment, before any token: the request fails over (here: the error status), not a 200 with an error', async () => {
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.end(': keep-alive\ndata: {"error":{"message":"no capacity","type":"server_error"}}\n\n')
  }
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
  })
  // (Its `server_error` stands for a 500: the upstream's error, as it would have answered it before its stream.)
  assert.equal(res.status, 500)
  assert.match(String(res.headers.get('content-type')), /application\/json/)
  assert.deepEqual(await res.json(), { error: { message: 'no capacity', type: 'server_error' } })
})
