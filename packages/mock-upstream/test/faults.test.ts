import assert from 'node:assert/strict'
import { once } from 'node:events'
import { after, before, beforeEach, describe, test } from 'node:test'
import { request } from 'undici'
import { expectedContent, type MockUpstream, type RecordedRequest, startMockUpstream } from '../src/index.js'
import { delay, parseSse, post, sseJson } from './helpers.js'

const messages = [{ role: 'user', content: 'break things' }]
const TOKEN_EVENT = '"delta":{"content":'

function countTokens(text: string): number {
  return text.split(TOKEN_EVENT).length - 1
}

/** Streams a chat completion and collects what arrives until the body ends or errors. */
async function streamChat(mock: MockUpstream, behavior: object): Promise<{ text: string; error: Error | null }> {
  const res = await request(`${mock.url}/v1/chat/completions`, {
    method: 'POST',
    body: JSON.stringify({ messages, stream: true, mock: behavior }),
  })
  let text = ''
  try {
    for await (const chunk of res.body) text += String(chunk)
  } catch (err) {
    return { text, error: err as Error }
  }
  return { text, error: null }
}

describe('faults', () => {
  let mock: MockUpstream
  before(async () => {
    mock = await startMockUpstream()
  })
  beforeEach(() => mock.reset())
  after(() => mock.close())

  test('status: error status, OpenAI error body, Retry-After and errorCode', async () => {
    const res = await post(
      mock,
      '/v1/chat/completions',
      { messages },
      { 'x-mock-behavior': '{"status":429,"retryAfter":7,"errorCode":"too_fast"}' },
    )
    assert.equal(res.status, 429)
    assert.equal(res.headers['retry-after'], '7')
    const body = JSON.parse(res.text)
    assert.equal(body.error.type, 'rate_limit_error')
    assert.equal(body.error.code, 'too_fast')
    assert.equal(typeof body.error.message, 'string')

    const plain = await post(mock, '/v1/chat/completions', { messages, stream: true, mock: { status: 503 } })
    assert.equal(plain.status, 503)
    assert.equal(plain.headers['retry-after'], undefined)
    assert.equal(JSON.parse(plain.text).error.type, 'server_error')
    assert.equal(JSON.parse(plain.text).error.code, null)

    // The Anthropic route answers in Anthropic's shape.
    const anthropic = await post(mock, '/v1/messages', { messages, max_tokens: 10, stream: true, mock: { status: 503 } })
    assert.equal(anthropic.status, 503)
    assert.deepEqual(JSON.parse(anthropic.text), {
      type: 'error',
      error: { type: 'api_error', message: 'Mock error (status 503)' },
      request_id: `req_mock_${mock.requests[2]?.seq}`,
    })
  })

  test('reset-before-headers: the socket is reset after the body is read, no response', async () => {
    const closed = once(mock, 'close') as Promise<[RecordedRequest]>
    await assert.rejects(post(mock, '/v1/chat/completions', { messages, mock: { fault: 'reset-before-headers' } }))
    const [rec] = await closed
    assert.deepEqual((rec.body as { messages: unknown }).messages, messages)
    assert.equal(rec.aborted, false)
    assert.notEqual(rec.closedAt, null)
  })

  test('no-response: never answers; the client leaving is an abort', async () => {
    const aborted = once(mock, 'abort') as Promise<[RecordedRequest]>
    await assert.rejects(
      request(`${mock.url}/v1/chat/completions`, {
        method: 'POST',
        body: JSON.stringify({ messages, mock: { fault: 'no-response' } }),
        headersTimeout: 300,
      }),
      { code: 'UND_ERR_HEADERS_TIMEOUT' },
    )
    const [rec] = await aborted
    assert.equal(rec.aborted, true)
  })

  test('cut: the socket is reset after faultAfter tokens', async () => {
    const closed = once(mock, 'close') as Promise<[RecordedRequest]>
    const { text, error } = await streamChat(mock, { fault: 'cut', faultAfter: 3, gapMs: 30 })
    assert.ok(error, 'the stream should end with an error')
    assert.equal(countTokens(text), 3)
    assert.equal(text.includes('[DONE]'), false)
    const [rec] = await closed
    assert.equal(rec.chunkTimes.length, 3)
    assert.equal(rec.aborted, false)

    const burst = await streamChat(mock, { fault: 'cut', faultAfter: 2 })
    assert.ok(burst.error, 'the stream should end with an error (gapMs 0)')
    assert.equal(countTokens(burst.text), 2)
  })

  test('stall: stops writing after faultAfter tokens and keeps the socket open until the client leaves', async () => {
    const aborted = once(mock, 'abort') as Promise<[RecordedRequest]>
    const res = await request(`${mock.url}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ messages, stream: true, mock: { fault: 'stall', faultAfter: 2, gapMs: 10 } }),
    })
    const iterator = res.body[Symbol.asyncIterator]()
    let text = ''
    while (countTokens(text) < 2) {
      const next = await iterator.next()
      assert.equal(next.done, false)
      text += String(next.value)
    }
    const more = await Promise.race([iterator.next().then(() => 'more'), delay(250).then(() => 'stalled')])
    assert.equal(more, 'stalled')
    assert.equal(countTokens(text), 2)
    res.body.destroy()
    const [rec] = await aborted
    assert.equal(rec.chunkTimes.length, 2)
  })

  test('malformed: one broken event after faultAfter tokens, then the stream goes on', async () => {
    const { text, error } = await streamChat(mock, { fault: 'malformed', faultAfter: 2 })
    assert.equal(error, null)
    const events = parseSse(text)
    const bad = events.findIndex((e) => e.data === '{not json')
    assert.ok(bad > 0)
    assert.equal(
      countTokens(
        events
          .slice(0, bad)
          .map((e) => e.data)
          .join('\n'),
      ),
      2,
    )
    assert.equal(countTokens(text), 8)
    assert.equal(events.at(-1)?.data, '[DONE]')
  })

  test('malformed, non-streamed: a 200 with a body that is not JSON', async () => {
    const res = await post(mock, '/v1/chat/completions', { messages, mock: { fault: 'malformed' } })
    assert.equal(res.status, 200)
    assert.throws(() => JSON.parse(res.text))
  })

  test('cut, non-streamed: headers and half the body, then a reset', async () => {
    const res = await request(`${mock.url}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ messages, mock: { fault: 'cut' } }),
    })
    assert.equal(res.statusCode, 200)
    await assert.rejects(res.body.text())
  })

  test('no-done: every format ends normally without its terminator', async () => {
    const chat = await streamChat(mock, { fault: 'no-done' })
    assert.equal(chat.error, null)
    assert.equal(chat.text.includes('[DONE]'), false)
    assert.equal(countTokens(chat.text), 8)
    assert.ok(chat.text.includes('"finish_reason":"stop"'))

    const anthropic = parseSse(
      (await post(mock, '/v1/messages', { messages, max_tokens: 100, stream: true, mock: { fault: 'no-done' } })).text,
    )
    assert.equal(anthropic.at(-1)?.event, 'message_delta')
    assert.equal(
      anthropic.some((e) => e.event === 'message_stop'),
      false,
    )

    const responses = parseSse((await post(mock, '/v1/responses', { input: 'x', stream: true, mock: { fault: 'no-done' } })).text)
    assert.equal(
      responses.some((e) => e.event === 'response.completed'),
      false,
    )
    assert.equal(responses.at(-1)?.event, 'response.output_item.done')

    const tgi = sseJson((await post(mock, '/generate_stream', { inputs: 'x', mock: { fault: 'no-done' } })).text)
    assert.equal(tgi.length, 8)
    assert.ok(tgi.every((e) => e.details === null && e.generated_text === null))

    const contents = [{ role: 'user', parts: [{ text: 'x' }] }]
    const gemini = await post(mock, '/v1beta/models/g:streamGenerateContent', { contents, mock: { fault: 'no-done' } })
    assert.equal(gemini.status, 200)
    assert.equal(gemini.text.endsWith(']'), false)
  })

  test('faults apply to every streamed format (cut on Anthropic)', async () => {
    const res = await request(`${mock.url}/v1/messages`, {
      method: 'POST',
      headers: { 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ messages, max_tokens: 100, stream: true, mock: { fault: 'cut', faultAfter: 1, gapMs: 30 } }),
    })
    let text = ''
    await assert.rejects(async () => {
      for await (const chunk of res.body) text += String(chunk)
    })
    assert.equal(text.split('event: content_block_delta').length - 1, 1)
    assert.equal(text.includes(expectedContent(1)), true)
  })
})
