// Two gateway PROCESSES (the real CLI) share their limits through one real Redis: a per-key rpm, a
// per-key TPM and a daily token quota spent through one instance are enforced by the other.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { type MockUpstream, promptTokensFor, startMockUpstream } from '@llmproxy/mock-upstream'
import { type GatewayChild, spawnGateway } from './gateway-process.js'
import { errorOf, type HttpResult, pollUntil, postJson } from './http-helpers.js'
import { inOneWindow, REDIS_URL, redisDeletePrefix, redisReachable, redisSum } from './multi-instance-helpers.js'

/** Unique per run: concurrent runs and reruns never share counters. */
const PREFIX = `llmproxy-e2e-multi:${randomUUID()}:`
const RPM = 20
const TPM = 2000
const QUOTA = 1000
const KEYS = {
  rpm: 'sk-e2e-multi-rpm-0000000000000000',
  tpm: ['sk-e2e-multi-tpm-1-00000000000000', 'sk-e2e-multi-tpm-2-00000000000000'],
  quota: ['sk-e2e-multi-quota-1-000000000000', 'sk-e2e-multi-quota-2-000000000000'],
}
const TPM_IDS = ['tpm-1', 'tpm-2']
const QUOTA_IDS = ['quota-1', 'quota-2']
/** Default completion reservation of the rate-limit plugin for a body without max_tokens. */
const RESERVE_TOKENS = 256

const available = await redisReachable()
const skip = available ? false : `Redis not reachable at ${new URL(REDIS_URL).host} (LLMPROXY_TEST_REDIS_URL)`
// In CI a missing Redis is a failure, not a skip (as in packages/rate-limit/test/redis.test.ts).
if (!available && process.env.CI) {
  test('Redis is reachable (required when CI is set)', () => assert.fail(`Redis not reachable at ${REDIS_URL}`))
}

const stops: (() => Promise<void>)[] = []
const dir = mkdtempSync(join(tmpdir(), 'llmproxy-e2e-multi-'))
let mock: MockUpstream | null = null
let a: GatewayChild
let b: GatewayChild

before(async () => {
  if (!available) return
  mock = await startMockUpstream({ defaults: { tokens: 5 } })
  const config = {
    server: { host: '127.0.0.1', port: 0, logLevel: 'info', shutdownGraceMs: 1000 },
    upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
    models: [{ name: 'gpt-test', upstreams: ['mock'], upstreamModel: 'mock-model' }],
    healthChecks: { enabled: false },
    passiveHealth: { failuresToEject: 1000 },
    auth: {
      keys: [
        { id: 'rpm', key: KEYS.rpm, rateLimit: { rpm: RPM } },
        ...TPM_IDS.map((id, i) => ({ id, key: KEYS.tpm[i], rateLimit: { tpm: TPM } })),
        ...QUOTA_IDS.map((id, i) => ({ id, key: KEYS.quota[i], quota: { tokens: QUOTA, per: 'day' } })),
      ],
    },
    rateLimit: { store: 'redis' },
    // generous: a command slowed by a loaded machine must not fall back to per-instance counters
    redis: { url: REDIS_URL, keyPrefix: PREFIX, commandTimeoutMs: 5000 },
  }
  const file = join(dir, 'gateway.json')
  writeFileSync(file, JSON.stringify(config, null, 2))
  ;[a, b] = await Promise.all([spawnGateway(file, (stop) => stops.push(stop)), spawnGateway(file, (stop) => stops.push(stop))])
  // Both must be on Redis before anything is measured (the plugin carries on without it after ~2.5 s).
  for (const gw of [a, b]) {
    await pollUntil(
      () => fetch(`${gw.url}/metrics`).then((res) => res.text()),
      (text) => /^llmproxy_ratelimit_redis_up 1$/m.test(text),
      `${gw.url} to report llmproxy_ratelimit_redis_up 1`,
    )
  }
})

after(async () => {
  // Every child, even when start-up or a test failed; then the mock, Redis keys and the temp dir.
  await Promise.allSettled(stops.map((stop) => stop()))
  await mock?.close()
  if (available) await redisDeletePrefix(PREFIX).catch(() => undefined)
  rmSync(dir, { recursive: true, force: true })
})

function chatBody(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'Count to three, please.' }], ...extra })
}
const PROMPT_TOKENS = promptTokensFor(JSON.parse(chatBody()))

/** The reservation the plugin takes for a body: completion cap (or 256) + one token per 4 bytes of body. */
function reservation(body: string): number {
  const parsed = JSON.parse(body) as { max_tokens?: number }
  return (parsed.max_tokens ?? RESERVE_TOKENS) + Math.ceil(Buffer.byteLength(body) / 4)
}

function chat(gw: GatewayChild, key: string, body: string, tokens?: number): Promise<HttpResult> {
  const headers: Record<string, string> = { authorization: `Bearer ${key}` }
  if (tokens !== undefined) headers['x-mock-behavior'] = JSON.stringify({ tokens })
  return postJson(`${gw.url}/v1/chat/completions`, body, headers)
}

/** `llmproxy_ratelimit_redis_fallbacks_total` of a gateway: limit decisions taken locally because Redis failed. */
async function redisFallbacks(gw: GatewayChild): Promise<number> {
  const text = await fetch(`${gw.url}/metrics`).then((res) => res.text())
  const found = /^llmproxy_ratelimit_redis_fallbacks_total (\d+)$/m.exec(text)
  return found?.[1] === undefined ? Number.NaN : Number(found[1])
}

function chatRequests(): number {
  return mock?.requests.filter((r) => r.path === '/v1/chat/completions').length ?? 0
}

function assert429(result: HttpResult, code: string): void {
  assert.equal(result.status, 429, result.text)
  const error = errorOf(result)
  assert.equal(error.type, 'rate_limit_error')
  assert.equal(error.code, code)
  assert.equal(typeof error.message, 'string')
  const retryAfter = Number(result.headers.get('retry-after'))
  assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1, `retry-after: ${result.headers.get('retry-after')}`)
}

const DURATION = /^(\d+ms|(\d+h)?(\d+m)?\d+s)$/

/** Waits until the tokens charged in Redis to a key (all its windows of `kind`) reach exactly `expected`. */
function charged(kind: 't' | 'q', keyId: string, expected: number): Promise<number> {
  return pollUntil(
    () => redisSum(`${PREFIX}${kind}:{key:${keyId}}:*`),
    (sum) => sum === expected,
    `${expected} tokens charged to ${kind}:{key:${keyId}}:* in Redis`,
  )
}

test('a per-key rpm holds across two gateway processes (concurrent burst, alternating instances)', { skip }, async () => {
  mock?.reset()
  const burst: Promise<HttpResult>[] = []
  for (let i = 0; i < 2 * RPM; i++) burst.push(chat(i % 2 === 0 ? a : b, KEYS.rpm, chatBody()))
  const results = await Promise.all(burst)
  const ok = results.filter((r) => r.status === 200)
  const limited = results.filter((r) => r.status === 429)
  const fallbacks = await Promise.all([a, b].map(redisFallbacks))
  assert.ok(
    Math.abs(ok.length - RPM) <= 1,
    `${ok.length} requests passed across both instances, expected ${RPM} ± 1 (Redis fallbacks: ${fallbacks.join(', ')})`,
  )
  assert.deepEqual(fallbacks, [0, 0], 'every decision was taken on Redis')
  assert.equal(ok.length + limited.length, 2 * RPM, `statuses: ${results.map((r) => r.status).join(',')}`)
  assert.equal(chatRequests(), ok.length, 'only the admitted requests reached the upstream')
  for (const r of ok) assert.equal(r.headers.get('x-ratelimit-limit-requests'), `${RPM}`)
  for (const r of limited) {
    assert429(r, 'llmproxy_rate_limited')
    assert.equal(r.headers.get('x-ratelimit-limit-requests'), `${RPM}`)
    assert.equal(r.headers.get('x-ratelimit-remaining-requests'), '0')
    assert.match(r.headers.get('x-ratelimit-reset-requests') ?? '', DURATION)
    assert.ok(Number(r.headers.get('retry-after')) <= 60)
  }
  // The window is shared: one more request on each instance is refused too.
  assert429(await chat(a, KEYS.rpm, chatBody()), 'llmproxy_rate_limited')
  assert429(await chat(b, KEYS.rpm, chatBody()), 'llmproxy_rate_limited')
})

test('a per-key TPM spent on one instance is refused by the other (llmproxy_token_limit)', { skip }, async () => {
  await inOneWindow(60_000, TPM_IDS, async (i) => {
    const id = TPM_IDS[i] ?? ''
    const key = KEYS.tpm[i] ?? ''
    mock?.reset()
    const body = chatBody()
    const small = PROMPT_TOKENS + 100 // what a request answered with 100 tokens costs

    const first = await chat(a, key, body, 100)
    assert.equal(first.status, 200, first.text)
    assert.equal(first.headers.get('x-ratelimit-limit-tokens'), `${TPM}`)
    assert.equal(first.headers.get('x-ratelimit-remaining-tokens'), `${TPM - reservation(body)}`)
    await charged('t', id, small)

    // B sees what A charged.
    const second = await chat(b, key, body, 100)
    assert.equal(second.status, 200, second.text)
    assert.equal(second.headers.get('x-ratelimit-remaining-tokens'), `${TPM - small - reservation(body)}`)
    await charged('t', id, 2 * small)

    // A spends the rest (the answer is longer than the reservation; the actual usage is charged).
    const big = await chat(a, key, body, TPM)
    assert.equal(big.status, 200, big.text)
    await charged('t', id, 2 * small + PROMPT_TOKENS + TPM)

    const tiny = chatBody({ max_tokens: 1 })
    const refused = await chat(b, key, tiny)
    assert429(refused, 'llmproxy_token_limit')
    assert.equal(refused.headers.get('x-ratelimit-limit-tokens'), `${TPM}`)
    assert.equal(refused.headers.get('x-ratelimit-remaining-tokens'), '0')
    assert.match(refused.headers.get('x-ratelimit-reset-tokens') ?? '', DURATION)
    assert.ok(Number(refused.headers.get('retry-after')) <= 60)
    assert429(await chat(a, key, tiny), 'llmproxy_token_limit')
    assert.equal(chatRequests(), 3, 'the refused requests never reached the upstream')
  })
})

test('a daily token quota exhausted through one instance is refused by the other (quota_exceeded)', { skip }, async () => {
  await inOneWindow(86_400_000, QUOTA_IDS, async (i) => {
    const id = QUOTA_IDS[i] ?? ''
    const key = KEYS.quota[i] ?? ''
    mock?.reset()
    const body = chatBody()

    const early = await chat(b, key, body, 10)
    assert.equal(early.status, 200, early.text)
    await charged('q', id, PROMPT_TOKENS + 10)

    const exhausting = await chat(a, key, body, QUOTA)
    assert.equal(exhausting.status, 200, exhausting.text)
    await charged('q', id, 2 * PROMPT_TOKENS + 10 + QUOTA)

    const tiny = chatBody({ max_tokens: 1 })
    const refused = await chat(b, key, tiny)
    assert429(refused, 'quota_exceeded')
    assert.ok(Number(refused.headers.get('retry-after')) <= 86_400, `retry-after ${refused.headers.get('retry-after')}`)
    assert429(await chat(a, key, tiny), 'quota_exceeded')
    assert.equal(chatRequests(), 2, 'the refused requests never reached the upstream')
  })
})

test('the client keys never appear in either process log', { skip }, () => {
  for (const gw of [a, b]) {
    const out = gw.output()
    assert.match(out, /"msg":"request"/, 'the processes logged their requests')
    for (const key of [KEYS.rpm, ...KEYS.tpm, ...KEYS.quota]) assert.ok(!out.includes(key), `a key appeared in the log of ${gw.url}`)
  }
})
