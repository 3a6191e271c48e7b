// A streamed answer whose upstream opens its stream and then sends nothing for a long time (vLLM prefilling a long
// prompt, a reasoning model on chat completions) is not silent for the client: after `timeouts.heartbeatMs` its stream
// opens, with its own API's heartbeat until the first token, so that a proxy in front (nginx's 60 s idle timeout) does
// not cut it. Retries and failover go on behind it; a failure nothing recovers from ends it with an in-band error.
// Real sockets; the official SDKs read the answers (their fetch timed chunk by chunk).
import assert from 'node:assert/strict'
import type { ServerResponse } from 'node:http'
import { test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { GoogleGenAI } from '@google/genai'
import { errors } from '@llmproxy/core'
import OpenAI from 'openai'
import { DONE, finish, role, scripted, sleep, sse, text, upstream, usageChunk } from './scripted.js'
import { anthropicStream, openaiStream, type Seen, timedFetch } from './sdk-streams.js'

const HEARTBEAT_MS = 300
/** How long the upstream is silent after its headers: several heartbeats. */
const PREFILL_MS = 1500

/** The longest time the client waited for bytes, from its request to the chunk that brought `until`. */
function longestWait(seen: Seen[], until: string): number {
  let gap = 0
  for (let i = 1; i < seen.length; i++) {
    const chunk = seen[i] as Seen
    gap = Math.max(gap, chunk.at - (seen[i - 1] as Seen).at)
    if (chunk.bytes.includes(until)) return gap
  }
  throw new Error(`never received ${until}`)
}

/** vLLM on a long prompt: its headers at once, nothing for PREFILL_MS, then the answer. */
async function prefilling(res: ServerResponse): Promise<void> {
  sse(res)
  res.flushHeaders()
  await sleep(PREFILL_MS)
  res.end(role + text('Ready.') + finish() + usageChunk(50_000, 2) + DONE)
}

test('a long silence before the first token: each SSE client gets its heartbeat within the interval, then the whole answer', async () => {
  const g = await scripted([upstream('vllm', 'vllm', prefilling)], [{ name: 'm', upstreams: ['vllm'] }], {
    timeouts: { heartbeatMs: HEARTBEAT_MS },
  })
  try {
    const anthropic = async () => {
      const seen: Seen[] = []
      const client = new Anthropic({ baseURL: g.url, apiKey: 'k', maxRetries: 0, fetch: timedFetch(seen) })
      const message = await client.messages
        .stream({ model: 'm', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] })
        .finalMessage()
      const answer = message.content.map((block) => (block.type === 'text' ? block.text : `<${block.type}>`)).join('')
      return { answer, stop: message.stop_reason, seen, beat: 'event: ping\ndata: {"type":"ping"}\n\n', first: 'Ready.' }
    }
    const openai = async () => {
      const seen: Seen[] = []
      const client = new OpenAI({ baseURL: `${g.url}/v1`, apiKey: 'k', maxRetries: 0, fetch: timedFetch(seen) })
      let answer = ''
      let stop: string | null | undefined = null
      const stream = await client.chat.completions.create({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] })
      for await (const part of stream) {
        answer += part.choices[0]?.delta.content ?? ''
        stop ??= part.choices[0]?.finish_reason
      }
      return { answer, stop, seen, beat: ': keep-alive\n\n', first: 'Ready.' }
    }
    // (The Gemini SDK takes no fetch of its own: its answer is checked, the bytes are read by a plain fetch below.)
    const gemini = async () => {
      const client = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: g.url } })
      let answer = ''
      let stop: string | undefined
      for await (const part of await client.models.generateContentStream({ model: 'm', contents: 'hi' })) {
        answer += part.text ?? ''
        stop ??= part.candidates?.[0]?.finishReason
      }
      return { answer, stop }
    }
    const geminiRaw = async (query: string) => {
      const seen: Seen[] = []
      const res = await timedFetch(seen)(`${g.url}/v1beta/models/m:streamGenerateContent${query}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
      })
      const body = await res.text()
      const chunks = (
        query === ''
          ? JSON.parse(body)
          : body
              .split('\n\n')
              .filter((event) => event.startsWith('data: '))
              .map((event) => JSON.parse(event.slice(6)))
      ) as { candidates: { content: { parts: { text: string }[] }; finishReason?: string }[] }[]
      const answer = chunks.map((c) => c.candidates[0]?.content.parts.map((p) => p.text).join('')).join('')
      return {
        answer,
        stop: chunks.at(-1)?.candidates[0]?.finishReason,
        seen,
        // A Gemini JSON array (no SSE) is not held open: another upstream's array could not join it.
        beat: query === '' ? null : ': keep-alive\n\n',
        first: 'Ready.',
      }
    }
    const [sdk, ...results] = await Promise.all([gemini(), anthropic(), openai(), geminiRaw('?alt=sse'), geminiRaw('')])
    assert.deepEqual(
      [sdk, ...results].map((r) => [r.answer, r.stop]),
      [
        ['Ready.', 'STOP'],
        ['Ready.', 'end_turn'],
        ['Ready.', 'stop'],
        ['Ready.', 'STOP'],
        ['Ready.', 'STOP'],
      ],
    )
    for (const { seen, beat, first } of results) {
      const received = seen.map((s) => s.bytes).join('')
      const wait = longestWait(seen, first)
      if (beat === null) {
        assert.ok(received.startsWith('[') && wait >= PREFILL_MS - 100, `${Math.round(wait)} ms: ${received.slice(0, 80)}`)
        continue
      }
      assert.ok(received.startsWith(beat), `${results.findIndex((r) => r.seen === seen)}: ${JSON.stringify(received.slice(0, 80))}`)
      // Silent for PREFILL_MS without the heartbeat; with it, a beat every HEARTBEAT_MS from the request on.
      assert.ok(wait < 3 * HEARTBEAT_MS, `longest wait ${Math.round(wait)} ms: ${JSON.stringify(received.slice(0, 200))}`)
    }
    // The heartbeat is no token: the first token's time is the upstream's, and every answer is metered.
    await sleep(50)
    assert.equal(g.records.length, 5)
    for (const record of g.records) {
      assert.equal(record.status, 200)
      assert.deepEqual([record.promptTokens, record.completionTokens, record.estimated, record.error], [50_000, 2, false, undefined])
      assert.ok((record.ttftMs ?? 0) >= PREFILL_MS - 50, `ttft ${record.ttftMs}`)
    }
  } finally {
    await g.close()
  }
})

/** The first upstream: its headers, a silence, then its connection cut before any token. */
async function cutInPrefill(res: ServerResponse): Promise<void> {
  sse(res)
  res.flushHeaders()
  await sleep(PREFILL_MS / 2)
  res.destroy()
}

/** A streamed chat request by plain fetch: its status and the bytes the client received. */
async function chat(url: string, model: string): Promise<{ status: number; body: string }> {
  const res = await open(url, model)
  return { status: res.status, body: await res.text() }
}

/** A streamed chat request by plain fetch: the response, its body still to read. */
function open(url: string, model: string, signal?: AbortSignal): Promise<Response> {
  return fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    ...(signal === undefined ? {} : { signal }),
  })
}

test('held open, its upstream cut before the first token: the next upstream answers in the same stream, once', async () => {
  const g = await scripted(
    [
      upstream('cut', 'vllm', cutInPrefill),
      upstream('cut2', 'vllm', cutInPrefill),
      upstream('cut3', 'vllm', cutInPrefill),
      upstream('vllm', 'vllm', prefilling),
    ],
    [
      { name: 'm', upstreams: ['cut', 'vllm'] },
      { name: 'm2', upstreams: ['cut2', 'vllm'] },
      { name: 'm3', upstreams: ['cut3', 'vllm'] },
    ],
    { timeouts: { heartbeatMs: HEARTBEAT_MS } },
  )
  try {
    const [openai, anthropic, raw] = await Promise.all([openaiStream(g.url, 'm'), anthropicStream(g.url, 'm2'), chat(g.url, 'm3')])
    assert.deepEqual([openai, anthropic], ['Ready.', 'Ready.'])
    // The stream was open before the cut: one heartbeat stream, then one whole answer, one role chunk, one [DONE].
    assert.equal(raw.status, 200)
    assert.match(raw.body, /^(: keep-alive\n\n)+data: \{[^\n]*"role":"assistant"/)
    assert.equal(raw.body.split('"role"').length, 2)
    assert.ok(raw.body.endsWith('data: [DONE]\n\n') && raw.body.split('[DONE]').length === 2, raw.body)
    await sleep(50)
    assert.deepEqual(
      g.records.map((r) => [r.status, r.attempts, r.upstream, r.completionTokens, r.error]),
      [
        [200, 2, 'vllm', 2, undefined],
        [200, 2, 'vllm', 2, undefined],
        [200, 2, 'vllm', 2, undefined],
      ],
    )
  } finally {
    await g.close()
  }
})

test('held open, and nothing answers: the stall ends the stream in band, in each API; a Gemini JSON array is not held open', async () => {
  const g = await scripted(
    [
      upstream('silent', 'vllm', (res) => {
        sse(res)
        res.flushHeaders()
      }),
    ],
    [{ name: 'm', upstreams: ['silent'] }],
    { timeouts: { heartbeatMs: HEARTBEAT_MS, firstTokenMs: PREFILL_MS }, retry: { attempts: 1 } },
  )
  try {
    const [openai, anthropic, raw, array] = await Promise.all([
      openaiStream(g.url, 'm'),
      anthropicStream(g.url, 'm'),
      chat(g.url, 'm'),
      fetch(`${g.url}/v1beta/models/m:streamGenerateContent`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
      }).then(async (res) => ({ status: res.status, body: await res.text() })),
    ])
    assert.equal(openai, '<<The upstream stalled before the first token.>>')
    assert.match(anthropic, /^<<.*The upstream stalled before the first token\./)
    assert.equal(raw.status, 200)
    assert.ok(raw.body.startsWith(': keep-alive\n\n'), raw.body)
    assert.ok(!raw.body.includes('[DONE]'), raw.body)
    assert.match(raw.body, /\n\nevent: error\ndata: \{"error":\{[^\n]*"code":"llmproxy_upstream_timeout"[^\n]*\}\}\n\n$/)
    // A Gemini JSON array (no SSE) is not held open (another upstream's array could not join it): its error is a status.
    assert.equal(array.status, 504)
    assert.match(array.body, /^\{"error":\{"code":504,"message":"The upstream stalled before the first token\."/)
    await sleep(50)
    assert.deepEqual(g.records.map((r) => [r.status, r.error?.code]).sort(), [
      [200, 'llmproxy_upstream_timeout'],
      [200, 'llmproxy_upstream_timeout'],
      [200, 'llmproxy_upstream_timeout'],
      [504, 'llmproxy_upstream_timeout'],
    ])
  } finally {
    await g.close()
  }
})

test('held open, then an error the client would have had as its status: in band, with its message, retried as that status, never billed', async () => {
  const vllmError = (message: string, code = 400) => JSON.stringify({ error: { message, type: 'BadRequestError', code } })
  /** A 200 stream whose first event, after the hold, is vLLM's error. */
  const failingAfterHold = (name: string, error: string) =>
    upstream(name, 'vllm', async (res) => {
      sse(res)
      res.flushHeaders()
      await sleep(PREFILL_MS / 2)
      res.end(`data: ${error}\n\n`)
    })
  const refusing = failingAfterHold('refusing', vllmError('The model is out of KV cache.'))
  const overloaded = failingAfterHold('overloaded', vllmError('The server is overloaded.', 503))
  // A 400 answer, to the attempt after the cut.
  const invalid = upstream('invalid', 'vllm', (res) => {
    res.writeHead(400, { 'content-type': 'application/json' })
    res.end(vllmError('"tools": unsupported JSON schema keyword.'))
  })
  const fallback = upstream('fallback', 'vllm', prefilling)
  const g = await scripted(
    [refusing, overloaded, upstream('cut', 'vllm', cutInPrefill), upstream('cut2', 'vllm', cutInPrefill), invalid, fallback],
    [
      { name: 'refused', upstreams: ['refusing'], fallbacks: ['spare'] },
      { name: 'busy', upstreams: ['overloaded'] },
      { name: 'invalid', upstreams: ['cut', 'invalid'], fallbacks: ['spare'] },
      { name: 'invalid2', upstreams: ['cut2', 'invalid'], fallbacks: ['spare'] },
      { name: 'spare', upstreams: ['fallback'] },
    ],
    { timeouts: { heartbeatMs: HEARTBEAT_MS } },
  )
  try {
    const answers = await Promise.all([
      openaiStream(g.url, 'refused'),
      anthropicStream(g.url, 'refused'),
      openaiStream(g.url, 'invalid'),
      chat(g.url, 'invalid2'),
      openaiStream(g.url, 'busy'),
    ])
    assert.match(answers[0] as string, /^<<.*The model is out of KV cache\./)
    assert.match(answers[1] as string, /^<<.*The model is out of KV cache\./)
    assert.match(answers[2] as string, /^<<.*"tools": unsupported JSON schema keyword\./)
    const raw = answers[3] as { status: number; body: string }
    assert.equal(raw.status, 200)
    assert.match(raw.body, /^(: keep-alive\n\n)+event: error\ndata: \{"error":\{"message":"\\"tools\\": unsupported JSON schema keyword\."/)
    // A 503 is retried (retry.attempts: 3), then the last one is the client's, in band.
    assert.match(answers[4] as string, /^<<.*The server is overloaded\./)
    // A 400 once each: no retry, no fallback (it is the client's answer).
    assert.deepEqual([refusing.bodies.length, invalid.bodies.length, fallback.bodies.length, overloaded.bodies.length], [2, 2, 0, 3])
    await sleep(50)
    // No answer, nothing reported: no tokens (none estimated from the prompt), as for an error status.
    assert.deepEqual(g.records.map((r) => [r.model, r.status, r.attempts, r.error?.code, r.promptTokens, r.completionTokens]).sort(), [
      ['busy', 200, 3, 'llmproxy_upstream_error', 0, 0],
      ['invalid', 200, 2, 'llmproxy_upstream_error', 0, 0],
      ['invalid2', 200, 2, 'llmproxy_upstream_error', 0, 0],
      ['refused', 200, 1, 'llmproxy_upstream_error', 0, 0],
      ['refused', 200, 1, 'llmproxy_upstream_error', 0, 0],
    ])
    // Passive health and onAttempt count every 503, the last one (answered in band) too; a 400 is the upstream's answer.
    const reported = (name: string) => g.attempts.filter((a) => a.upstream === name).map((a) => [a.result, a.status])
    assert.deepEqual(reported('overloaded'), [
      ['status', 503],
      ['status', 503],
      ['status', 503],
    ])
    assert.deepEqual(reported('refusing'), [
      ['ok', 400],
      ['ok', 400],
    ])
  } finally {
    await g.close()
  }
})

test('heartbeatMs: 0 holds nothing open: the stall is a 504 the SDKs do not retry, as before the first token', async () => {
  const g = await scripted(
    [
      upstream('silent', 'vllm', (res) => {
        sse(res)
        res.flushHeaders()
      }),
    ],
    [{ name: 'm', upstreams: ['silent'] }],
    { timeouts: { heartbeatMs: 0, firstTokenMs: PREFILL_MS }, retry: { attempts: 1 } },
  )
  try {
    const res = await open(g.url, 'm')
    assert.deepEqual([res.status, res.headers.get('x-should-retry')], [504, 'false'])
    assert.match(await res.text(), /"code":"llmproxy_upstream_timeout"/)
  } finally {
    await g.close()
  }
})

test('a client that leaves while held open, a gateway that stops: the upstream request is closed at once, nothing is billed', async () => {
  let upstreamClosed = (_: unknown) => {}
  const closed = new Promise((resolve) => {
    upstreamClosed = resolve
  })
  const g = await scripted(
    [
      upstream('silent', 'vllm', (res) => {
        sse(res)
        res.flushHeaders()
        res.on('close', () => upstreamClosed(performance.now()))
      }),
    ],
    [{ name: 'm', upstreams: ['silent'] }],
    { timeouts: { heartbeatMs: HEARTBEAT_MS } },
  )
  try {
    const abort = new AbortController()
    const res = await open(g.url, 'm', abort.signal)
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    assert.equal(new TextDecoder().decode((await reader.read()).value), ': keep-alive\n\n')
    const left = performance.now()
    abort.abort()
    const closedAt = (await closed) as number
    assert.ok(closedAt - left < 1000, `upstream closed ${Math.round(closedAt - left)} ms after the client left`)
    // The gateway stops while another is held.
    const stopped = chat(g.url, 'm')
    await sleep(HEARTBEAT_MS * 2)
    assert.equal(g.app.llmRouter.abortInFlight(errors.shuttingDown()), 1)
    assert.match((await stopped).body, /^(: keep-alive\n\n)+event: error\ndata: \{"error":\{[^\n]*"code":"llmproxy_shutting_down"/)
    await sleep(50)
    // No answer began: no tokens, none estimated from the prompt (as without the hold).
    assert.deepEqual(
      g.records.map((r) => [r.status, r.clientAborted, r.promptTokens, r.estimated, r.error?.code]),
      [
        [200, true, 0, false, undefined],
        [200, false, 0, false, 'llmproxy_shutting_down'],
      ],
    )
  } finally {
    await g.close()
  }
})

test('headers that come after the heartbeat was due: the client is held open at once, not a heartbeat later', async () => {
  let headersAt = 0
  const g = await scripted(
    [
      upstream('late', 'vllm', async (res) => {
        // Past the heartbeat point, short of the next look.
        await sleep(HEARTBEAT_MS * 1.3)
        sse(res)
        res.flushHeaders()
        headersAt = performance.now()
        await sleep(PREFILL_MS)
        res.end(role + text('Ready.') + finish() + DONE)
      }),
    ],
    [{ name: 'm', upstreams: ['late'] }],
    { timeouts: { heartbeatMs: HEARTBEAT_MS } },
  )
  try {
    const res = await open(g.url, 'm')
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    assert.equal(new TextDecoder().decode((await reader.read()).value), ': keep-alive\n\n')
    // A heartbeat later would be HEARTBEAT_MS * 0.7 after the headers.
    const after = performance.now() - headersAt
    assert.ok(after < HEARTBEAT_MS * 0.5, `the first heartbeat ${Math.round(after)} ms after the upstream's headers`)
    await reader.cancel()
  } finally {
    await g.close()
  }
})
