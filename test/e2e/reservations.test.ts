// Token reservations count every answer a request asks for: `n × max_tokens` (hardening issue, item 4).
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { startGatewayWithMock, type TestGateway } from './helpers.js'

const KEY = 'sk-e2e-reservations-5b2c9e1f70'
let gateway: TestGateway

before(async () => {
  gateway = await startGatewayWithMock({
    auth: { keys: [{ id: 'quota-key', key: KEY, quota: { tokens: 1000, per: 'day' } }] },
    rateLimit: {},
  })
  // The answer stalls after its first token: the admitted request stays in flight (its reservation held) until
  // all ten have their answer, however slow the machine.
  gateway.mock.setDefaults({ tokens: 5, fault: 'stall', faultAfter: 1 })
})

after(() => gateway.close())

test('a 1,000-token quota admits one of ten concurrent requests asking for n: 8 × max_tokens: 100', async (t) => {
  const body = JSON.stringify({ model: 'gpt-test', stream: true, n: 8, max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] })
  const client = new AbortController()
  t.after(() => client.abort())
  const results = await Promise.all(
    Array.from({ length: 10 }, () =>
      fetch(`${gateway.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
        body,
        signal: client.signal,
      }),
    ),
  )
  const admitted = results.filter((r) => r.status === 200)
  const refused = results.filter((r) => r.status === 429)
  assert.equal(admitted.length, 1, `statuses: ${results.map((r) => r.status).join(',')}`)
  assert.equal(refused.length, 9)
  for (const r of refused) assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'quota_exceeded')
})

test('legacy completions reserve every prompt of an array, embeddings no output at all', async () => {
  const tpmKey = 'sk-e2e-reservations-tpm-8d41a7'
  const plain = await startGatewayWithMock({ auth: { keys: [{ id: 'tpm-key', key: tpmKey, rateLimit: { tpm: 1000 } }] }, rateLimit: {} })
  try {
    const post = (path: string, body: unknown) =>
      fetch(`${plain.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${tpmKey}` },
        body: JSON.stringify(body),
      })
    // 20 prompts × max_tokens 100 = 2,000 tokens of output: more than the key's 1,000 per minute, refused for good
    // (it reserved one prompt's 100 and spent 2,000).
    const prompts = Array.from({ length: 20 }, (_v, i) => `prompt ${i}`)
    const completions = await post('/v1/completions', { model: 'gpt-test', prompt: prompts, max_tokens: 100 })
    assert.equal(completions.status, 429)
    assert.equal(completions.headers.get('x-should-retry'), 'false')
    assert.match(((await completions.json()) as { error: { message: string } }).error.message, /up to 20\d\d tokens.*lower max_tokens/)
    assert.equal(plain.mock.requests.length, 0)
    // ~800 tokens of input and nothing generated: it fits (256 reserved for an output it never makes did not).
    const input = Array.from({ length: 40 }, () => 'x'.repeat(75))
    const embeddings = await post('/v1/embeddings', { model: 'gpt-test', input })
    assert.equal(embeddings.status, 200)
    // Too much input: the refusal says what to lower (embeddings have no max_tokens).
    const tooMuch = await post('/v1/embeddings', { model: 'gpt-test', input: [...input, ...input] })
    assert.equal(tooMuch.status, 429)
    assert.match(((await tooMuch.json()) as { error: { message: string } }).error.message, /: send less input\.$/)
  } finally {
    await plain.close()
  }
})

test("a Gemini client's output cap is reserved however protobuf JSON spells it: snake_case, or an integer as a string", async () => {
  const tpmKey = 'sk-e2e-reservations-gemini-3f9a1c'
  const plain = await startGatewayWithMock({ auth: { keys: [{ id: 'gemini-key', key: tpmKey, rateLimit: { tpm: 1000 } }] }, rateLimit: {} })
  try {
    const generate = (config: Record<string, unknown>) =>
      fetch(`${plain.url}/v1beta/models/gpt-test:generateContent`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-goog-api-key': tpmKey },
        body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }], ...config }),
      })
    // Each asks the upstream for 30,000 tokens (the converter reads each spelling): alone above the key's 1,000 a minute.
    for (const config of [
      { generation_config: { max_output_tokens: 30_000 } },
      { generationConfig: { max_output_tokens: 30_000 } },
      { generationConfig: { maxOutputTokens: '30000' } },
    ]) {
      const res = await generate(config)
      assert.equal(res.status, 429, JSON.stringify(config))
      assert.match(((await res.json()) as { error: { message: string } }).error.message, /up to 300\d\d tokens/)
    }
    assert.equal(plain.mock.requests.length, 0)
    const fits = await generate({ generation_config: { max_output_tokens: 100 } })
    assert.equal(fits.status, 200)
  } finally {
    await plain.close()
  }
})
