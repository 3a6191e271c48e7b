import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { type MockBehavior, rawExchange } from '@llmproxy/mock-upstream'
import OpenAI from 'openai'
import { request } from 'undici'
import { chat, eventually, type Harness, parseSse, startHarness } from './helpers.js'

async function post(h: Harness, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }) {
  const res = await request(`${h.url}/v1/chat/completions`, { method: 'POST', headers, body })
  const text = await res.body.text()
  return {
    status: res.statusCode,
    headers: res.headers,
    text,
    json: () => JSON.parse(text) as { error: { message: string; type: string; code: string } },
  }
}

describe('bad input gets an OpenAI-shaped error and the gateway keeps serving', () => {
  let h: Harness
  before(async () => {
    h = await startHarness({ router: { bodyLimit: 2048 } })
  })
  after(() => h.close())

  const cases: [string, string, Record<string, string> | undefined, number, string][] = [
    ['unknown model', JSON.stringify({ model: 'nope', messages: [] }), undefined, 404, 'model_not_found'],
    ['missing model', JSON.stringify({ messages: [] }), undefined, 400, 'llmproxy_missing_model'],
    ['empty model', JSON.stringify({ model: '' }), undefined, 400, 'llmproxy_missing_model'],
    ['malformed JSON', '{"model": "gpt-test",', undefined, 400, 'llmproxy_invalid_json'],
    ['empty body', '', undefined, 400, 'llmproxy_invalid_json'],
    ['array body', '[1,2]', undefined, 400, 'llmproxy_invalid_request'],
    ['stream not a boolean', chat({ stream: 'yes' }), undefined, 400, 'llmproxy_invalid_request'],
    ['wrong content type', chat(), { 'content-type': 'text/plain' }, 415, 'llmproxy_unsupported_media_type'],
    ['oversize body', chat({ pad: 'x'.repeat(4096) }), undefined, 413, 'llmproxy_body_too_large'],
  ]
  for (const [name, body, headers, status, code] of cases) {
    test(name, async () => {
      const res = await post(h, body, headers)
      assert.equal(res.status, status, res.text)
      const error = res.json().error
      assert.equal(error.code, code)
      assert.equal(typeof error.message, 'string')
      assert.equal(typeof error.type, 'string')
      assert.match(String(res.headers['content-type']), /application\/json/)
    })
  }

  test('valid JSON with a "__proto__" key is refused, saying why (not "not valid JSON")', async () => {
    for (const body of ['{"model":"gpt-test","__proto__":{"x":1}}', '{"model":"gpt-test","constructor":{"prototype":{}}}']) {
      const res = await post(h, body)
      assert.equal(res.status, 400, res.text)
      assert.equal(res.json().error.code, 'llmproxy_invalid_json')
      assert.match(res.json().error.message, /"__proto__" key/)
    }
  })

  test('none of them reached the upstream, and a good request still works', async () => {
    assert.equal(h.mock.requests.length, 0)
    const res = await post(h, chat())
    assert.equal(res.status, 200)
  })
})

describe('credentials and headers', () => {
  let h: Harness
  before(async () => {
    h = await startHarness({ apiKey: 'sk-upstream-secret' })
  })
  after(() => h.close())

  /** A chat request over a raw socket with these header lines, as written; the whole exchange as text. */
  const rawChat = (headers: string[]): Promise<string> => {
    const body = chat()
    const head = [
      'POST /v1/chat/completions HTTP/1.1',
      `host: ${new URL(h.url).host}`,
      'content-type: application/json',
      `content-length: ${Buffer.byteLength(body)}`,
      ...headers,
    ].join('\r\n')
    return rawExchange(h.url, `${head}\r\n\r\n${body}`)
  }

  test("the client's credential is never forwarded; the upstream's key is sent; hop-by-hop headers are dropped", async () => {
    // A raw socket: HTTP clients rewrite Connection themselves, and this test needs it as sent.
    const response = await rawChat([
      'authorization: Bearer sk-client-secret',
      'x-api-key: sk-client-secret',
      'api-key: sk-client-secret',
      'cookie: session=1',
      'connection: close, x-hop-secret',
      'x-hop-secret: must-not-pass',
      'keep-alive: timeout=5',
      'proxy-authorization: Basic Zm9vOmJhcg==',
      'te: trailers',
      'openai-organization: org-chosen-by-the-client',
      'openai-project: proj-chosen-by-the-client',
      'x-goog-user-project: chosen-by-the-client',
      'x-custom: kept',
    ])
    assert.match(response, /^HTTP\/1\.1 200/)
    const seen = h.mock.requests[0]?.headers ?? {}
    assert.equal(seen.authorization, 'Bearer sk-upstream-secret')
    const dropped = ['x-api-key', 'api-key', 'cookie', 'x-hop-secret', 'keep-alive', 'proxy-authorization', 'te']
    // Which organisation or project the operator's key bills is not the client's to choose.
    dropped.push('openai-organization', 'openai-project', 'x-goog-user-project')
    for (const name of dropped) {
      assert.equal(seen[name], undefined, `${name} reached the upstream`)
    }
    assert.ok(!JSON.stringify(seen).includes('sk-client-secret'))
    assert.equal(seen['x-custom'], 'kept')
    assert.equal(seen['accept-encoding'], 'identity', "the client's accept-encoding is not passed on; upstreams are asked for plain bytes")
  })

  test('a body sent with "Expect: 100-continue" (curl does above 1 MB) is answered, and the upstream is not blamed', async () => {
    h.mock.reset()
    for (let i = 0; i < 3; i++) {
      const response = await rawChat(['expect: 100-continue', 'connection: close'])
      assert.match(response, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /, response.slice(0, 300))
    }
    assert.equal(h.mock.requests.length, 3)
    assert.equal(h.mock.requests[0]?.headers.expect, undefined)
  })

  test('the request id is returned to the client and sent upstream', async () => {
    h.mock.reset()
    const res = await post(h, chat())
    const id = res.headers['x-request-id']
    assert.equal(typeof id, 'string')
    assert.equal(h.mock.requests[0]?.headers['x-request-id'], id)
  })
})

describe('timeouts and failures', () => {
  let h: Harness
  before(async () => {
    // (Short, yet with room for a loaded machine: the healthy requests here must not meet them.)
    h = await startHarness({ router: { timeouts: { connectMs: 1000, firstTokenMs: 500, idleMs: 300, responseMs: 300 } } })
  })
  after(() => h.close())

  test('no first token in time (stream) → 504, upstream released', async () => {
    h.mock.reset()
    const res = await post(h, chat({ stream: true, mock: { ttftMs: 2000 } }))
    assert.equal(res.status, 504)
    assert.equal(res.json().error.code, 'llmproxy_upstream_timeout')
    await eventually(() => h.mock.requests[0]?.aborted === true, 1000, 'upstream abort')
  })

  test('no answer in time (non-streamed) → 504', async () => {
    const res = await post(h, chat({ mock: { ttftMs: 2000 } }))
    assert.equal(res.status, 504)
  })

  test('a stall mid-stream ends with an in-band error event and no [DONE]', async () => {
    h.records.length = 0
    const res = await post(h, chat({ stream: true, mock: { fault: 'stall', faultAfter: 2 } }))
    assert.equal(res.status, 200)
    const events = parseSse(res.text)
    assert.equal(events.at(-1)?.event, 'error')
    assert.equal(JSON.parse(events.at(-1)?.data ?? '{}').error.code, 'llmproxy_upstream_timeout')
    assert.ok(!res.text.includes('[DONE]'))
    await eventually(() => h.records.length === 1)
    assert.equal(h.records[0]?.error?.code, 'llmproxy_upstream_timeout')
  })

  test('a long healthy stream is never cut by a timeout', async () => {
    const res = await post(h, chat({ stream: true, mock: { tokens: 8, gapMs: 60 } }))
    assert.equal(res.status, 200)
    assert.ok(res.text.endsWith('data: [DONE]\n\n'))
    assert.ok(!res.text.includes('event: error'))
  })

  test('a stream cut mid-way ends with an in-band error event and no [DONE]', async () => {
    h.records.length = 0
    const res = await post(h, chat({ stream: true, mock: { fault: 'cut', faultAfter: 2 } }))
    const events = parseSse(res.text)
    assert.equal(events.at(-1)?.event, 'error')
    assert.ok(!res.text.includes('[DONE]'))
    await eventually(() => h.records.length === 1)
    assert.equal(h.records[0]?.error?.code, 'llmproxy_upstream_error')
    assert.equal(h.records[0]?.estimated, true)
  })

  test('a stream that ends cleanly after its finish reason but without [DONE] is complete: the client gets [DONE]', async () => {
    h.records.length = 0
    const res = await post(h, chat({ stream: true, mock: { fault: 'no-done' } }))
    const events = parseSse(res.text)
    assert.ok(!events.some((e) => e.event === 'error'), res.text)
    assert.ok(res.text.endsWith('data: [DONE]\n\n'), 'the gateway finalises the answer for the client')
    assert.equal(events.filter((e) => e.data === '[DONE]').length, 1)
    await eventually(() => h.records.length === 1)
    assert.equal(h.records[0]?.error, undefined)
    assert.equal(h.records[0]?.completionTokens, 5)
  })

  test('an upstream 4xx is passed through unchanged', async () => {
    const res = await post(h, chat({ mock: { status: 400, errorCode: 'context_length_exceeded' } }))
    assert.equal(res.status, 400)
    assert.equal(res.json().error.code, 'context_length_exceeded')
  })

  test('connection reset before headers → 502 OpenAI error', async () => {
    const res = await post(h, chat({ mock: { fault: 'reset-before-headers' } }))
    assert.equal(res.status, 502)
    assert.equal(res.json().error.type, 'upstream_error')
  })

  test('the gateway stays healthy afterwards', async () => {
    const res = await post(h, chat({ stream: true }))
    assert.equal(res.status, 200)
    assert.ok(res.text.endsWith('data: [DONE]\n\n'))
  })
})

describe("the gateway's own timeout: the SDKs do not send the prompt again on top of its retries", () => {
  let h: Harness
  before(async () => {
    h = await startHarness({ router: { timeouts: { firstTokenMs: 300, responseMs: 300 }, retry: { attempts: 2 } } })
  })
  after(() => h.close())

  // The official clients with their default retries (2 more on a 5xx unless `x-should-retry: false`).
  const openai = () => new OpenAI({ baseURL: `${h.url}/v1`, apiKey: 'k' })
  const anthropic = () => new Anthropic({ baseURL: h.url, apiKey: 'k' })
  const cases: [string, () => Promise<unknown>][] = [
    [
      'openai, streamed',
      () => openai().chat.completions.create({ model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    ],
    ['openai, not streamed', () => openai().chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'hi' }] })],
    [
      'anthropic, streamed',
      () => anthropic().messages.create({ model: 'gpt-test', max_tokens: 10, stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    ],
    [
      'anthropic, not streamed',
      () => anthropic().messages.create({ model: 'gpt-test', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }),
    ],
  ]
  // The upstream's headers came and no first token (a stall), or no headers at all (a timeout).
  const upstreams: [string, MockBehavior][] = [
    ['headers, then nothing', { ttftMs: 60_000 }],
    ['no answer', { fault: 'no-response' }],
  ]
  for (const [upstream, behavior] of upstreams) {
    for (const [client, call] of cases) {
      test(`${upstream}, ${client}: a 504 with x-should-retry: false; one request to the gateway, its two attempts upstream`, async () => {
        h.mock.reset()
        h.mock.setDefaults({ tokens: 5, ...behavior })
        h.records.length = 0
        const err = await call().then(
          () => assert.fail('answered'),
          (e: unknown) => e as { status: number; headers: Headers },
        )
        assert.equal(h.records.length, 1, 'requests to the gateway')
        assert.equal(h.mock.requests.filter((r) => r.path === '/v1/chat/completions').length, 2, 'attempts upstream')
        assert.equal(err.status, 504)
        assert.equal(err.headers.get('x-should-retry'), 'false')
      })
    }
  }
})

describe('an upstream that is down', () => {
  test('connection refused → 503 OpenAI error', async () => {
    const h = await startHarness()
    await h.mock.close()
    try {
      const res = await post(h, chat())
      assert.equal(res.status, 503)
      assert.equal(res.json().error.code, 'llmproxy_upstream_unavailable')
    } finally {
      await h.app.close()
    }
  })
})
