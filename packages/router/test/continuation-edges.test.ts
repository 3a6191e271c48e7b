// The edges of mid-stream continuation a review found (each was a bug): continuations that fail before their
// headers, replays that say less or something else, cuts after the finish, cuts in the middle of a line, an error as
// the first event, malformed text before a cut, and a client that reads slowly.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import OpenAI from 'openai'
import { parseSse } from './helpers.js'
import { DONE, finish, role, scripted, sleep, sse, streamChat, text, upstream, usageChunk } from './scripted.js'

const models = [{ name: 'm', upstreams: ['a', 'b', 'c'], strategy: 'ordered' }]
const fast = { timeouts: { firstTokenMs: 1000, idleMs: 400 }, retry: { attempts: 4, backoffMs: 10 } }

/** The text an OpenAI stream carried, and its in-band error code (null when it ended complete). */
function answerOf(raw: string): { content: string; error: string | null; done: boolean } {
  let content = ''
  let error: string | null = null
  for (const event of parseSse(raw)) {
    if (event.data === '[DONE]') continue
    const data = JSON.parse(event.data) as { error?: { code: string }; choices?: { delta?: { content?: string } }[] }
    if (data.error !== undefined) error = data.error.code
    content += data.choices?.[0]?.delta?.content ?? ''
  }
  return { content, error, done: raw.includes('data: [DONE]') }
}

test('a continuation whose upstream refuses the connection: the next upstream finishes the answer, no hang', async () => {
  const a = upstream('a', 'vllm', async (res) => {
    sse(res)
    res.write(role + text('Hello'))
    await sleep(20)
    res.socket?.destroy()
  })
  const b = upstream('b', 'vllm', (res) => {
    res.socket?.destroy()
  })
  const c = upstream('c', 'vllm', (res) => {
    sse(res)
    res.end(role + text(' world') + finish() + DONE)
  })
  const g = await scripted([a, b, c], models, fast)
  try {
    const answer = answerOf(await streamChat(g.url, 'm'))
    assert.deepEqual(answer, { content: 'Hello world', error: null, done: true })
    assert.equal(c.bodies.length, 1)
  } finally {
    await g.close()
  }
})

test('a replay that stops short of (or turns away from) what the client has: the in-band error, never a complete-looking answer', async () => {
  for (const replay of [role + text('Hello') + finish() + usageChunk(9, 1) + DONE, role + text('Hello') + finish('tool_calls') + DONE]) {
    const a = upstream('a', 'openai', async (res) => {
      sse(res)
      res.write(role + text('Hello') + text(' wor'))
      await sleep(20)
      res.socket?.destroy()
    })
    const b = upstream('b', 'openai', (res) => {
      sse(res)
      res.end(replay)
    })
    const g = await scripted([a, b], [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered' }], { ...fast, retry: { attempts: 2 } })
    try {
      const answer = answerOf(await streamChat(g.url, 'm'))
      assert.deepEqual(answer, { content: 'Hello wor', error: 'llmproxy_upstream_error', done: false })
      assert.equal(g.records[0]?.resumed, false)
    } finally {
      await g.close()
    }
  }
})

test('a cut after the finish (before [DONE]) loses nothing: the answer ends complete, nothing is continued', async () => {
  const a = upstream('a', 'vllm', async (res) => {
    sse(res)
    res.write(role + text('All done.') + finish())
    await sleep(20)
    res.socket?.destroy()
  })
  const b = upstream('b', 'vllm', (res) => {
    sse(res)
    res.end(role + text(' And more text.') + finish() + DONE)
  })
  const g = await scripted([a, b], [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered' }], fast)
  try {
    const answer = answerOf(await streamChat(g.url, 'm'))
    assert.deepEqual(answer, { content: 'All done.', error: null, done: true })
    assert.equal(b.bodies.length, 0)
    assert.equal(g.records[0]?.error, undefined)
  } finally {
    await g.close()
  }
})

test('an Anthropic stream cut in the middle of a line: the SDK gets one whole message, continued elsewhere', async () => {
  const event = (name: string, data: Record<string, unknown>) => `event: ${name}\ndata: ${JSON.stringify({ type: name, ...data })}\n\n`
  const start = event('message_start', {
    message: { id: 'msg_1', type: 'message', role: 'assistant', model: 'c', content: [], usage: { input_tokens: 5, output_tokens: 1 } },
  })
  const block = event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } })
  const delta = (t: string) => event('content_block_delta', { index: 0, delta: { type: 'text_delta', text: t } })
  const a = upstream('a', 'anthropic', async (res) => {
    sse(res)
    const half = delta(' world')
    res.write(start + block + delta('Hello') + half.slice(0, 40))
    await sleep(20)
    res.socket?.destroy()
  })
  const b = upstream('b', 'anthropic', (res) => {
    sse(res)
    res.end(
      start +
        block +
        delta(' world.') +
        event('content_block_stop', { index: 0 }) +
        event('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 3 } }) +
        event('message_stop', {}),
    )
  })
  const g = await scripted([a, b], [{ name: 'claude', upstreams: ['a', 'b'], strategy: 'ordered' }], fast)
  try {
    const client = new Anthropic({ baseURL: g.url, apiKey: 'unused', maxRetries: 0 })
    const message = await client.messages
      .stream({ model: 'claude', max_tokens: 50, messages: [{ role: 'user', content: 'hi' }] })
      .finalMessage()
    assert.equal(message.content[0]?.type === 'text' ? message.content[0].text : '', 'Hello world.')
    // b was asked to continue exactly what the client had: the half-sent event never reached it.
    const prefill = (JSON.parse(b.bodies[0] ?? '{}') as { messages: { role: string; content: unknown }[] }).messages.at(-1)
    assert.equal(prefill?.role, 'assistant')
    assert.match(JSON.stringify(prefill?.content), /"Hello"/)
  } finally {
    await g.close()
  }
})

test('an error as the first event is a failure before the commit point: another upstream answers, one role chunk', async () => {
  const a = upstream('a', 'vllm', (res) => {
    sse(res)
    res.end('data: {"error":{"message":"engine dead"}}\n\n')
  })
  const b = upstream('b', 'vllm', (res) => {
    sse(res)
    res.end(role + text('Hi from b.') + finish() + DONE)
  })
  const g = await scripted([a, b], [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered' }], fast)
  try {
    const client = new OpenAI({ baseURL: `${g.url}/v1`, apiKey: 'unused', maxRetries: 0 })
    const stream = await client.chat.completions.create({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] })
    let content = ''
    let roles = 0
    for await (const part of stream) {
      content += part.choices[0]?.delta.content ?? ''
      if (part.choices[0]?.delta.role === 'assistant') roles++
    }
    assert.equal(content, 'Hi from b.')
    assert.equal(roles, 1)
  } finally {
    await g.close()
  }
})

test('text that is not a valid JSON string, then a cut: the stream ends with an error, the process survives', async () => {
  const a = upstream('a', 'vllm', async (res) => {
    sse(res)
    res.write(
      `${role}data: {"id":"up1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"col1\tcol2"},"finish_reason":null}]}\n\n`,
    )
    await sleep(20)
    res.socket?.destroy()
  })
  const b = upstream('b', 'vllm', (res) => {
    sse(res)
    res.end(role + text('unused') + finish() + DONE)
  })
  const g = await scripted([a, b], [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered' }], fast)
  try {
    const raw = await streamChat(g.url, 'm')
    // (The client got the upstream's bad line as it was: passthrough does not parse it.)
    assert.match(raw, /event: error\ndata: \{"error":\{[^\n]*"code":"llmproxy_upstream_error"/)
    assert.ok(!raw.includes('[DONE]'))
    assert.equal(b.bodies.length, 0, 'not continued from text it could not read')
  } finally {
    await g.close()
  }
})

test('a client that reads slowly is not taken for a silent upstream', async () => {
  const big = 'x'.repeat(64 * 1024)
  const a = upstream('a', 'vllm', async (res) => {
    sse(res)
    res.write(role)
    for (let i = 0; i < 100; i++) res.write(text(big))
    res.end(finish() + DONE)
  })
  const g = await scripted([a], [{ name: 'm', upstreams: ['a'] }], { timeouts: { idleMs: 300 } })
  try {
    const res = await fetch(`${g.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    })
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    await reader.read()
    // The client pauses well beyond the idle deadline; the gateway's socket buffers fill, the upstream is paused.
    await sleep(1200)
    let raw = ''
    const decoder = new TextDecoder()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      raw += decoder.decode(value, { stream: true })
    }
    assert.ok(raw.endsWith('data: [DONE]\n\n'), raw.slice(-200))
    assert.ok(!raw.includes('event: error'))
  } finally {
    await g.close()
  }
})

test('a stream of several choices (n, candidateCount) cut mid-way is not continued: their texts interleave, the in-band error', async () => {
  const choice = (index: number, content: string) =>
    `data: ${JSON.stringify({ id: 'up1', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index, delta: { content }, finish_reason: null }] })}\n\n`
  const candidate = (index: number, t: string) =>
    `data: ${JSON.stringify({ candidates: [{ content: { parts: [{ text: t }], role: 'model' }, index }], modelVersion: 'm', responseId: 'r1' })}\r\n\r\n`
  const cases = [
    {
      protocol: 'vllm' as const,
      first: choice(0, 'Cats ') + choice(1, 'Dogs ') + choice(0, 'are '),
      path: '/v1/chat/completions',
      body: { model: 'm', stream: true, n: 2, messages: [{ role: 'user', content: 'hi' }] },
      error: /event: error\ndata: \{"error":\{[^\n]*"code":"llmproxy_upstream_error"/,
    },
    {
      protocol: 'gemini' as const,
      first: candidate(0, 'Cats ') + candidate(1, 'Dogs ') + candidate(0, 'are '),
      path: '/v1beta/models/m:streamGenerateContent?alt=sse',
      body: { contents: [{ role: 'user', parts: [{ text: 'hi' }] }], generationConfig: { candidateCount: 2 } },
      error: /data: \{"error":\{"code":502/,
    },
  ]
  for (const { protocol, first, path, body, error } of cases) {
    const a = upstream('a', protocol, async (res) => {
      sse(res)
      res.write(first)
      await sleep(20)
      res.socket?.destroy()
    })
    const b = upstream('b', protocol, (res) => {
      sse(res)
      res.end('')
    })
    const g = await scripted([a, b], [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered' }], fast)
    try {
      const res = await fetch(`${g.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      })
      const raw = await res.text()
      assert.match(raw, error, protocol)
      assert.ok(!raw.includes('[DONE]'))
      assert.equal(b.bodies.length, 0, `${protocol}: not continued`)
      assert.equal(g.records[0]?.resumed, false)
    } finally {
      await g.close()
    }
  }
})

test("a capped answer continued from an OpenAI-format stream: the continuation's cap is the tokens not generated yet", async () => {
  const a = upstream('a', 'vllm', async (res) => {
    sse(res)
    res.write(role + text('lorem ') + text('ipsum ') + text('dolor '))
    await sleep(20)
    res.socket?.destroy()
  })
  const b = upstream('b', 'vllm', (res) => {
    sse(res)
    res.end(role + text('sit amet consectetur ') + finish('length') + DONE)
  })
  const g = await scripted([a, b], [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered' }], fast)
  try {
    const res = await fetch(`${g.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', stream: true, max_tokens: 6, messages: [{ role: 'user', content: 'hi' }] }),
    })
    assert.equal(answerOf(await res.text()).content, 'lorem ipsum dolor sit amet consectetur ')
    assert.equal((JSON.parse(b.bodies[0] ?? '{}') as { max_tokens?: number }).max_tokens, 3)
  } finally {
    await g.close()
  }
})

test('a Gemini stream cut after a chunk of several text parts is continued from all of them, in order', async () => {
  const event = (parts: { text: string }[], finish?: string) =>
    `data: ${JSON.stringify({ candidates: [{ content: { parts, role: 'model' }, index: 0, ...(finish ? { finishReason: finish } : {}) }], modelVersion: 'm', responseId: 'r1' })}\r\n\r\n`
  const a = upstream('a', 'gemini', async (res) => {
    sse(res)
    res.write(event([{ text: 'lorem ' }, { text: 'ipsum ' }]) + event([{ text: 'dolor ' }]))
    await sleep(20)
    res.socket?.destroy()
  })
  const b = upstream('b', 'gemini', (res) => {
    sse(res)
    res.end(event([{ text: 'sit amet' }], 'STOP'))
  })
  const g = await scripted([a, b], [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered' }], fast)
  try {
    const res = await fetch(`${g.url}/v1beta/models/m:streamGenerateContent?alt=sse`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
    })
    assert.ok(!(await res.text()).includes('"error"'))
    const sent = JSON.parse(b.bodies[0] ?? '{}') as { contents: { role: string; parts: { text: string }[] }[] }
    assert.deepEqual(sent.contents.at(-1), { role: 'model', parts: [{ text: 'lorem ipsum dolor ' }] })
    assert.equal(g.records[0]?.resumed, true)
  } finally {
    await g.close()
  }
})

test('while a continuation is reached, the client gets its heartbeat every timeouts.heartbeatMs; 0 sends none', async () => {
  const streamed = async (heartbeatMs: number) => {
    const g = await scripted(
      [
        upstream('a', 'vllm', async (res) => {
          sse(res)
          res.write(role + text('Hello'))
          await sleep(100)
          res.destroy()
        }),
        // The continuation's upstream answers 1.5 s later.
        upstream(
          'b',
          'vllm',
          async (res) => {
            await sleep(1500)
            sse(res)
            res.end(role + text(' world.') + finish() + DONE)
          },
          true,
        ),
      ],
      [{ name: 'm', upstreams: ['a', 'b'] }],
      { timeouts: { heartbeatMs } },
    )
    try {
      const body = await streamChat(g.url, 'm')
      await sleep(50)
      return { beats: body.split(': keep-alive\n\n').length - 1, whole: body.endsWith(DONE), resumed: g.records[0]?.resumed }
    } finally {
      await g.close()
    }
  }
  // One at the cut, then one every 300 ms of the 1.5 s wait.
  const frequent = await streamed(300)
  assert.ok(frequent.beats >= 4 && frequent.beats <= 7, JSON.stringify(frequent))
  assert.deepEqual(await streamed(0), { beats: 0, whole: true, resumed: true })
  assert.deepEqual(await streamed(5000), { beats: 1, whole: true, resumed: true })
  assert.deepEqual([frequent.whole, frequent.resumed], [true, true])
})
