import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { after, before, test } from 'node:test'
import { expectedContent, promptTokensFor } from '@llmproxy/mock-upstream'
import { request } from 'undici'
import { chat, eventually, type Harness, parseSse, startHarness } from './helpers.js'
import { DONE, finish, role, scripted, sse, text, upstream, usageChunk } from './scripted.js'

let h: Harness
before(async () => {
  h = await startHarness()
})
after(() => h.close())

test('no buffering: each chunk reaches the client before the upstream sends the next', async () => {
  h.mock.reset()
  const res = await request(`${h.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: chat({ stream: true, mock: { tokens: 6, gapMs: 50 } }),
  })
  assert.equal(res.statusCode, 200)
  assert.match(String(res.headers['content-type']), /^text\/event-stream/)
  const contentArrivals: number[] = []
  let text = ''
  for await (const chunk of res.body) {
    const now = performance.now()
    const part = (chunk as Buffer).toString()
    text += part
    for (const event of parseSse(part)) {
      if (event.data.includes('"content":"') && !event.data.includes('"content":""')) contentArrivals.push(now)
    }
  }
  const sent = h.mock.requests[0]?.chunkTimes ?? []
  assert.equal(sent.length, 6)
  assert.equal(contentArrivals.length, 6)
  for (let k = 0; k + 1 < sent.length; k++) {
    assert.ok(
      (contentArrivals[k] as number) < (sent[k + 1] as number),
      `token ${k} arrived at ${contentArrivals[k]} but the upstream sent token ${k + 1} at ${sent[k + 1]}`,
    )
  }
  const content = parseSse(text)
    .filter((e) => e.data !== '[DONE]')
    .map((e) => (JSON.parse(e.data) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? '')
    .join('')
  assert.equal(content, expectedContent(6))
  assert.ok(text.endsWith('data: [DONE]\n\n'))
})

test('include_usage is added upstream and its chunk hidden from a client that did not ask', async () => {
  h.mock.reset()
  h.records.length = 0
  const body = chat({ stream: true })
  const res = await request(`${h.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
  const text = await res.body.text()
  const upstreamBody = h.mock.requests[0]?.body as { stream_options?: { include_usage?: boolean }; model: string }
  assert.equal(upstreamBody.stream_options?.include_usage, true)
  assert.equal(upstreamBody.model, 'mock-model')
  const events = parseSse(text)
  assert.ok(!events.some((e) => e.data.includes('"choices":[]')), 'the usage-only chunk must not reach the client')
  assert.equal(events.at(-1)?.data, '[DONE]')
  await eventually(() => h.records.length === 1, 2000, 'usage record')
  const record = h.records[0]
  assert.ok(record)
  assert.equal(record.promptTokens, promptTokensFor(upstreamBody))
  assert.equal(record.completionTokens, 5)
  assert.equal(record.totalTokens, record.promptTokens + 5)
  assert.equal(record.estimated, false)
  assert.equal(record.stream, true)
  assert.equal(record.model, 'gpt-test')
  assert.equal(record.upstreamModel, 'mock-model')
  assert.equal(record.upstream, 'mock')
  assert.equal(record.status, 200)
  assert.equal(record.attempts, 1)
  assert.equal(record.clientAborted, false)
  assert.equal(typeof record.ttftMs, 'number')
})

test('a client that asked for include_usage gets the usage chunk', async () => {
  h.records.length = 0
  const res = await request(`${h.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: chat({ stream: true, stream_options: { include_usage: true } }),
  })
  const events = parseSse(await res.body.text())
  const usage = events.find((e) => e.data.includes('"choices":[]'))
  assert.ok(usage, 'usage chunk expected')
  const reported = (JSON.parse(usage.data) as { usage: { completion_tokens: number } }).usage
  await eventually(() => h.records.length === 1)
  assert.equal(h.records[0]?.completionTokens, reported.completion_tokens)
})

test('non-streamed: the body passes through unchanged and usage is read from it', async () => {
  h.mock.reset()
  h.records.length = 0
  const res = await request(`${h.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: chat(),
  })
  assert.equal(res.statusCode, 200)
  const body = (await res.body.json()) as {
    choices: { message: { content: string } }[]
    usage: { prompt_tokens: number; completion_tokens: number }
  }
  assert.equal(body.choices[0]?.message.content, expectedContent(5))
  await eventually(() => h.records.length === 1)
  assert.equal(h.records[0]?.promptTokens, body.usage.prompt_tokens)
  assert.equal(h.records[0]?.completionTokens, body.usage.completion_tokens)
  assert.equal(h.records[0]?.stream, false)
})

test('completions, embeddings and responses are proxied and metered', async () => {
  for (const [path, extra] of [
    ['/v1/completions', { prompt: 'Say hi', stream: true }],
    ['/v1/completions', { prompt: 'Say hi' }],
    ['/v1/embeddings', { input: 'embed me' }],
    ['/v1/responses', { input: 'hi', stream: true }],
    ['/v1/responses', { input: 'hi' }],
  ] as const) {
    h.records.length = 0
    const res = await request(`${h.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'alias-test', ...extra }),
    })
    const text = await res.body.text()
    assert.equal(res.statusCode, 200, `${path}: ${text}`)
    await eventually(() => h.records.length === 1, 2000, `record for ${path}`)
    const record = h.records[0]
    assert.ok(record)
    assert.equal(record.estimated, false, `${path} should report usage`)
    assert.ok(record.promptTokens > 0, path)
    if (path !== '/v1/embeddings') assert.equal(record.completionTokens, 5, path)
    if ('stream' in extra && path === '/v1/completions') assert.ok(!text.includes('"choices":[]'), 'usage chunk stripped')
  }
})

test('GET /v1/models lists the models and their aliases', async () => {
  const res = await request(`${h.url}/v1/models`)
  const body = (await res.body.json()) as { data: { id: string }[] }
  assert.deepEqual(
    body.data.map((m) => m.id),
    ['gpt-test', 'alias-test'],
  )
})

/** A client in its own process (it reads while the gateway's process is held): prints when the first body byte came. */
const FIRST_BYTE_CLIENT = `
const http = require('node:http')
const req = http.request(process.argv[1], { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
  res.once('data', () => { process.stdout.write(String(Date.now())); process.exit(0) })
})
req.end(JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] }))
`

test('an answer ends before the work after it: a one-chunk answer reaches the client while an onUsage listener still holds the process', async (t) => {
  const one = upstream('one', 'openai', (res) => {
    sse(res)
    res.end(role + text('Hi') + finish() + usageChunk(3, 1) + DONE)
  })
  const s = await scripted([one], [{ name: 'm', upstreams: ['one'] }])
  t.after(() => s.close())
  let heldUntil = 0
  s.app.llm.addHook('onUsage', () => {
    // Synchronous work in the tick that ended the stream, as slow bookkeeping would be.
    const until = Date.now() + 400
    while (Date.now() < until) {}
    heldUntil = Date.now()
  })
  const client = spawn(process.execPath, ['-e', FIRST_BYTE_CLIENT, `${s.url}/v1/chat/completions`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  client.stdout.on('data', (data: Buffer) => {
    out += data.toString()
  })
  await new Promise((resolve) => client.once('exit', resolve))
  const firstByteAt = Number(out)
  assert.ok(heldUntil > 0, 'the listener ran')
  assert.ok(firstByteAt < heldUntil - 200, `first byte at ${firstByteAt}, the listener let go at ${heldUntil}`)
})

test('a client that does not read holds the upstream back: the gateway keeps a bounded amount of the stream', async (t) => {
  const event = text('x'.repeat(64 * 1024))
  const limit = 256 * 1024 * 1024
  let written = 0
  let held: () => void = () => {}
  const stalled = new Promise<void>((resolve) => {
    held = resolve
  })
  const one = upstream('one', 'openai', async (res) => {
    sse(res)
    res.write(role)
    // As fast as the gateway takes it; a write the socket does not take waits for 'drain', as a server would.
    while (written < limit) {
      written += event.length
      if (!res.write(event)) {
        held()
        await new Promise((resolve) => res.once('drain', resolve))
      }
    }
    held()
    res.end(finish() + DONE)
  })
  const s = await scripted([one], [{ name: 'm', upstreams: ['one'] }], { timeouts: { idleMs: 10_000 } })
  t.after(() => s.close())
  const res = await request(`${s.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
  })
  // The client reads nothing for a second: socket buffers fill on both sides, then the upstream must be paused
  // (`stalled`: its first write that had to wait, or its end).
  await stalled
  await new Promise((resolve) => setTimeout(resolve, 1000))
  const whileStalled = written
  if (whileStalled >= 64 * 1024 * 1024) {
    // (The client leaves: the gateway's close would wait for this stream.)
    res.body.destroy()
    assert.fail(`the upstream wrote ${whileStalled} bytes while the client read nothing`)
  }
  let received = 0
  let tail = ''
  for await (const chunk of res.body) {
    received += (chunk as Buffer).length
    tail = (tail + (chunk as Buffer).toString('latin1')).slice(-64)
  }
  assert.ok(tail.endsWith('data: [DONE]\n\n'))
  assert.ok(received >= limit, `the client got ${received} bytes of ${limit}`)
})
