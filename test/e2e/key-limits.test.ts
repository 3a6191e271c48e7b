// A key's own limits and quota are enforced from the config file alone: no top-level `rateLimit:` section, no
// Redis. What the official openai client surfaces for each, and a /metrics without Redis metrics.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { gzipSync } from 'node:zlib'
import Anthropic from '@anthropic-ai/sdk'
import OpenAI from 'openai'
import { request } from 'undici'
import { startGatewayWithMock, type TestGateway } from './helpers.js'
import { pollUntil } from './http-helpers.js'

const KEYS = {
  rps: 'sk-e2e-limits-rps-00000000000000',
  rpm: 'sk-e2e-limits-rpm-00000000000000',
  tpm: 'sk-e2e-limits-tpm-00000000000000',
  concurrency: 'sk-e2e-limits-conc-0000000000000',
  quota: 'sk-e2e-limits-quota-000000000000',
  gemini: 'sk-e2e-limits-gemini-00000000000',
}

let gw: TestGateway
before(async () => {
  gw = await startGatewayWithMock({
    auth: {
      keys: [
        { id: 'rps', key: KEYS.rps, rateLimit: { rps: 5 } },
        { id: 'rpm', key: KEYS.rpm, rateLimit: { rpm: 3 } },
        { id: 'tpm', key: KEYS.tpm, rateLimit: { tpm: 100 } },
        { id: 'concurrency', key: KEYS.concurrency, rateLimit: { concurrency: 1 } },
        { id: 'quota', key: KEYS.quota, quota: { tokens: 150, per: 'day' } },
        { id: 'gemini', key: KEYS.gemini, rateLimit: { rpm: 1 } },
      ],
    },
  })
})
after(() => gw.close())

const client = (key: string) => new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 })
const ask = (key: string, extra: { max_tokens?: number } = {}, headers: Record<string, string> = {}) =>
  client(key)
    .chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'Hello' }], ...extra }, { headers })
    .withResponse()

/**
 * The RateLimitError the client throws, with its code and headers: with a retry-after, or, for a request that can
 * never pass (`neverFits`), with none and `x-should-retry: false`.
 */
async function refused(call: Promise<unknown>, code: string, neverFits = false): Promise<InstanceType<typeof OpenAI.RateLimitError>> {
  try {
    await call
  } catch (err) {
    assert.ok(err instanceof OpenAI.RateLimitError, String(err))
    assert.equal(err.status, 429)
    assert.equal(err.code, code)
    assert.equal(err.type, 'rate_limit_error')
    if (neverFits) {
      assert.equal(err.headers.get('retry-after'), null)
      assert.equal(err.headers.get('x-should-retry'), 'false')
    } else {
      assert.ok(Number(err.headers.get('retry-after')) >= 1)
    }
    return err
  }
  assert.fail(`expected a 429 ${code}`)
}

test('a key’s rps, without a rateLimit section: a burst is cut at the limit, with rate-limit headers', async () => {
  const results = await Promise.allSettled(Array.from({ length: 20 }, () => ask(KEYS.rps)))
  const ok = results.filter((r) => r.status === 'fulfilled')
  const limited = results.filter((r) => r.status === 'rejected')
  // 5 per second; a burst that straddles a second boundary may get 5 more.
  assert.ok(ok.length >= 5 && ok.length <= 10, `${ok.length} of 20 passed`)
  for (const r of limited) {
    assert.ok(r.reason instanceof OpenAI.RateLimitError)
    assert.equal(r.reason.code, 'llmproxy_rate_limited')
    assert.equal(r.reason.headers.get('x-ratelimit-limit-requests'), '5')
  }
  for (const r of ok) assert.equal(r.value.response.headers.get('x-ratelimit-limit-requests'), '5')
})

test('a key’s rpm: the fourth request in a minute is refused', async () => {
  for (let i = 0; i < 3; i++) {
    const { response } = await ask(KEYS.rpm)
    assert.equal(response.headers.get('x-ratelimit-remaining-requests'), `${2 - i}`)
  }
  const err = await refused(ask(KEYS.rpm), 'llmproxy_rate_limited')
  assert.match(err.message, /3 requests per minute/)
})

test('a key’s tpm: a request that may use more than the limit is refused, a small one passes with token headers', async () => {
  await refused(ask(KEYS.tpm, { max_tokens: 200 }), 'llmproxy_token_limit', true)
  const { data, response } = await ask(KEYS.tpm, { max_tokens: 20 })
  assert.equal(data.usage?.completion_tokens, 5)
  assert.equal(response.headers.get('x-ratelimit-limit-tokens'), '100')
})

test('a key’s tpm counts a compressed prompt at its decompressed size (gzip does not slip a long prompt through)', async () => {
  const body = JSON.stringify({ model: 'gpt-test', max_tokens: 20, messages: [{ role: 'user', content: 'lorem ipsum '.repeat(200) }] })
  const send = (compressed: boolean) =>
    request(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${KEYS.tpm}`,
        'content-type': 'application/json',
        ...(compressed ? { 'content-encoding': 'gzip' } : {}),
      },
      body: compressed ? gzipSync(body) : body,
    })
  // ~600 prompt tokens: more than the key's 100 a minute, however it is sent (gzipped, ~70 bytes on the wire).
  for (const compressed of [false, true]) {
    const res = await send(compressed)
    const answer = (await res.body.json()) as { error?: { code: string } }
    assert.equal(res.statusCode, 429, `gzip ${compressed}`)
    assert.equal(answer.error?.code, 'llmproxy_token_limit')
  }
})

test('a key’s concurrency: a second request while one is in flight is refused', async () => {
  const before = gw.mock.requests.length
  const slow = ask(KEYS.concurrency, {}, { 'x-mock-behavior': JSON.stringify({ ttftMs: 1000 }) })
  // Once it reached the upstream, it holds the key's one slot until it ends.
  await pollUntil(
    async () => gw.mock.requests.length,
    (n) => n > before,
    'the first request to reach the upstream',
  )
  await refused(ask(KEYS.concurrency), 'llmproxy_concurrency_limit')
  assert.equal((await slow).response.status, 200)
})

test('a key’s quota: tokens are counted, and what would exceed is refused with quota_exceeded', async () => {
  const { data } = await ask(KEYS.quota, { max_tokens: 20 })
  assert.ok((data.usage?.total_tokens ?? 0) > 0)
  await refused(ask(KEYS.quota, { max_tokens: 200 }), 'quota_exceeded', true)
  // What fits the quota's size (125 + 21 estimated prompt tokens) but not what is left of it may pass when the period
  // resets, which retry-after says; never retried by the SDKs, which would sleep until then.
  const spent = await refused(ask(KEYS.quota, { max_tokens: 125 }), 'quota_exceeded')
  assert.equal(spent.headers.get('x-should-retry'), 'false')
})

test('a used-up quota fails at once in the official SDKs (they would sleep until it resets), sent once each', async () => {
  const sent: string[] = []
  const counting = (name: string) => (url: string | URL | Request, init?: RequestInit) => {
    sent.push(name)
    return fetch(url, init)
  }
  // Still pending by then, a call sleeps on the quota's retry-after (hours): the test says so rather than hang.
  const promptly = <T>(call: Promise<T>): Promise<T> =>
    Promise.race([call, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('still pending after 5 s')), 5000).unref())])
  const openai = new OpenAI({ apiKey: KEYS.quota, baseURL: `${gw.url}/v1`, maxRetries: 2, fetch: counting('openai') })
  const fromOpenAi = await promptly(
    openai.chat.completions.create({ model: 'gpt-test', max_tokens: 125, messages: [{ role: 'user', content: 'Hello' }] }),
  ).catch((err: unknown) => err)
  assert.ok(fromOpenAi instanceof OpenAI.RateLimitError, String(fromOpenAi))
  assert.equal(fromOpenAi.code, 'quota_exceeded')
  assert.ok(Number(fromOpenAi.headers.get('retry-after')) >= 1, 'retry-after still says when the quota resets')
  const anthropic = new Anthropic({ apiKey: KEYS.quota, baseURL: gw.url, maxRetries: 2, fetch: counting('anthropic') })
  const fromAnthropic = await promptly(
    anthropic.messages.create({ model: 'gpt-test', max_tokens: 125, messages: [{ role: 'user', content: 'Hello' }] }),
  ).catch((err: unknown) => err)
  assert.ok(fromAnthropic instanceof Anthropic.RateLimitError, String(fromAnthropic))
  assert.equal((fromAnthropic.error as { error: { code: string } }).error.code, 'quota_exceeded')
  assert.deepEqual(sent, ['openai', 'anthropic'])
})

test('a request that can never fit its tpm is sent once by the SDKs, which retry other 429s', async () => {
  const sent: string[] = []
  const counting = (name: string) => (url: string | URL | Request, init?: RequestInit) => {
    sent.push(name)
    return fetch(url, init)
  }
  const openai = new OpenAI({ apiKey: KEYS.tpm, baseURL: `${gw.url}/v1`, maxRetries: 2, fetch: counting('openai') })
  await assert.rejects(
    openai.chat.completions.create({ model: 'gpt-test', max_tokens: 500, messages: [{ role: 'user', content: 'Hello' }] }),
    OpenAI.RateLimitError,
  )
  const anthropic = new Anthropic({ apiKey: KEYS.tpm, baseURL: gw.url, maxRetries: 2, fetch: counting('anthropic') })
  await assert.rejects(
    anthropic.messages.create({ model: 'gpt-test', max_tokens: 500, messages: [{ role: 'user', content: 'Hello' }] }),
    Anthropic.RateLimitError,
  )
  assert.deepEqual(sent, ['openai', 'anthropic'])
})

test('a Gemini client’s 429 says the wait in its body too, as Google’s do (RetryInfo), besides retry-after', async () => {
  const generate = () =>
    request(`${gw.url}/v1beta/models/gpt-test:generateContent`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-goog-api-key': KEYS.gemini },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'Hello' }] }] }),
    })
  const passed = await generate()
  assert.equal(passed.statusCode, 200)
  await passed.body.dump()
  const limited = await generate()
  assert.equal(limited.statusCode, 429)
  const retryAfter = limited.headers['retry-after']
  assert.ok(Number(retryAfter) >= 1)
  const { error } = (await limited.body.json()) as { error: { status: string; details: Record<string, string>[] } }
  assert.equal(error.status, 'RESOURCE_EXHAUSTED')
  assert.deepEqual(error.details, [
    { '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'llmproxy_rate_limited', domain: 'llmproxy' },
    { '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${retryAfter}s` },
  ])
})

test('without Redis, /metrics exports no Redis metrics', async () => {
  const text = await fetch(`${gw.url}/metrics`).then((res) => res.text())
  assert.doesNotMatch(text, /llmproxy_ratelimit_redis_up/)
  assert.doesNotMatch(text, /llmproxy_ratelimit_redis_fallbacks_total/)
})
