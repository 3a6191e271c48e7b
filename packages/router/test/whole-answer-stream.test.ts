// An upstream that answers a streamed request with its whole JSON answer (a server that does not stream, or ignores
// `stream`): the client gets that answer as its own API's stream, read by the official SDKs, and the record counts
// the upstream's usage. Before, an OpenAI client's stream ended empty with no error, and a converted client got a 502
// while the upstream's tokens went unbilled.
import assert from 'node:assert/strict'
import type { ServerResponse } from 'node:http'
import { test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { GoogleGenAI } from '@google/genai'
import OpenAI from 'openai'
import { parseSse } from './helpers.js'
import { DONE, role, type Scripted, scripted, sleep, sse, text, upstream } from './scripted.js'
import { anthropicStream, openaiStream } from './sdk-streams.js'

function json(res: ServerResponse, body: unknown): void {
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}

const completion = (message: Record<string, unknown>, finish: string) => ({
  id: 'chatcmpl-whole',
  object: 'chat.completion',
  created: 1767225600,
  model: 'served',
  choices: [{ index: 0, message: { role: 'assistant', ...message }, finish_reason: finish }],
  usage: { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 },
})
const answered = completion({ content: 'Hi whole.' }, 'stop')
const toolCall = completion(
  {
    content: null,
    tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }],
  },
  'tool_calls',
)
const tools = [
  { name: 'get_weather', description: 'Weather', input_schema: { type: 'object' as const, properties: { city: { type: 'string' } } } },
]

async function records(g: Scripted, count: number) {
  for (let i = 0; i < 100 && g.records.length < count; i++) await sleep(20)
  return g.records.map((r) => [r.model, r.upstream, r.status, r.attempts, r.promptTokens, r.completionTokens, r.estimated])
}

test('a JSON answer to a streamed request reaches every client as its own stream, billed as the upstream reported', async () => {
  const whole = upstream('whole', 'vllm', (res) => json(res, answered))
  const tool = upstream('tool', 'vllm', (res) => json(res, toolCall))
  const claude = upstream('claude', 'anthropic', (res) =>
    json(res, {
      id: 'msg_whole',
      type: 'message',
      role: 'assistant',
      model: 'claude-served',
      content: [{ type: 'text', text: 'Hi from Claude, whole.' }],
      stop_reason: 'end_turn',
      stop_sequence: null,
      usage: { input_tokens: 13, output_tokens: 6 },
    }),
  )
  const g = await scripted(
    [whole, tool, claude],
    [
      { name: 'm', upstreams: ['whole'] },
      { name: 'tool', upstreams: ['tool'] },
      { name: 'claude', upstreams: ['claude'] },
    ],
  )
  try {
    // Same API: the OpenAI SDK's stream (before: '' and no error).
    assert.equal(await openaiStream(g.url, 'm'), 'Hi whole.')
    // The bytes: an SSE stream with the usage chunk asked for, and [DONE].
    const res = await fetch(`${g.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'm',
        stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: 'user', content: 'hi' }],
      }),
    })
    assert.equal(res.headers.get('content-type'), 'text/event-stream')
    const events = parseSse(await res.text()).map((event) => event.data)
    assert.equal(events.at(-1), '[DONE]')
    const { prompt_tokens, completion_tokens } = JSON.parse(events.at(-2) ?? '').usage
    assert.deepEqual([prompt_tokens, completion_tokens], [11, 7])
    // Converted: the Anthropic SDK's stream helper, its usage, and a tool call.
    const anthropic = new Anthropic({ baseURL: g.url, apiKey: 'k', maxRetries: 0 })
    const message = await anthropic.messages
      .stream({ model: 'm', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] })
      .finalMessage()
    assert.deepEqual(
      message.content.map((block) => (block.type === 'text' ? block.text : block.type)),
      ['Hi whole.'],
    )
    assert.deepEqual([message.stop_reason, message.usage.input_tokens, message.usage.output_tokens], ['end_turn', 11, 7])
    const called = await anthropic.messages
      .stream({ model: 'tool', max_tokens: 100, tools, messages: [{ role: 'user', content: 'Weather in Paris?' }] })
      .finalMessage()
    assert.equal(called.stop_reason, 'tool_use')
    assert.deepEqual(
      called.content.map((block) => (block.type === 'tool_use' ? [block.name, block.input] : block.type)),
      [['get_weather', { city: 'Paris' }]],
    )
    // The OpenAI SDK's stream helper on the same tool call, and on an Anthropic upstream that answered whole.
    const openai = new OpenAI({ baseURL: `${g.url}/v1`, apiKey: 'k', maxRetries: 0 })
    const chat = await openai.chat.completions
      .stream({ model: 'tool', messages: [{ role: 'user', content: 'Weather in Paris?' }] })
      .finalChatCompletion()
    assert.deepEqual(
      chat.choices[0]?.message.tool_calls?.map((call) => [call.function.name, call.function.arguments]),
      [['get_weather', '{"city":"Paris"}']],
    )
    assert.equal(await openaiStream(g.url, 'claude'), 'Hi from Claude, whole.')
    // Gemini: the SDK's stream (alt=sse), and the JSON array without it.
    const gemini = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: g.url } })
    let text = ''
    for await (const part of await gemini.models.generateContentStream({ model: 'm', contents: 'hi' })) text += part.text ?? ''
    assert.equal(text, 'Hi whole.')
    const array = await fetch(`${g.url}/v1beta/models/m:streamGenerateContent`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
    })
    assert.equal(array.headers.get('content-type'), 'application/json')
    const parts = (await array.json()) as { candidates?: { content?: { parts?: { text?: string }[] } }[] }[]
    assert.equal(parts.map((part) => part.candidates?.[0]?.content?.parts?.[0]?.text ?? '').join(''), 'Hi whole.')
    assert.deepEqual(await records(g, 8), [
      ['m', 'whole', 200, 1, 11, 7, false],
      ['m', 'whole', 200, 1, 11, 7, false],
      ['m', 'whole', 200, 1, 11, 7, false],
      ['tool', 'tool', 200, 1, 11, 7, false],
      ['tool', 'tool', 200, 1, 11, 7, false],
      ['claude', 'claude', 200, 1, 13, 6, false],
      ['m', 'whole', 200, 1, 11, 7, false],
      ['m', 'whole', 200, 1, 11, 7, false],
    ])
  } finally {
    await g.close()
  }
})

test('a JSON answer after the heartbeat held the stream open joins it; one that is no answer fails over', async () => {
  // Its headers, then silence past heartbeatMs, then an end with no answer: the next upstream answers whole.
  const silent = upstream('silent', 'vllm', async (res) => {
    sse(res)
    res.flushHeaders()
    await sleep(350)
    res.end()
  })
  const whole = upstream('whole', 'vllm', (res) => json(res, answered))
  // A finish_reason that says the generation failed: no answer, the next upstream gives one.
  const aborted = upstream('aborted', 'vllm', (res) => json(res, completion({ content: 'Hi' }, 'abort')))
  const g = await scripted(
    [silent, whole, aborted],
    [
      { name: 'held', upstreams: ['silent', 'whole'] },
      { name: 'pool', upstreams: ['aborted', 'whole'] },
    ],
    { timeouts: { heartbeatMs: 100 }, retry: { attempts: 2, backoffMs: 10 } },
  )
  try {
    // (Before, a JSON answer after the hold was refused: "did not answer in the expected shape".)
    const res = await fetch(`${g.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'held', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    })
    const raw = await res.text()
    assert.ok(raw.startsWith(': keep-alive\n\n'), raw)
    assert.equal(
      parseSse(raw)
        .filter((event) => event.data !== '[DONE]')
        .map((event) => (JSON.parse(event.data) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? '')
        .join(''),
      'Hi whole.',
    )
    assert.equal(await anthropicStream(g.url, 'pool'), 'Hi whole.')
    assert.deepEqual(await records(g, 2), [
      ['held', 'whole', 200, 2, 11, 7, false],
      // The aborted generation's tokens are billed with the answer's.
      ['pool', 'whole', 200, 2, 22, 14, false],
    ])
  } finally {
    await g.close()
  }
})

test('an error answer to a streamed request comes back as it is; so does a whole answer on a route no encoder writes', async () => {
  const refusing = upstream('refusing', 'vllm', (res) => {
    res.writeHead(400, { 'content-type': 'application/json' })
    res.end('{"object":"error","message":"Invalid tool schema.","type":"BadRequestError","param":null,"code":400}')
  })
  const legacy = upstream('legacy', 'vllm', (res) =>
    json(res, {
      id: 'cmpl-1',
      object: 'text_completion',
      created: 1767225600,
      model: 'served',
      choices: [{ index: 0, text: 'Hi legacy.', finish_reason: 'stop' }],
      usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 },
    }),
  )
  const g = await scripted(
    [refusing, legacy],
    [
      { name: 'refusing', upstreams: ['refusing'] },
      { name: 'legacy', upstreams: ['legacy'] },
    ],
  )
  try {
    const post = (path: string, body: Record<string, unknown>) =>
      fetch(`${g.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    const refused = await post('/v1/chat/completions', { model: 'refusing', stream: true, messages: [{ role: 'user', content: 'hi' }] })
    assert.equal(refused.status, 400)
    assert.match(await refused.text(), /Invalid tool schema/)
    // Legacy completions have no stream encoder here: the upstream's JSON as it sent it.
    const completed = await post('/v1/completions', { model: 'legacy', stream: true, prompt: 'hi' })
    assert.equal(completed.status, 200)
    assert.equal(((await completed.json()) as { choices: { text: string }[] }).choices[0]?.text, 'Hi legacy.')
    assert.deepEqual(await records(g, 2), [
      ['refusing', 'refusing', 400, 1, 0, 0, false],
      ['legacy', 'legacy', 200, 1, 3, 4, false],
    ])
  } finally {
    await g.close()
  }
})

test('a continuation answered whole is refused, not spliced: the client never gets its text twice', async () => {
  const cutting = upstream('cutting', 'vllm', (res) => {
    sse(res)
    res.write(`${role}${text('Partial')}`)
    setTimeout(() => res.destroy(), 50)
  })
  const whole = upstream('whole', 'vllm', (res) => json(res, completion({ content: 'Partial answer.' }, 'stop')))
  const g = await scripted([cutting, whole], [{ name: 'cut', upstreams: ['cutting', 'whole'] }], { retry: { attempts: 2, backoffMs: 10 } })
  try {
    assert.match(await openaiStream(g.url, 'cut'), /^Partial<<.*>>$/)
  } finally {
    await g.close()
  }
})

test('an answer refused half-way through its encoding leaves nothing behind: the next upstream answers whole', async () => {
  // Arguments that are no JSON object: an Anthropic client's encoder refuses the tool call after opening the message.
  const badTool = upstream('bad-tool', 'vllm', (res) =>
    json(
      res,
      completion(
        { content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '"Paris"' } }] },
        'tool_calls',
      ),
    ),
  )
  const healthy = upstream('healthy', 'vllm', (res) => json(res, answered))
  const g = await scripted([badTool, healthy], [{ name: 'm', upstreams: ['bad-tool', 'healthy'] }], {
    retry: { attempts: 2, backoffMs: 10 },
  })
  try {
    // (Before, the encoder the refused answer had opened served the next one: no message_start, the SDK threw.)
    assert.equal(await anthropicStream(g.url, 'm'), 'Hi whole.')
    assert.deepEqual(await records(g, 1), [['m', 'healthy', 200, 2, 22, 14, false]])
  } finally {
    await g.close()
  }
})

test('a whole answer has its time to first token; one the client left while it was read is billed as generated', async () => {
  const slowBody = upstream('slow-body', 'vllm', async (res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.flushHeaders()
    await sleep(300)
    res.end(JSON.stringify(answered))
  })
  const g = await scripted([slowBody], [{ name: 'm', upstreams: ['slow-body'] }])
  try {
    assert.equal(await openaiStream(g.url, 'm'), 'Hi whole.')
    // The client leaves once the upstream's headers came, before its body.
    const left = new AbortController()
    const leaving = fetch(`${g.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
      signal: left.signal,
    })
    await sleep(100)
    left.abort()
    await assert.rejects(leaving)
    await records(g, 2)
    const [answered_, abandoned] = g.records
    assert.ok((answered_?.ttftMs ?? 0) >= 290, String(answered_?.ttftMs))
    // (Before, nothing: the upstream generated its answer before its headers.)
    assert.deepEqual([abandoned?.clientAborted, abandoned?.estimated, (abandoned?.promptTokens ?? 0) > 0], [true, true, true])
  } finally {
    await g.close()
  }
})

test('several choices are not carried by the encoders: a whole answer with them comes as the upstream sent it', async () => {
  const two = upstream('two', 'vllm', (res) =>
    json(res, {
      ...answered,
      choices: [
        { index: 0, message: { role: 'assistant', content: 'One.' }, finish_reason: 'stop' },
        { index: 1, message: { role: 'assistant', content: 'Two.' }, finish_reason: 'stop' },
      ],
    }),
  )
  const g = await scripted([two], [{ name: 'm', upstreams: ['two'] }])
  try {
    const res = await fetch(`${g.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', stream: true, n: 2, messages: [{ role: 'user', content: 'hi' }] }),
    })
    const body = (await res.json()) as { choices: { message: { content: string } }[] }
    assert.deepEqual(
      body.choices.map((choice) => choice.message.content),
      ['One.', 'Two.'],
    )
  } finally {
    await g.close()
  }
})

test('a stream labelled as no event stream is refused at its first byte, not once it was all read', async () => {
  const mislabelled = upstream('mislabelled', 'vllm', async (res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write(`${role}${text('Hi')}`)
    await sleep(2000)
    res.end(DONE)
  })
  const healthy = upstream('healthy', 'vllm', (res) => json(res, answered))
  const g = await scripted([mislabelled, healthy], [{ name: 'm', upstreams: ['mislabelled', 'healthy'] }], {
    retry: { attempts: 2, backoffMs: 10 },
  })
  try {
    const started = performance.now()
    assert.equal(await openaiStream(g.url, 'm'), 'Hi whole.')
    // (Before, the whole 2 s generation was read, then refused as not JSON.)
    assert.ok(performance.now() - started < 1500, `${performance.now() - started} ms`)
  } finally {
    await g.close()
  }
})
