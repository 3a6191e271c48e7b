// Converted streams that fail in band (a vLLM `finish_reason: "abort"`, an OpenRouter error chunk) before their first
// events gave the client anything: a failure before the commit point, retried with the stream's own headers (the
// client of a continuation would get a 200 with no content type, then its fallback lost to ERR_HTTP_HEADERS_SENT).
// Real sockets, scripted upstreams, the official SDKs as clients.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { GoogleGenAI } from '@google/genai'
import { eventually } from './helpers.js'
import { DONE, role, type Script, scripted, sse, text, upstream, usageChunk } from './scripted.js'

const question = [{ role: 'user' as const, content: 'hi' }]

const chunk = (fields: Record<string, unknown>) =>
  `data: ${JSON.stringify({ id: 'up1', object: 'chat.completion.chunk', created: 1, model: 'm', ...fields })}\n\n`
const abort = chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'abort' }] })

/** An Anthropic client's streamed answer (no thinking asked for): its text, or what it threw. */
async function anthropicStream(url: string, model: string): Promise<string> {
  const client = new Anthropic({ baseURL: url, apiKey: 'k', maxRetries: 0 })
  let out = ''
  try {
    const stream = client.messages.stream({ model, max_tokens: 100, messages: question })
    stream.on('text', (delta) => {
      out += delta
    })
    await stream.finalMessage()
  } catch (err) {
    return `${out}<<${(err as Error).message}>>`
  }
  return out
}

// ── a converted stream that failed before any byte reached the client ─────────────────────────────────────────────

/** vLLM's role chunk, then an abort (nothing for a Gemini client); its usage and [DONE]. */
const abortFirst: Script = (res) => {
  sse(res)
  res.end(role + abort + usageChunk(7, 1) + DONE)
}
/** OpenRouter's in-stream error as the first event (nothing for any converted client). */
const errorFirst: Script = (res) => {
  sse(res)
  res.end(
    chunk({
      error: { code: 502, message: 'Provider disconnected' },
      choices: [{ index: 0, delta: { content: '' }, finish_reason: 'error' }],
    }) + DONE,
  )
}
const healthy: Script = (res) => {
  sse(res)
  res.end(role + text('Fine') + chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] }) + usageChunk(5, 1) + DONE)
}
/** One attempt on the model's pool, one on its fallback. */
const two = { retry: { attempts: 2, backoffMs: 10 } }
const fallbackModels = [
  { name: 'm', upstreams: ['bad'], fallbacks: ['m2'] },
  { name: 'm2', upstreams: ['good'] },
]

test('a Gemini client on vLLM, role chunk then abort: the fallback answers, with the stream headers (no ERR_HTTP_HEADERS_SENT)', async () => {
  const g = await scripted([upstream('bad', 'vllm', abortFirst), upstream('good', 'vllm', healthy)], fallbackModels, two)
  try {
    const res = await fetch(`${g.url}/v1beta/models/m:streamGenerateContent?alt=sse`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
    })
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-type'), 'text/event-stream')
    assert.ok(res.headers.get('x-request-id'))
    const body = await res.text()
    assert.ok(!body.includes('keep-alive') && !body.includes('"error"'), body)
    const client = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: g.url } })
    let answer = ''
    for await (const part of await client.models.generateContentStream({ model: 'm', contents: 'hi' })) answer += part.text ?? ''
    assert.equal(answer, 'Fine')
    await eventually(() => g.records.length === 2, 2000, 'usage records')
    // A plain retry, not a continuation.
    assert.deepEqual(
      g.records.map((r) => [r.status, r.attempts, r.resumed, r.error?.code]),
      [
        [200, 2, false, undefined],
        [200, 2, false, undefined],
      ],
    )
  } finally {
    await g.close()
  }
})

test('an error chunk first (OpenRouter) to each converted client: the fallback answers', async () => {
  const g = await scripted([upstream('bad', 'openai', errorFirst), upstream('good', 'openai', healthy)], fallbackModels, two)
  try {
    assert.equal(await anthropicStream(g.url, 'm'), 'Fine')
    const gemini = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: g.url } })
    let answer = ''
    for await (const part of await gemini.models.generateContentStream({ model: 'm', contents: 'hi' })) answer += part.text ?? ''
    assert.equal(answer, 'Fine')
    await eventually(() => g.records.length === 2, 2000, 'usage records')
    assert.deepEqual(
      g.records.map((r) => [r.status, r.attempts, r.resumed]),
      [
        [200, 2, false],
        [200, 2, false],
      ],
    )
  } finally {
    await g.close()
  }
})

test('every attempt fails before any byte: the client gets the error status in its own shape, not a 200', async () => {
  const g = await scripted([upstream('bad', 'vllm', abortFirst)], [{ name: 'm', upstreams: ['bad'] }], two)
  try {
    const res = await fetch(`${g.url}/v1beta/models/m:streamGenerateContent?alt=sse`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
    })
    assert.equal(res.status, 502)
    const body = (await res.json()) as { error: { code: number; status: string; message: string } }
    assert.equal(body.error.code, 502)
    assert.match(body.error.message, /abort/)
    await eventually(() => g.records.length === 1, 2000, 'usage record')
    assert.deepEqual([g.records[0]?.status, g.records[0]?.attempts], [502, 2])
  } finally {
    await g.close()
  }
})

test('a terminator with nothing for a Gemini client before it (no finish): committed with the stream headers, then continued', async () => {
  const g = await scripted(
    [
      upstream('bad', 'vllm', (res) => {
        sse(res)
        res.end(role + DONE)
      }),
      upstream('good', 'vllm', healthy),
    ],
    fallbackModels,
    two,
  )
  try {
    const client = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: g.url } })
    let answer = ''
    for await (const part of await client.models.generateContentStream({ model: 'm', contents: 'hi' })) answer += part.text ?? ''
    assert.equal(answer, 'Fine')
    await eventually(() => g.records.length === 1, 2000, 'usage record')
    assert.equal(g.records[0]?.status, 200)
  } finally {
    await g.close()
  }
})
