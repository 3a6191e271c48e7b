/** Every fault and error status the gateway's tests rely on, on each SSE format they convert between. */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { after, before, beforeEach, describe, test } from 'node:test'
import { createGunzip, gunzipSync } from 'node:zlib'
import { request } from 'undici'
import { eventually, expectedContent, type MockBehavior, type MockUpstream, type RecordedRequest, startMockUpstream } from '../src/index.js'
import { behaviorHeader, delay, parseSse, postTimed } from './helpers.js'

interface Format {
  name: string
  path: string
  body: Record<string, unknown>
  /** The answer text in an SSE text (malformed data skipped). */
  text(sse: string): string
  /** The stream carries its finish reason. */
  finished(sse: string): boolean
  /** The stream carries its terminator. */
  terminated(sse: string): boolean
  /** The error object of an error body or an in-stream error event, as [status-like field, the type or status]. */
  errorKind(payload: Record<string, unknown>): string
  /** The in-stream error event, if any. */
  streamError(sse: string): Record<string, unknown> | null
}

function json(data: string): Record<string, unknown> | null {
  try {
    return JSON.parse(data) as Record<string, unknown>
  } catch {
    return null
  }
}

const messages = [{ role: 'user', content: 'break things' }]

const FORMATS: Format[] = [
  {
    name: 'OpenAI chat',
    path: '/v1/chat/completions',
    body: { model: 'm', messages, stream: true },
    text: (sse) =>
      parseSse(sse)
        .map((e) => (json(e.data) as { choices?: { delta?: { content?: string } }[] } | null)?.choices?.[0]?.delta?.content ?? '')
        .join(''),
    finished: (sse) => /"finish_reason":"[a-z_]+"/.test(sse),
    terminated: (sse) => parseSse(sse).some((e) => e.data === '[DONE]'),
    errorKind: (payload) => String((payload.error as { type: string }).type),
    streamError: (sse) =>
      parseSse(sse)
        .map((e) => json(e.data))
        .find((d) => d !== null && 'error' in d) ?? null,
  },
  {
    name: 'Anthropic',
    path: '/v1/messages',
    body: { model: 'claude', max_tokens: 100, messages, stream: true },
    text: (sse) =>
      parseSse(sse)
        .filter((e) => e.event === 'content_block_delta')
        .map((e) => (json(e.data) as { delta?: { text?: string } } | null)?.delta?.text ?? '')
        .join(''),
    finished: (sse) => parseSse(sse).some((e) => e.event === 'message_delta'),
    terminated: (sse) => parseSse(sse).some((e) => e.event === 'message_stop'),
    errorKind: (payload) => String((payload.error as { type: string }).type),
    streamError: (sse) => {
      const event = parseSse(sse).find((e) => e.event === 'error')
      return event === undefined ? null : json(event.data)
    },
  },
  {
    name: 'Gemini',
    path: '/v1beta/models/gemini-x:streamGenerateContent?alt=sse',
    body: { contents: [{ role: 'user', parts: [{ text: 'break things' }] }] },
    text: (sse) =>
      parseSse(sse)
        .map(
          (e) =>
            (json(e.data) as { candidates?: { content: { parts: { text?: string }[] } }[] } | null)?.candidates?.[0]?.content.parts[0]
              ?.text ?? '',
        )
        .join(''),
    // Gemini's terminator is the event with the finish reason.
    finished: (sse) => sse.includes('"finishReason"'),
    terminated: (sse) => sse.includes('"finishReason"'),
    errorKind: (payload) => String((payload.error as { status: string }).status),
    streamError: (sse) =>
      parseSse(sse)
        .map((e) => json(e.data))
        .find((d) => d !== null && 'error' in d) ?? null,
  },
]

async function send(mock: MockUpstream, format: Format, behavior: MockBehavior) {
  return request(`${mock.url}${format.path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-mock-behavior': behaviorHeader(behavior) },
    body: JSON.stringify(format.body),
  })
}

/** Reads a streamed answer until it ends or fails. */
async function stream(
  mock: MockUpstream,
  format: Format,
  behavior: MockBehavior,
): Promise<{ status: number; sse: string; error: Error | null }> {
  const res = await send(mock, format, behavior)
  let sse = ''
  try {
    for await (const chunk of res.body) sse += String(chunk)
  } catch (err) {
    return { status: res.statusCode, sse, error: err as Error }
  }
  return { status: res.statusCode, sse, error: null }
}

/** Reads until `until` holds, then checks whether more comes within 250 ms ('more', 'ended' or 'quiet'). */
async function readUntilQuiet(body: AsyncIterable<Buffer>, until: (text: string) => boolean) {
  const iterator = body[Symbol.asyncIterator]()
  let text = ''
  while (!until(text)) {
    const next = await iterator.next()
    assert.equal(next.done, false, `the stream ended early: ${text}`)
    text += String(next.value)
  }
  const more = await Promise.race([iterator.next().then((r) => (r.done ? 'ended' : 'more')), delay(250).then(() => 'quiet')])
  return { text, more }
}

describe('faults and statuses on every format', () => {
  let mock: MockUpstream
  before(async () => {
    mock = await startMockUpstream()
  })
  beforeEach(() => mock.reset())
  after(() => mock.close())

  for (const format of FORMATS) {
    describe(format.name, () => {
      test('the plain stream: full text, finish reason, terminator', async () => {
        const { status, sse, error } = await stream(mock, format, {})
        assert.equal(status, 200)
        assert.equal(error, null)
        assert.equal(format.text(sse), expectedContent(8))
        assert.ok(format.finished(sse) && format.terminated(sse))
      })

      test('persistent status 429, with and without retryAfter, in the format error shape', async () => {
        for (let i = 0; i < 2; i++) {
          const res = await send(mock, format, { status: 429, retryAfter: 5 })
          assert.equal(res.statusCode, 429)
          assert.equal(res.headers['retry-after'], '5')
          const kind = format.errorKind((await res.body.json()) as Record<string, unknown>)
          assert.equal(kind, format.name === 'Gemini' ? 'RESOURCE_EXHAUSTED' : 'rate_limit_error')
        }
        const plain = await send(mock, format, { status: 429 })
        assert.equal(plain.statusCode, 429)
        assert.equal(plain.headers['retry-after'], undefined)
        await plain.body.dump()
      })

      test('status 500 once through program(), then a normal answer', async () => {
        let calls = 0
        mock.program(() => (calls++ === 0 ? { status: 500 } : undefined))
        const first = await stream(mock, format, {})
        assert.equal(first.status, 500)
        const kind = format.errorKind(JSON.parse(first.sse))
        assert.equal(kind, { 'OpenAI chat': 'server_error', Anthropic: 'api_error', Gemini: 'INTERNAL' }[format.name])
        const second = await stream(mock, format, {})
        assert.equal(second.status, 200)
        assert.equal(format.text(second.sse), expectedContent(8))
      })

      test('ttftMs: the headers at once, the first byte of the body after ttftMs', async () => {
        const res = await postTimed(mock, format.path, { ...format.body, mock: { ttftMs: 200, tokens: 2 } })
        assert.equal(res.status, 200)
        const firstBody = res.chunks[0]?.at ?? 0
        assert.ok(firstBody - res.headersAt >= 200 * 0.8, `the body began ${firstBody - res.headersAt} ms after the headers`)
        assert.equal(format.text(res.text), expectedContent(2))
      })

      test('cut after K tokens: exactly K tokens, no terminator, a reset', async () => {
        const { sse, error } = await stream(mock, format, { fault: 'cut', faultAfter: 3, gapMs: 5 })
        assert.ok(error, 'the stream ends with an error')
        assert.equal(format.text(sse), expectedContent(3))
        assert.equal(format.terminated(sse), false)
      })

      test('stall after K tokens: K tokens, then silence until the client leaves (an abort)', async () => {
        const aborted = once(mock, 'abort') as Promise<[RecordedRequest]>
        const res = await send(mock, format, { fault: 'stall', faultAfter: 2 })
        const { text, more } = await readUntilQuiet(res.body, (t) => format.text(t) === expectedContent(2))
        assert.equal(more, 'quiet')
        assert.equal(format.terminated(text), false)
        res.body.destroy()
        const [rec] = await aborted
        assert.equal(rec.aborted, true)
      })

      test('malformed after K tokens: one broken data line, then the stream goes on to its terminator', async () => {
        const { sse, error } = await stream(mock, format, { fault: 'malformed', faultAfter: 2 })
        assert.equal(error, null)
        const events = parseSse(sse)
        const bad = events.findIndex((e) => e.data === '{not json')
        assert.ok(bad > 0)
        assert.equal(format.text(sse.slice(0, sse.indexOf('{not json'))), expectedContent(2))
        assert.equal(format.text(sse), expectedContent(8))
        assert.ok(format.terminated(sse))
      })

      if (format.name !== 'Gemini') {
        test('no-done: the finish reason, then a clean end without the terminator', async () => {
          const { sse, error } = await stream(mock, format, { fault: 'no-done' })
          assert.equal(error, null)
          assert.equal(format.text(sse), expectedContent(8))
          assert.ok(format.finished(sse))
          assert.equal(format.terminated(sse), false)
        })
      } else {
        test('no-done: every token, then a clean end without the finishReason event', async () => {
          const { sse, error } = await stream(mock, format, { fault: 'no-done' })
          assert.equal(error, null)
          assert.equal(format.text(sse), expectedContent(8))
          assert.equal(format.terminated(sse), false)
        })
      }

      test('hold-open: the whole answer with its terminator, then the response stays open until the client leaves', async () => {
        const closed = once(mock, 'close') as Promise<[RecordedRequest]>
        const res = await send(mock, format, { fault: 'hold-open' })
        const { text, more } = await readUntilQuiet(res.body, (t) => format.terminated(t) && format.text(t) === expectedContent(8))
        assert.equal(more, 'quiet', 'the response did not end')
        res.body.destroy()
        const [rec] = await closed
        assert.equal(rec.aborted, false, 'the answer was complete')
        assert.ok(format.finished(text))
      })

      test('error-event after K tokens: the format in-stream error, then a clean end without terminator', async () => {
        const { sse, error } = await stream(mock, format, { fault: 'error-event', faultAfter: 2 })
        assert.equal(error, null)
        assert.equal(format.text(sse), expectedContent(2))
        assert.equal(format.terminated(sse), false)
        const payload = format.streamError(sse)
        assert.ok(payload, 'an error event')
        assert.equal(
          format.errorKind(payload),
          { 'OpenAI chat': 'server_error', Anthropic: 'overloaded_error', Gemini: 'UNAVAILABLE' }[format.name],
        )
      })

      test('contentEncoding gzip: compressed whatever the request accepts, each event flushed as it is written', async () => {
        const whole = await send(mock, format, { contentEncoding: 'gzip' })
        assert.equal(whole.headers['content-encoding'], 'gzip')
        const plain = gunzipSync(Buffer.from(await whole.body.arrayBuffer())).toString()
        assert.equal(format.text(plain), expectedContent(8))
        assert.ok(format.terminated(plain))

        // A stream that stalls after 2 tokens: the 2 tokens decompress while the response is still open.
        const res = await send(mock, format, { contentEncoding: 'gzip', fault: 'stall', faultAfter: 2 })
        const gunzip = createGunzip()
        let decoded = ''
        gunzip.on('data', (chunk: Buffer) => {
          decoded += String(chunk)
        })
        let ended = false
        res.body.once('end', () => {
          ended = true
        })
        res.body.pipe(gunzip)
        await eventually(() => format.text(decoded) === expectedContent(2), 2000, 'two tokens decompressed')
        await delay(250)
        assert.equal(format.text(decoded), expectedContent(2))
        assert.equal(ended, false, 'the response is still open')
        res.body.destroy()
        gunzip.destroy()
      })

      test('lineEnding crlf and cr: the same events with other line endings', async () => {
        for (const [lineEnding, other] of [
          ['crlf', /[^\r]\n/],
          ['cr', /\n/],
        ] as const) {
          const { sse } = await stream(mock, format, { lineEnding })
          assert.equal(other.test(sse), false, `${lineEnding}: no other line ending`)
          assert.ok(sse.includes(lineEnding === 'crlf' ? '\r\n\r\n' : '\r\r'))
          assert.equal(format.text(sse), expectedContent(8))
          assert.ok(format.terminated(sse))
        }
      })
    })
  }

  test('non-streamed: gzip, and error-event as the HTTP error it would have been', async () => {
    const res = await request(`${mock.url}/v1/messages`, {
      method: 'POST',
      headers: { 'accept-encoding': 'identity', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 'c', max_tokens: 10, messages, mock: { contentEncoding: 'gzip', tokens: 2 } }),
    })
    assert.equal(res.headers['content-encoding'], 'gzip')
    const body = JSON.parse(gunzipSync(Buffer.from(await res.body.arrayBuffer())).toString())
    assert.equal(body.content[0].text, expectedContent(2))

    const failed = await request(`${mock.url}/v1/messages`, {
      method: 'POST',
      headers: { 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 'c', max_tokens: 10, messages, mock: { fault: 'error-event' } }),
    })
    assert.equal(failed.statusCode, 529)
    assert.equal(((await failed.body.json()) as { error: { type: string } }).error.type, 'overloaded_error')
  })

  test('error-event on the other streamed formats: each one in-stream error, then the end', async () => {
    const fault = { fault: 'error-event', faultAfter: 1 }
    const completions = parseSse((await postTimed(mock, '/v1/completions', { prompt: 'x', stream: true, mock: fault })).text)
    assert.equal(JSON.parse(completions.at(-1)?.data ?? '{}').error.type, 'server_error')
    const responses = parseSse((await postTimed(mock, '/v1/responses', { input: 'x', stream: true, mock: fault })).text)
    assert.equal(responses.at(-1)?.event, 'error')
    assert.equal(JSON.parse(responses.at(-1)?.data ?? '{}').code, 'server_error')
    const tgi = parseSse((await postTimed(mock, '/generate_stream', { inputs: 'x', mock: fault })).text)
    assert.deepEqual(JSON.parse(tgi.at(-1)?.data ?? '{}'), { error: 'Model is overloaded', error_type: 'overloaded' })
    const array = JSON.parse(
      (await postTimed(mock, '/v1beta/models/g:streamGenerateContent', { contents: [{ parts: [{ text: 'x' }] }], mock: fault })).text,
    ) as Record<string, { status?: string }>[]
    assert.equal(array.length, 2)
    assert.equal(array[1]?.error?.status, 'UNAVAILABLE')
  })
})
