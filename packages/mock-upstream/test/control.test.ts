import assert from 'node:assert/strict'
import { after, before, beforeEach, describe, test } from 'node:test'
import { request } from 'undici'
import { expectedContent, type MockBehavior, type MockUpstream, type RecordedRequest, startMockUpstream } from '../src/index.js'
import { get, post } from './helpers.js'

const messages = [{ role: 'user', content: 'control' }]

async function content(mock: MockUpstream, body: object, headers: Record<string, string> = {}): Promise<string> {
  const res = await post(mock, '/v1/chat/completions', { messages, ...body }, headers)
  assert.equal(res.status, 200, res.text)
  return JSON.parse(res.text).choices[0].message.content
}

describe('programming the mock', () => {
  let mock: MockUpstream
  before(async () => {
    mock = await startMockUpstream({ defaults: { tokens: 1 } })
  })
  beforeEach(() => mock.reset())
  after(() => mock.close())

  test('precedence: defaults < program() < body `mock` < x-mock-behavior header', async () => {
    mock.program(() => ({ tokens: 2 }))
    const header = { 'x-mock-behavior': JSON.stringify({ tokens: 4 }) }
    assert.equal(await content(mock, { mock: { tokens: 3 } }, header), expectedContent(4))
    assert.equal(await content(mock, { mock: { tokens: 3 } }), expectedContent(3))
    assert.equal(await content(mock, {}), expectedContent(2))
    mock.program(null)
    assert.equal(await content(mock, {}), expectedContent(1))
  })

  test('each layer overrides only the fields it sets', async () => {
    mock.setDefaults({ tokens: 5, usage: false })
    const res = await post(mock, '/v1/chat/completions', { messages }, { 'x-mock-behavior': '{"tokens":2}' })
    const body = JSON.parse(res.text)
    assert.equal(body.choices[0].message.content, expectedContent(2))
    assert.equal('usage' in body, false)
  })

  test('status 0 in a higher layer cancels an error status below', async () => {
    mock.setDefaults({ status: 500 })
    assert.equal((await post(mock, '/v1/chat/completions', { messages })).status, 500)
    assert.equal((await post(mock, '/v1/chat/completions', { messages, mock: { status: 0 } })).status, 200)
  })

  test('program() decides per request from the recorded request', async () => {
    const seen: RecordedRequest[] = []
    mock.program((req) => {
      seen.push(req)
      return (req.body as { model?: string }).model === 'failing' ? { status: 502 } : undefined
    })
    assert.equal((await post(mock, '/v1/chat/completions', { model: 'failing', messages })).status, 502)
    assert.equal((await post(mock, '/v1/chat/completions', { model: 'fine', messages })).status, 200)
    assert.equal(seen.length, 2)
    assert.equal(seen[0]?.path, '/v1/chat/completions')
    assert.equal(seen[0]?.method, 'POST')
  })

  test('setHealthy(false): /health and /v1/models answer 503; setHealthy(true) restores', async () => {
    mock.setHealthy(false)
    assert.equal((await get(mock, '/health')).status, 503)
    const models = await get(mock, '/v1/models')
    assert.equal(models.status, 503)
    assert.equal(JSON.parse(models.text).error.code, 'mock_unhealthy')
    mock.setHealthy(true)
    assert.equal((await get(mock, '/health')).status, 200)
    assert.equal((await get(mock, '/v1/models')).status, 200)
  })

  test('reset(): clears requests, program, defaults and health', async () => {
    mock.setDefaults({ tokens: 6 })
    mock.program(() => ({ usage: false }))
    mock.setHealthy(false)
    await post(mock, '/v1/chat/completions', { messages })
    assert.equal(mock.requests.length, 1)
    mock.reset()
    assert.equal(mock.requests.length, 0)
    assert.equal((await get(mock, '/health')).status, 200)
    const body = JSON.parse((await post(mock, '/v1/chat/completions', { messages })).text)
    assert.equal(body.choices[0].message.content, expectedContent(1))
    assert.equal(body.usage.completion_tokens, 1)
  })

  test('requests are recorded with method, path, headers, parsed body and times', async () => {
    await post(mock, '/v1/chat/completions?x=1', { model: 'rec', messages }, { 'x-custom': 'yes' })
    const [rec] = mock.requests
    assert.ok(rec)
    assert.equal(rec.seq > 0, true)
    assert.equal(rec.method, 'POST')
    assert.equal(rec.path, '/v1/chat/completions')
    assert.equal(rec.headers['x-custom'], 'yes')
    assert.deepEqual(rec.body, { model: 'rec', messages })
    assert.equal(typeof rec.receivedAt, 'number')
  })

  test('waitForRequests resolves at n requests and rejects after its timeout', async () => {
    const waiting = mock.waitForRequests(2, 5000)
    await post(mock, '/v1/chat/completions', { messages })
    await post(mock, '/v1/chat/completions', { messages })
    await waiting
    await mock.waitForRequests(1)
    await assert.rejects(mock.waitForRequests(3, 50), /2 of 3/)
  })

  test('invalid behavior: 400 mock_invalid_behavior; setDefaults and options throw', async () => {
    for (const headers of [{ 'x-mock-behavior': '{nope' }, { 'x-mock-behavior': '{"fault":"explode"}' }]) {
      const res = await post(mock, '/v1/chat/completions', { messages }, headers)
      assert.equal(res.status, 400)
      assert.equal(JSON.parse(res.text).error.code, 'mock_invalid_behavior')
    }
    assert.equal((await post(mock, '/v1/chat/completions', { messages, mock: { tokens: -1 } })).status, 400)
    mock.program(() => ({ gapMs: Number.NaN }))
    assert.equal((await post(mock, '/v1/chat/completions', { messages })).status, 400)
    assert.throws(() => mock.setDefaults({ tokens: 1.5 }), TypeError)
    await assert.rejects(startMockUpstream({ models: [] }), TypeError)
    await assert.rejects(startMockUpstream({ defaults: { status: 200 } }), TypeError)
  })
  test('the new behavior fields are checked like the others', async () => {
    const invalid = [
      { reasoning: -1 },
      { shift: 1.5 },
      { cachedTokens: 'many' },
      { cacheWriteTokens: -2 },
      { text: 7 },
      { toolCalls: { name: 'f' } },
      { toolCalls: [{ name: '', arguments: {} }] },
      { toolCalls: [{ name: 'f', arguments: '{}' }] },
      { finish: 'tool_calls' },
      { rejectPrefill: 'yes' },
      { contentEncoding: 'br' },
      { lineEnding: 'crcr' },
      { fault: 'hold' },
    ]
    for (const behavior of invalid) {
      const res = await post(mock, '/v1/chat/completions', { messages, mock: behavior })
      assert.equal(res.status, 400, JSON.stringify(behavior))
      assert.equal(JSON.parse(res.text).error.code, 'mock_invalid_behavior')
    }
    const valid = {
      reasoning: 1,
      shift: 3,
      cachedTokens: 1,
      cacheWriteTokens: 1,
      text: 'a b',
      toolCalls: [{ name: 'f', arguments: { a: 1 } }],
      finish: 'pause',
      rejectPrefill: false,
      contentEncoding: 'identity',
      lineEnding: 'lf',
      fault: 'hold-open',
    }
    assert.doesNotThrow(() => mock.setDefaults(valid as MockBehavior))
    assert.throws(
      () => mock.setDefaults({ finish: 'done' } as unknown as MockBehavior),
      /finish must be one of stop, length, content_filter/,
    )
  })
})

describe('options', () => {
  test('record: false keeps no requests but still emits events and counts them', async (t) => {
    const mock = await startMockUpstream({ record: false })
    t.after(() => mock.close())
    let events = 0
    mock.on('request', () => {
      events++
    })
    await post(mock, '/v1/chat/completions', { messages })
    await mock.waitForRequests(1, 1000)
    assert.equal(events, 1)
    assert.equal(mock.requests.length, 0)
  })

  test('url and port describe where it listens; close() destroys open sockets', async () => {
    const mock = await startMockUpstream({ host: '127.0.0.1' })
    assert.ok(mock.port > 0)
    assert.equal(mock.url, `http://127.0.0.1:${mock.port}`)
    const pending = request(`${mock.url}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ messages, mock: { fault: 'no-response' } }),
    })
    await mock.waitForRequests(1)
    await mock.close()
    await assert.rejects(pending)
    await mock.close()
  })
})
