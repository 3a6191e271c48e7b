// Converted streams that fail in band (a Gemini MALFORMED_FUNCTION_CALL, a vLLM `finish_reason: "abort"`, a tool call
// the client's API cannot carry): what the upstream reported is metered, as it is for a same-format client of the same
// bytes; one whose first events gave the client nothing is retried as before the commit point. Real sockets, scripted
// upstreams, the official SDKs as clients.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { test } from 'node:test'
import { GoogleGenAI } from '@google/genai'
import { MAX_EVENT_CHARS } from '@llmproxy/protocols'
import { eventually } from './helpers.js'
import { DONE, role, type Script, scripted, sleep, sse, text, upstream, usageChunk } from './scripted.js'
import { anthropicStream, openaiStream } from './sdk-streams.js'

const one = { retry: { attempts: 1 } }
const question = [{ role: 'user' as const, content: 'hi' }]

const chunk = (fields: Record<string, unknown>) =>
  `data: ${JSON.stringify({ id: 'up1', object: 'chat.completion.chunk', created: 1, model: 'm', ...fields })}\n\n`
const reasoning = (content: string) => chunk({ choices: [{ index: 0, delta: { reasoning_content: content }, finish_reason: null }] })
const abort = chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'abort' }] })
const gemini = (fields: Record<string, unknown>) => `data: ${JSON.stringify({ modelVersion: 'g', responseId: 'r', ...fields })}\r\n\r\n`

/** The usage figures of a record, as a row. */
const usageOf = (g: { records: { promptTokens: number; completionTokens: number; estimated: boolean }[] }) =>
  g.records.map((r) => [r.promptTokens, r.completionTokens, r.estimated])

test('a Gemini MALFORMED_FUNCTION_CALL to an OpenAI client: the usage in the failing chunk is metered, not 0 output tokens', async () => {
  const usage = { promptTokenCount: 1000, candidatesTokenCount: 500, thoughtsTokenCount: 2000, totalTokenCount: 3500 }
  const g = await scripted(
    [
      upstream('g', 'gemini', (res) => {
        sse(res)
        res.end(
          gemini({
            candidates: [{ content: { role: 'model', parts: [{ text: 'thinking hard', thought: true }] }, index: 0 }],
            usageMetadata: { promptTokenCount: 1000, totalTokenCount: 1000 },
          }) +
            gemini({
              candidates: [{ content: {}, finishReason: 'MALFORMED_FUNCTION_CALL', finishMessage: 'print(x', index: 0 }],
              usageMetadata: usage,
            }),
        )
      }),
    ],
    [{ name: 'm', upstreams: ['g'] }],
    one,
  )
  try {
    assert.match(await openaiStream(g.url, 'm'), /<<.*MALFORMED_FUNCTION_CALL/)
    await eventually(() => g.records.length === 1, 2000, 'usage record')
    const record = g.records[0]
    assert.deepEqual(
      [record?.promptTokens, record?.completionTokens, record?.reasoningTokens, record?.estimated],
      [1000, 2500, 2000, false],
    )
    assert.equal(record?.error?.code, 'llmproxy_upstream_error')
  } finally {
    await g.close()
  }
})

test('a vLLM abort, then its usage chunk, to an Anthropic client: the usage that follows the failure is read', async () => {
  const g = await scripted(
    [
      upstream('v', 'vllm', async (res) => {
        sse(res)
        res.write(role + reasoning('Let me think') + reasoning(' about it') + abort)
        // The usage chunk comes in a later read than the failure.
        await sleep(50)
        res.end(usageChunk(900, 4000) + DONE)
      }),
    ],
    [{ name: 'm', upstreams: ['v'] }],
    one,
  )
  try {
    assert.match(await anthropicStream(g.url, 'm'), /<<.*abort/)
    await eventually(() => g.records.length === 1, 2000, 'usage record')
    assert.deepEqual(usageOf(g), [[900, 4000, false]])
  } finally {
    await g.close()
  }
})

test('the same vLLM abort to an OpenAI client (same format, an error event there): the usage that follows is read too', async () => {
  const g = await scripted(
    [
      upstream('v', 'vllm', async (res) => {
        sse(res)
        res.write(role + text('Partial') + abort)
        await sleep(50)
        res.end(usageChunk(900, 4000) + DONE)
      }),
    ],
    [{ name: 'm', upstreams: ['v'] }],
    one,
  )
  try {
    assert.match(await openaiStream(g.url, 'm'), /^Partial<<.*abort/)
    await eventually(() => g.records.length === 1, 2000, 'usage record')
    assert.deepEqual(usageOf(g), [[900, 4000, false]])
    assert.equal(g.records[0]?.error?.code, 'llmproxy_upstream_error')
  } finally {
    await g.close()
  }
})

test('a tool call an Anthropic client cannot carry (arguments [1,2]): the usage after it is metered', async () => {
  const call = (args: string, first: boolean) =>
    chunk({
      choices: [
        {
          index: 0,
          delta: {
            tool_calls: [
              {
                index: 0,
                ...(first
                  ? { id: 'call_1', type: 'function', function: { name: 'f', arguments: args } }
                  : { function: { arguments: args } }),
              },
            ],
          },
          finish_reason: null,
        },
      ],
    })
  const g = await scripted(
    [
      upstream('o', 'openai', async (res) => {
        sse(res)
        res.write(role + call('[1,', true) + call('2]', false))
        await sleep(50)
        res.end(chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'tool_calls' }] }) + usageChunk(900, 700) + DONE)
      }),
    ],
    [{ name: 'm', upstreams: ['o'] }],
    one,
  )
  try {
    assert.match(await anthropicStream(g.url, 'm'), /<<.*cannot carry/)
    await eventually(() => g.records.length === 1, 2000, 'usage record')
    assert.deepEqual(usageOf(g), [[900, 700, false]])
  } finally {
    await g.close()
  }
})

test('an upstream that keeps its stream open after the failure: the stream ends within a second, its output estimated', async () => {
  const g = await scripted(
    [
      upstream('v', 'vllm', (res) => {
        sse(res)
        // No usage, no [DONE], no end: the gateway stops waiting for the usage report.
        res.write(role + reasoning('Let me think') + abort)
      }),
    ],
    [{ name: 'm', upstreams: ['v'] }],
    { ...one, timeouts: { idleMs: 30_000 } },
  )
  try {
    const started = performance.now()
    assert.match(await anthropicStream(g.url, 'm'), /<<.*abort/)
    const took = performance.now() - started
    assert.ok(took < 2000, `ended in ${took} ms`)
    await eventually(() => g.records.length === 1, 2000, 'usage record')
    assert.equal(g.records[0]?.estimated, true)
  } finally {
    await g.close()
  }
})

test('a line that never ends, to an Anthropic client: the in-band error once it passes MAX_EVENT_CHARS, not held without bound', async () => {
  const piece = 'x'.repeat(64 * 1024)
  const g = await scripted(
    [
      upstream('v', 'vllm', async (res) => {
        sse(res)
        res.write(`${role}${text('Hello')}data: {"choices":[{"index":0,"delta":{"content":"`)
        // Twice the bound, then the stream stays open: only the bound can end it before the idle timeout.
        for (let sent = 0; sent < 2 * MAX_EVENT_CHARS && !res.destroyed; sent += piece.length) {
          if (!res.write(piece)) await once(res, 'drain')
        }
      }),
    ],
    [{ name: 'm', upstreams: ['v'] }],
    { ...one, timeouts: { idleMs: 30_000 } },
  )
  try {
    assert.match(
      await anthropicStream(g.url, 'm'),
      new RegExp(`^Hello<<.*malformed data: stream event longer than ${MAX_EVENT_CHARS} characters`),
    )
  } finally {
    await g.close()
  }
})

test('a client that leaves while the usage after an in-band failure is read: the record keeps the failure, the upstream counts as failed', async () => {
  const g = await scripted(
    [
      upstream('v', 'vllm', (res) => {
        sse(res)
        // The abort, then its response kept open: the gateway reads on for the usage (1 s), the client leaves meanwhile.
        res.write(role + text('Partial') + abort)
      }),
    ],
    [{ name: 'm', upstreams: ['v'] }],
    { ...one, timeouts: { idleMs: 30_000 } },
  )
  try {
    const leave = new AbortController()
    const res = await fetch(`${g.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', stream: true, messages: question }),
      signal: leave.signal,
    })
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    let received = ''
    while (!received.includes('Partial')) received += Buffer.from((await reader.read()).value ?? []).toString()
    await sleep(200)
    leave.abort()
    await eventually(() => g.records.length === 1 && g.attempts.length === 1, 2000, 'usage record and attempt')
    const record = g.records[0]
    assert.deepEqual([record?.clientAborted, record?.error?.code], [true, 'llmproxy_upstream_error'])
    assert.equal(g.attempts[0]?.result, 'error', 'the upstream failed before the client left')
  } finally {
    await g.close()
  }
})

test('what an upstream sends after its failure is read for its usage alone: no token of the estimate, [DONE] neither', async () => {
  const g = await scripted(
    [
      upstream('v', 'vllm', async (res) => {
        sse(res)
        // No usage reported (no include_usage): the output is estimated, one token per event of the answer.
        res.write(role + text('Hello') + abort)
        await sleep(50)
        res.end(text('x') + text('x') + text('x') + DONE)
      }),
    ],
    [{ name: 'm', upstreams: ['v'] }],
    one,
  )
  try {
    assert.match(await openaiStream(g.url, 'm'), /^Hello<<.*abort/)
    await eventually(() => g.records.length === 1, 2000, 'usage record')
    assert.deepEqual([g.records[0]?.completionTokens, g.records[0]?.estimated], [2, true])
  } finally {
    await g.close()
  }
})

test('a Gemini stream cut after a chunk that counted the prompt only: the output is estimated, never 0 marked exact', async () => {
  const g = await scripted(
    [
      upstream('g', 'gemini', async (res) => {
        sse(res)
        res.write(
          gemini({
            candidates: [{ content: { role: 'model', parts: [{ text: 'Partial' }] }, index: 0 }],
            usageMetadata: { promptTokenCount: 1000, totalTokenCount: 1000 },
          }),
        )
        await sleep(20)
        res.socket?.destroy()
      }),
    ],
    [{ name: 'm', upstreams: ['g'] }],
    one,
  )
  try {
    assert.match(await openaiStream(g.url, 'm'), /^Partial<</)
    await eventually(() => g.records.length === 1, 2000, 'usage record')
    const record = g.records[0]
    assert.equal(record?.promptTokens, 1000)
    assert.ok((record?.completionTokens ?? 0) > 0, `completion tokens ${record?.completionTokens}`)
    assert.equal(record?.estimated, true)
  } finally {
    await g.close()
  }
})

test('an abort after text, continued on another upstream: each part bills what its upstream reported, once', async () => {
  const a = upstream('a', 'vllm', async (res) => {
    sse(res)
    res.write(role + text('Hello') + abort)
    await sleep(20)
    res.end(usageChunk(10, 2) + DONE)
  })
  const b = upstream('b', 'vllm', (res) => {
    sse(res)
    res.end(role + text(' world') + chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] }) + usageChunk(12, 3) + DONE)
  })
  const g = await scripted([a, b], [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered' }], two)
  try {
    assert.equal(await anthropicStream(g.url, 'm'), 'Hello world')
    await eventually(() => g.records.length === 1, 2000, 'usage record')
    const record = g.records[0]
    assert.deepEqual([record?.promptTokens, record?.completionTokens, record?.estimated], [22, 5, false])
    assert.deepEqual([record?.resumed, record?.attempts], [true, 2])
  } finally {
    await g.close()
  }
})

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
    // A plain retry, not a continuation; the aborted attempt's reported usage counts too.
    assert.deepEqual(
      g.records.map((r) => [r.status, r.attempts, r.resumed, r.promptTokens, r.completionTokens, r.estimated, r.error?.code]),
      [
        [200, 2, false, 12, 2, false, undefined],
        [200, 2, false, 12, 2, false, undefined],
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
    const record = g.records[0]
    // Both aborted attempts reported their usage: both count.
    assert.deepEqual([record?.status, record?.attempts, record?.promptTokens, record?.completionTokens], [502, 2, 14, 2])
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
