import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect } from 'node:net'
import { performance } from 'node:perf_hooks'
import { after, before, beforeEach, describe, test } from 'node:test'
import { request } from 'undici'
import { eventually, expectedContent, type MockUpstream, type RecordedRequest, startMockUpstream } from '../src/index.js'
import { delay, post, postTimed, sseJson } from './helpers.js'

const messages = [{ role: 'user', content: 'time me' }]

describe('timing and abort detection', () => {
  let mock: MockUpstream
  before(async () => {
    mock = await startMockUpstream()
  })
  beforeEach(() => mock.reset())
  after(() => mock.close())

  test('token events are spaced by gapMs, and the client sees them spread out', async () => {
    const gap = 60
    const res = await postTimed(mock, '/v1/chat/completions', { messages, stream: true, mock: { gapMs: gap, tokens: 5 } })
    const times = mock.requests[0]?.chunkTimes ?? []
    assert.equal(times.length, 5)
    for (let i = 1; i < times.length; i++) {
      const spacing = (times[i] ?? 0) - (times[i - 1] ?? 0)
      assert.ok(spacing >= gap * 0.8, `spacing ${spacing} ms below ${gap} ms`)
      assert.ok(spacing < gap + 1000, `spacing ${spacing} ms far above ${gap} ms`)
    }
    const contentChunks = res.chunks.filter((c) => c.text.includes('"content":"') && !c.text.includes('"role"'))
    assert.ok(contentChunks.length >= 4, `client saw ${contentChunks.length} separate token chunks`)
    const first = contentChunks[0]?.at ?? 0
    const last = contentChunks.at(-1)?.at ?? 0
    assert.ok(last - first >= 3 * gap * 0.8, `client saw the tokens within ${last - first} ms`)
    const text = sseJson(res.text)
      .map((c) => (c.choices as { delta: { content?: string } }[])[0]?.delta.content ?? '')
      .join('')
    assert.equal(text, expectedContent(5))
  })

  test('streamed: headers at once, the first token after ttftMs', async () => {
    const ttft = 250
    const res = await postTimed(mock, '/v1/chat/completions', { messages, stream: true, mock: { ttftMs: ttft, tokens: 2 } })
    const rec = mock.requests[0]
    assert.ok(rec)
    const firstToken = rec.chunkTimes[0] ?? 0
    assert.ok(firstToken - rec.receivedAt >= ttft * 0.9, `first token after ${firstToken - rec.receivedAt} ms`)
    const firstBody = res.chunks[0]?.at ?? 0
    assert.ok(firstBody - res.headersAt >= ttft * 0.5, `headers only ${firstBody - res.headersAt} ms before the body`)
  })

  test('gapMs 0 writes all tokens at once', async () => {
    const res = await postTimed(mock, '/v1/chat/completions', { messages, stream: true, mock: { tokens: 50 } })
    const times = mock.requests[0]?.chunkTimes ?? []
    assert.equal(times.length, 50)
    assert.ok((times.at(-1) ?? 0) - (times[0] ?? 0) < 100)
    assert.equal(sseJson(res.text).length, 52)
  })

  test('non-streamed: the whole answer waits ttftMs + tokens * gapMs', async () => {
    const started = performance.now()
    const res = await post(mock, '/v1/chat/completions', { messages, mock: { ttftMs: 100, gapMs: 30, tokens: 5 } })
    const elapsed = performance.now() - started
    assert.equal(res.status, 200)
    assert.ok(elapsed >= (100 + 5 * 30) * 0.9, `answered after ${elapsed} ms`)
    assert.deepEqual(mock.requests[0]?.chunkTimes, [])
  })

  test('client abort mid-stream: abort event, aborted/closedAt set, timers cleared', async () => {
    const aborted = once(mock, 'abort') as Promise<[RecordedRequest]>
    const closed = once(mock, 'close') as Promise<[RecordedRequest]>
    const res = await request(`${mock.url}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ messages, stream: true, mock: { gapMs: 40, tokens: 1000 } }),
    })
    let seen = 0
    for await (const chunk of res.body) {
      seen += String(chunk).split('"delta":{"content":').length - 1
      if (seen >= 3) break // leaving the loop destroys the body, so undici closes the connection
    }
    const abortedAt = performance.now()
    const [rec] = await aborted
    const [closedRec] = await closed
    assert.equal(closedRec, rec)
    assert.equal(rec.aborted, true)
    assert.ok(rec.closedAt !== null && rec.closedAt - abortedAt < 1000, 'abort detected late')
    const written = rec.chunkTimes.length
    assert.ok(written >= 3 && written < 1000)
    await delay(200)
    assert.equal(rec.chunkTimes.length, written, 'the mock kept writing after the client left')
  })

  test('a reader that takes nothing holds the stream back; once it reads, the rest comes', async () => {
    const tokens = 200_000
    const body = JSON.stringify({ messages, stream: true, mock: { tokens } })
    const socket = connect(mock.port, '127.0.0.1')
    socket.pause()
    socket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    )
    try {
      await delay(500)
      // Events of ~150 bytes: what the socket's buffers hold (a few MB), not the whole answer (~30 MB).
      const written = mock.requests[0]?.chunkTimes.length ?? 0
      assert.ok(written > 0 && written < tokens / 2, `${written} of ${tokens} events written to a reader that took nothing`)
      let text = ''
      socket.setEncoding('latin1')
      socket.on('data', (chunk: string) => {
        text = (text + chunk).slice(-64)
      })
      socket.resume()
      await eventually(() => text.includes('data: [DONE]'), 10_000, 'the end of the answer')
      assert.equal(mock.requests[0]?.chunkTimes.length, tokens)
    } finally {
      socket.destroy()
    }
  })

  test('a completed request is not aborted, and gets a close event', async () => {
    const closed = once(mock, 'close') as Promise<[RecordedRequest]>
    let aborts = 0
    const onAbort = (): void => {
      aborts++
    }
    mock.on('abort', onAbort)
    await post(mock, '/v1/chat/completions', { messages, stream: true })
    const [rec] = await closed
    mock.off('abort', onAbort)
    assert.equal(rec.aborted, false)
    assert.notEqual(rec.closedAt, null)
    assert.equal(aborts, 0)
  })
})
