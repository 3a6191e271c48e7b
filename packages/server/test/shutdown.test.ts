// Graceful shutdown: new requests refused (503), in-flight streams finish within the grace period, then aborted.
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import type { UsageRecord } from '@llmproxy/core'
import { startMockUpstream } from '@llmproxy/mock-upstream'
import OpenAI from 'openai'
import { Agent, request } from 'undici'
import { parseConfig, startGateway } from '../src/index.js'
import { logSink } from './helpers.js'

/** A gateway with the given grace period; its log lines go to `logs` when given (none are written otherwise). */
async function start(graceMs: number, logs?: string[]) {
  const mock = await startMockUpstream({ defaults: { tokens: 10, gapMs: 60 } })
  const config = parseConfig(
    JSON.stringify({
      server: { host: '127.0.0.1', port: 0, shutdownGraceMs: graceMs, logLevel: logs === undefined ? 'silent' : 'info' },
      upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
      models: [{ name: 'm', upstreams: ['mock'] }],
      healthChecks: { enabled: false },
    }),
    'shutdown test',
  )
  const gateway = await startGateway(config, logs === undefined ? {} : { logDestination: logSink(logs) })
  return { mock, gateway }
}

const body = JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] })

test('an in-flight stream finishes during the grace period; a new request on a kept-alive connection gets a 503', async () => {
  const { mock, gateway } = await start(5000)
  const agent = new Agent({ connections: 2 })
  try {
    // Warm a second keep-alive connection so a request can still arrive after the listener closes.
    const warm = await request(`${gateway.url}/healthz`, { dispatcher: agent })
    await warm.body.dump()
    const inFlight = request(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      dispatcher: agent,
    })
    const res = await inFlight
    const text = res.body.text()
    await mock.waitForRequests(1)
    const stopping = gateway.shutdown('test')
    const late = await request(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      dispatcher: agent,
    }).catch((err: Error) => err)
    if (!(late instanceof Error)) {
      assert.equal(late.statusCode, 503)
      assert.equal(((await late.body.json()) as { error: { code: string } }).error.code, 'llmproxy_shutting_down')
    }
    const streamed = await text
    assert.ok(streamed.endsWith('data: [DONE]\n\n'), 'the in-flight stream completed')
    await stopping
  } finally {
    await agent.close()
    await mock.close()
  }
})

test('a request arriving on a busy connection during shutdown gets an OpenAI-shaped 503, logged with its code, and the connection closes', async () => {
  const logs: string[] = []
  const { mock, gateway } = await start(5000, logs)
  try {
    const socket = connect(Number(new URL(gateway.url).port), '127.0.0.1')
    let out = ''
    socket.on('data', (data: Buffer) => {
      out += data.toString()
    })
    const closed = new Promise((resolve) => socket.once('close', resolve))
    const post = `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
    socket.write(post)
    await mock.waitForRequests(1)
    const stopping = gateway.shutdown('test')
    // Pipelined behind the stream still in flight: it reaches the server while it is closing.
    socket.write(post)
    await closed
    await stopping
    const [first, second] = out.split('HTTP/1.1 ').slice(1)
    assert.ok(first?.startsWith('200') && first.includes('data: [DONE]'), 'the in-flight stream completed')
    assert.ok(second?.startsWith('503'), second)
    assert.match(second as string, /connection: close/i)
    assert.match(second as string, /x-request-id: \S+/i)
    const json = JSON.parse((second as string).slice((second as string).indexOf('\r\n\r\n') + 4)) as {
      error: { code: string; type: string }
    }
    assert.deepEqual(json.error.code, 'llmproxy_shutting_down')
    assert.equal(json.error.type, 'server_error')
    // Its request line names the refusal as every other refusal's does.
    const refused = logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'request' && l.status === 503)
    assert.deepEqual(
      { keyId: refused?.keyId, error: refused?.error, url: refused?.url },
      { keyId: null, error: 'llmproxy_shutting_down', url: '/v1/chat/completions' },
    )
  } finally {
    await mock.close()
  }
})

test("a request arriving during shutdown gets its 503 in its own API's shape: Anthropic's, Gemini's, OpenAI's", async () => {
  const { mock, gateway } = await start(5000)
  const agent = new Agent({ connections: 1 })
  try {
    // A stream in flight keeps the gateway draining (and listening) while the requests below arrive.
    const inFlight = await request(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      dispatcher: agent,
    })
    const streamed = inFlight.body.text()
    await mock.waitForRequests(1)
    const stopping = gateway.shutdown('test')
    const message = 'The gateway is shutting down; retry on another instance.'
    const anthropicBody = { type: 'error', error: { type: 'overloaded_error', message, code: 'llmproxy_shutting_down' } }
    const geminiBody = {
      error: {
        code: 503,
        message,
        status: 'UNAVAILABLE',
        details: [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'llmproxy_shutting_down', domain: 'llmproxy' }],
      },
    }
    const openaiBody = { error: { message, type: 'server_error', param: null, code: 'llmproxy_shutting_down' } }
    const cases: [string, string, Record<string, string>, unknown][] = [
      ['POST', '/v1/messages', { 'anthropic-version': '2023-06-01' }, anthropicBody],
      ['POST', '/v1beta/models/m:streamGenerateContent?alt=sse', {}, geminiBody],
      ['POST', '/v1/models/m:generateContent', {}, geminiBody],
      // Shared paths: the SDK's header tells.
      ['GET', '/v1/models', { 'anthropic-version': '2023-06-01' }, anthropicBody],
      ['GET', '/v1/models', { 'x-goog-api-key': 'k' }, geminiBody],
      ['POST', '/v1/chat/completions', { 'anthropic-version': '2023-06-01' }, openaiBody],
    ]
    for (const [method, path, headers, expected] of cases) {
      const res = await request(`${gateway.url}${path}`, {
        method,
        headers: { 'content-type': 'application/json', ...headers },
        ...(method === 'POST' ? { body: '{}' } : {}),
      })
      assert.equal(res.statusCode, 503, path)
      assert.equal(res.headers.connection, 'close', path)
      assert.deepEqual(await res.body.json(), expected, `${method} ${path} ${JSON.stringify(headers)}`)
    }
    assert.ok((await streamed).endsWith('data: [DONE]\n\n'), 'the in-flight stream completed')
    await stopping
  } finally {
    await agent.close()
    await mock.close()
  }
})

test('after the grace period an in-flight stream ends with llmproxy_shutting_down, which the SDK throws, and the gateway stops', async () => {
  const { mock, gateway } = await start(200)
  try {
    const records: UsageRecord[] = []
    gateway.app.llm.addHook('onUsage', (record) => records.push(record))
    const client = new OpenAI({ apiKey: 'unused', baseURL: `${gateway.url}/v1`, maxRetries: 0 })
    const stream = await client.chat.completions.create(
      { model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] },
      { headers: { 'x-mock-behavior': JSON.stringify({ tokens: 200, gapMs: 50 }) } },
    )
    let text = ''
    const read = (async () => {
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? ''
    })().then(
      () => null,
      (err: unknown) => err,
    )
    await mock.waitForRequests(1)
    const started = Date.now()
    await gateway.shutdown('test')
    assert.ok(Date.now() - started < 3000, 'shutdown did not wait for the whole stream')
    // Not a cut that looks like a complete answer, nor a bare reset: the error, in the client's API.
    const error = await read
    assert.ok(error instanceof OpenAI.APIError, String(error))
    assert.equal(error.code, 'llmproxy_shutting_down')
    assert.ok(text.length > 0, 'part of the answer came first')
    // Its record says the gateway cut it, not that the client left.
    assert.equal(records.length, 1)
    assert.equal(records[0]?.clientAborted, false)
    assert.equal(records[0]?.error?.code, 'llmproxy_shutting_down')
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.ok(mock.requests[0]?.aborted, 'the upstream request was released')
  } finally {
    await mock.close()
  }
})

test('with nothing in flight, the grace period is not reported over while closing waits for the usage spool', async () => {
  const mock = await startMockUpstream({ defaults: { tokens: 3 } })
  const spoolDir = mkdtempSync(join(tmpdir(), 'llmproxy-shutdown-spool-'))
  const lines: string[] = []
  try {
    const config = parseConfig(
      JSON.stringify({
        server: { host: '127.0.0.1', port: 0, shutdownGraceMs: 100, logLevel: 'info' },
        upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
        models: [{ name: 'm', upstreams: ['mock'] }],
        healthChecks: { enabled: false },
        // A webhook that never answers: closing waits shutdownFlushMs for the spool's delivery, past the grace.
        usage: { spoolDir, webhook: { url: 'http://127.0.0.1:9/usage', secret: 'shutdown-test-secret' }, shutdownFlushMs: 600 },
      }),
      'shutdown test',
    )
    const gateway = await startGateway(config, { logDestination: logSink(lines) })
    const res = await request(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    })
    await res.body.text()
    await gateway.shutdown('test')
    assert.ok(lines.some((line) => line.includes('"msg":"stopped"')))
    assert.ok(!lines.some((line) => line.includes('grace period over')), lines.join('\n'))
  } finally {
    await mock.close()
    rmSync(spoolDir, { recursive: true, force: true })
  }
})
