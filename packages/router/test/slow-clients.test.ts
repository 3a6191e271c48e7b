// Clients that read slowly or not at all, over real sockets: a slow reader gets its whole answer however long that
// takes (its pauses are not the upstream's silence); one that reads nothing is let go after clientStallMs, and its
// upstream request with it, instead of holding both ends open for ever.
import assert from 'node:assert/strict'
import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import { connect, type Socket } from 'node:net'
import { after, before, beforeEach, test } from 'node:test'
import type { UsageRecord } from '@llmproxy/core'
import { eventually } from './helpers.js'
import { type Scripted, scripted, sleep, upstream } from './scripted.js'

const CLIENT_STALL_MS = 500
const IDLE_MS = 400
const RESPONSE_MS = 1500

type Script = (req: IncomingMessage, res: ServerResponse) => void

let script: Script = (_req, res) => res.end()
let gateway: Scripted
let port: number
let records: UsageRecord[]

before(async () => {
  const answer = (res: ServerResponse, _body: string, req: IncomingMessage) => script(req, res)
  gateway = await scripted(
    [upstream('raw', 'openai', answer), upstream('raw-anthropic', 'anthropic', answer)],
    [
      { name: 'gpt-test', upstreams: ['raw'] },
      { name: 'claude-test', upstreams: ['raw-anthropic'] },
    ],
    { retry: { attempts: 1 }, timeouts: { idleMs: IDLE_MS, responseMs: RESPONSE_MS, clientStallMs: CLIENT_STALL_MS } },
  )
  port = Number(new URL(gateway.url).port)
  records = gateway.records
})

after(() => gateway.close())

beforeEach(() => {
  records.length = 0
  gateway.attempts.length = 0
})

const chatBody = (stream: boolean, model = 'gpt-test'): string =>
  JSON.stringify({ model, stream, messages: [{ role: 'user', content: 'Hi' }] })

/** An Anthropic answer holding `text` (converted whole for an OpenAI client). */
const anthropicAnswer = (text: string): string =>
  JSON.stringify({
    id: 'msg_1',
    type: 'message',
    role: 'assistant',
    model: 'claude',
    content: [{ type: 'text', text }],
    stop_reason: 'end_turn',
    stop_sequence: null,
    usage: { input_tokens: 3, output_tokens: 5 },
  })

/** A non-streamed chat request read with `pauseMs` after each chunk: how it ended, and what came. */
function readSlowly(body: string, pauseMs: number): Promise<{ status: number; bytes: number; complete: boolean; text: string }> {
  return new Promise((resolve) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, method: 'POST', path: '/v1/chat/completions', headers: { 'content-type': 'application/json' } },
      (res) => {
        const chunks: Buffer[] = []
        let bytes = 0
        const done = (complete: boolean) =>
          resolve({ status: res.statusCode ?? 0, bytes, complete, text: complete ? Buffer.concat(chunks).toString() : '' })
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length
          if (bytes < 64 * 1024) chunks.push(chunk)
          res.pause()
          setTimeout(() => res.resume(), pauseMs)
        })
        res.on('end', () => done(res.complete))
        res.on('aborted', () => done(false))
        res.on('error', () => done(false))
      },
    )
    req.on('error', () => resolve({ status: 0, bytes: -1, complete: false, text: '' }))
    req.end(body)
  })
}

/** When a pump's response closed, and when the gateway last took its bytes. */
interface Pumped {
  closedAt: number
  lastWriteAt: number
}

/** Writes `event` as fast as the gateway takes it, until the gateway goes; resolves when it did. */
function pumpUntilClosed(res: ServerResponse, event: string): Promise<Pumped> {
  let lastWriteAt = 0
  const pump = (): void => {
    lastWriteAt = performance.now()
    while (!res.destroyed && res.write(event)) {}
    if (!res.destroyed) res.once('drain', pump)
  }
  const closed = new Promise<Pumped>((resolve) => res.once('close', () => resolve({ closedAt: performance.now(), lastWriteAt })))
  pump()
  return closed
}

const longEvent = `data: ${JSON.stringify({
  id: 'c',
  object: 'chat.completion.chunk',
  created: 1,
  model: 'm',
  choices: [{ index: 0, delta: { content: 'x'.repeat(2000) }, finish_reason: null }],
})}\n\n`

/** A streamed request on a raw socket, paused (it reads nothing until resumed). */
function rawStreamRequest(): Socket {
  const socket = connect(port, '127.0.0.1')
  socket.pause()
  socket.on('error', () => {})
  const body = chatBody(true)
  socket.write(
    `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  )
  return socket
}

test('a client that reads nothing of a long stream is let go after clientStallMs, its upstream request aborted', async () => {
  let upstreamClosed: Promise<Pumped> | undefined
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    upstreamClosed = pumpUntilClosed(res, longEvent)
  }
  // A client that sends its request and never reads a byte of the answer.
  const socket = rawStreamRequest()
  await eventually(() => upstreamClosed !== undefined, 5000, 'the upstream request')
  const closedAt = await Promise.race([
    upstreamClosed?.then((pumped) => pumped.closedAt) as Promise<number>,
    new Promise<number>((resolve) => setTimeout(() => resolve(Number.NaN), 15_000)),
  ])
  socket.destroy()
  assert.ok(!Number.isNaN(closedAt), 'the upstream request was still open 15 s later')
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.equal(records[0]?.clientAborted, true)
  assert.equal(records[0]?.stream, true)
})

test('a stalled client is cut clientStallMs after it last took anything, not up to twice that', async () => {
  for (const readMs of [0, 300]) {
    let upstreamClosed: Promise<Pumped> | undefined
    script = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      upstreamClosed = pumpUntilClosed(res, longEvent)
    }
    const socket = rawStreamRequest()
    if (readMs > 0) {
      socket.on('data', () => {})
      socket.resume()
      await sleep(readMs)
      socket.pause()
    }
    await eventually(() => upstreamClosed !== undefined, 5000, 'the upstream request')
    // The gateway last took the upstream's bytes when the client last made room for them (the buffers between them
    // fill in a moment once it stops): from there, clientStallMs.
    const { closedAt, lastWriteAt } = await (upstreamClosed as Promise<Pumped>)
    const cutAfter = closedAt - lastWriteAt
    socket.destroy()
    // At most one check (an eighth of clientStallMs) late, and a little for the timers.
    assert.ok(
      cutAfter >= CLIENT_STALL_MS - 50 && cutAfter < CLIENT_STALL_MS * 1.125 + 100,
      `reading for ${readMs} ms: cut ${Math.round(cutAfter)} ms after it last took anything`,
    )
    await eventually(() => records.length === 1, 5000, 'the usage record')
    records.length = 0
  }
})

test('a slow reader of a large JSON answer gets all of it, past responseMs: its pauses are not the upstream going silent', async () => {
  const text = 'y'.repeat(12 * 1024 * 1024)
  const answer = JSON.stringify({
    id: 'c',
    object: 'chat.completion',
    created: 1,
    model: 'm',
    choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 },
  })
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(answer) })
    res.end(answer)
  }
  const started = performance.now()
  const received = await new Promise<{ status: number; bytes: number; complete: boolean }>((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, method: 'POST', path: '/v1/chat/completions', headers: { 'content-type': 'application/json' } },
      (res) => {
        let bytes = 0
        // Reads a chunk, then waits 10 ms: ~2.5 s for the whole answer, well past responseMs and idleMs.
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length
          res.pause()
          setTimeout(() => res.resume(), 10)
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, complete: res.complete }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(chatBody(false))
  })
  assert.equal(received.status, 200)
  assert.equal(received.bytes, Buffer.byteLength(answer))
  assert.ok(received.complete)
  assert.ok(performance.now() - started > RESPONSE_MS, 'the client read for longer than responseMs')
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.equal(records[0]?.error, undefined)
  assert.equal(records[0]?.completionTokens, 5)
})

test('a JSON body that stops half-way is cut after idleMs of silence, not at responseMs', async () => {
  const answer = JSON.stringify({ id: 'c', object: 'chat.completion', choices: [{ index: 0, message: { content: 'z'.repeat(1000) } }] })
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(answer) })
    res.write(answer.slice(0, 500))
  }
  const started = performance.now()
  const outcome = await new Promise<string>((resolve) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, method: 'POST', path: '/v1/chat/completions', headers: { 'content-type': 'application/json' } },
      (res) => {
        res.resume()
        res.on('end', () => resolve(res.complete ? 'complete' : 'incomplete'))
        res.on('error', () => resolve('cut'))
        res.on('aborted', () => resolve('cut'))
      },
    )
    req.on('error', () => resolve('cut'))
    req.end(chatBody(false))
  })
  const took = performance.now() - started
  assert.notEqual(outcome, 'complete')
  assert.ok(took >= IDLE_MS, `cut after ${Math.round(took)} ms`)
  await eventually(() => records.length === 1, 5000, 'the usage record')
  // The idle bound cut it, not the response deadline.
  assert.equal(records[0]?.error?.code, 'llmproxy_upstream_timeout')
  assert.equal(records[0]?.error?.message, `The upstream sent nothing for ${IDLE_MS} ms.`)
  // The upstream's failure, though the cut closed the client's connection (no client leaving).
  await eventually(() => gateway.attempts.length === 1, 2000, 'the attempt')
  assert.equal(gateway.attempts[0]?.result, 'timeout')
})

test('a steady reader of a 24 MB converted answer, written at once, is never taken for a stalled one', async () => {
  const answer = anthropicAnswer('y'.repeat(24 * 1024 * 1024))
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(answer) })
    res.end(answer)
  }
  // Reading with a 10 ms pause per chunk takes seconds, well past clientStallMs.
  const got = await readSlowly(chatBody(false, 'claude-test'), 10)
  assert.equal(got.status, 200)
  assert.ok(got.complete, `cut after ${got.bytes} bytes`)
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.equal(records[0]?.clientAborted, false)
})

test('a converted JSON answer that trickles in past responseMs is answered: idleMs bounds its silences', async () => {
  const answer = anthropicAnswer('steady')
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(answer) })
    const step = Math.ceil(answer.length / 10)
    let at = 0
    const next = (): void => {
      if (res.destroyed) return
      res.write(answer.slice(at, at + step))
      at += step
      if (at < answer.length) setTimeout(next, IDLE_MS / 2)
      else res.end()
    }
    next()
  }
  // Ten pieces 200 ms apart: 1.8 s in all, past responseMs (1.5 s), never silent for idleMs (0.4 s).
  const got = await readSlowly(chatBody(false, 'claude-test'), 0)
  assert.equal(got.status, 200, got.text)
  assert.ok(got.complete)
  assert.equal((JSON.parse(got.text) as { choices: { message: { content: string } }[] }).choices[0]?.message.content, 'steady')
})

test('an answer that failed after its headers has no time to first token (no TTFT sample of a failure)', async () => {
  script = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.flushHeaders()
  }
  const got = await readSlowly(chatBody(false), 0)
  assert.equal(got.status, 504)
  await eventually(() => records.length === 1, 5000, 'the usage record')
  assert.equal(records[0]?.error?.code, 'llmproxy_upstream_timeout')
  assert.equal(records[0]?.ttftMs, null)
})
