import { strict as assert } from 'node:assert'
import { test } from 'node:test'
import { ConfigError } from '@llmproxy/core'
import { anthropic, gemini, openai } from '@llmproxy/protocols'
import { markerKey, migrateQuotaKey, quotaKey, slotKey, subjectTag, tpmKey, UniqueIds } from '../src/keys.js'
import { type RateLimitOptionsInput, resolveOptions } from '../src/options.js'
import { RequestWindows } from '../src/request-windows.js'
import { expectedTokens, shrinkable } from '../src/reservation.js'
import { MemoryStore } from '../src/store.js'
import { formatDuration, PeriodClock, periodOf } from '../src/windows.js'

test('request windows: fixed from a subject’s first request, as @fastify/rate-limit counts; the oldest forgotten beyond capacity', () => {
  const windows = new RequestWindows(1000, 2)
  assert.deepEqual(windows.hit('a', 2, 10_000), { max: 2, remaining: 1, ttl: 1000, exceeded: false })
  assert.deepEqual(windows.hit('a', 2, 10_400), { max: 2, remaining: 0, ttl: 600, exceeded: false })
  assert.deepEqual(windows.hit('a', 2, 10_999), { max: 2, remaining: 0, ttl: 1, exceeded: true })
  // The window ends 1000 ms after its first request; the next request starts a new one.
  assert.deepEqual(windows.hit('a', 2, 11_000), { max: 2, remaining: 1, ttl: 1000, exceeded: false })
  // A limit of 0 refuses every request.
  assert.equal(windows.hit('z', 0, 11_000).exceeded, true)
  // Capacity 2 (a, z): a third subject makes the oldest window (a's) go; a starts afresh.
  windows.hit('b', 2, 11_100)
  assert.deepEqual(windows.hit('a', 2, 11_200), { max: 2, remaining: 1, ttl: 1000, exceeded: false })
})

test('formatDuration uses OpenAI’s reset format', () => {
  assert.equal(formatDuration(250), '250ms')
  assert.equal(formatDuration(1000), '1s')
  assert.equal(formatDuration(12_300), '13s')
  assert.equal(formatDuration(360_000), '6m0s')
  assert.equal(formatDuration(3_723_000), '1h2m3s')
})

const CHAT = '/v1/chat/completions'
const GENERATE = '/v1beta/models/:target'
const MESSAGES = '/v1/messages'

test('expectedTokens: output cap (in the client API’s fields, or the default) times the answers asked for, plus bytes / 4', () => {
  assert.equal(expectedTokens(openai, CHAT, { max_tokens: 100 }, '40', 256), 110)
  assert.equal(expectedTokens(openai, CHAT, { max_completion_tokens: 7 }, '4', 256), 8)
  assert.equal(expectedTokens(openai, CHAT, { max_output_tokens: 7 }, '0', 256), 7)
  // Several caps: the largest (a converted request to Anthropic or Gemini takes max_completion_tokens, and a
  // small max_tokens beside it reserved 1 token for a 30,000-token answer).
  assert.equal(expectedTokens(openai, CHAT, { max_tokens: 1, max_completion_tokens: 30_000 }, '0', 256), 30_000)
  assert.equal(expectedTokens(openai, CHAT, { max_tokens: 500, max_completion_tokens: 20 }, '0', 256), 500)
  assert.equal(expectedTokens(gemini, GENERATE, { generationConfig: { maxOutputTokens: 9 } }, '1', 256), 10)
  assert.equal(expectedTokens(openai, CHAT, { max_tokens: 'x' }, '8', 256), 258)
  assert.equal(expectedTokens(openai, CHAT, { a: 1 }, undefined, 0), Math.ceil(Buffer.byteLength('{"a":1}') / 4))
  // n answers of max_tokens each (and best_of candidates generated server-side), Gemini's candidateCount
  assert.equal(expectedTokens(openai, CHAT, { n: 8, max_tokens: 100 }, '0', 256), 800)
  assert.equal(expectedTokens(openai, CHAT, { n: 2, best_of: 5, max_tokens: 10 }, '0', 256), 50)
  assert.equal(expectedTokens(openai, CHAT, { n: 3 }, '0', 256), 768)
  assert.equal(expectedTokens(gemini, GENERATE, { generationConfig: { maxOutputTokens: 9, candidateCount: 4 } }, '0', 256), 36)
  // Gemini's fields as protobuf JSON spells them too (the converter and Google take them): snake_case, integers as strings.
  assert.equal(expectedTokens(gemini, GENERATE, { generation_config: { max_output_tokens: 9, candidate_count: 4 } }, '0', 256), 36)
  assert.equal(expectedTokens(gemini, GENERATE, { generationConfig: { max_output_tokens: 30_000 } }, '0', 256), 30_000)
  assert.equal(expectedTokens(gemini, GENERATE, { generationConfig: { maxOutputTokens: '30000', candidateCount: '2' } }, '0', 256), 60_000)
  assert.equal(expectedTokens(anthropic, MESSAGES, { max_tokens: 50, n: 8 }, '0', 256), 50)
  // Legacy completions answer each prompt of an array (n each); one string, or one array of token ids, is one prompt.
  const completions = '/v1/completions'
  assert.equal(expectedTokens(openai, completions, { prompt: ['a', 'b', 'c'], max_tokens: 100 }, '0', 256), 300)
  assert.equal(expectedTokens(openai, completions, { prompt: [[1, 2], [3]], n: 2, max_tokens: 10 }, '0', 256), 40)
  assert.equal(expectedTokens(openai, completions, { prompt: [1, 2, 3], max_tokens: 10 }, '0', 256), 10)
  assert.equal(expectedTokens(openai, `/llm${completions}`, { prompt: ['a', 'b'] }, '0', 256), 512)
  // A prompt array means nothing to chat or Responses.
  assert.equal(expectedTokens(openai, CHAT, { prompt: ['a', 'b'], max_tokens: 10 }, '0', 256), 10)
  // Embeddings generate nothing: their input alone, whatever reserveTokens.
  assert.equal(expectedTokens(openai, '/v1/embeddings', { input: ['hello', 'world'] }, '40', 256), 10)
  assert.equal(shrinkable(openai, '/v1/embeddings', { input: 'x' }), 'send less input')
  // Nor does counting tokens, in Anthropic's or Gemini's API.
  assert.equal(expectedTokens(anthropic, '/v1/messages/count_tokens', { max_tokens: 50 }, '40', 256), 10)
  assert.equal(expectedTokens(gemini, '/llm/v1beta/models/gemini-x:countTokens', { contents: [] }, '40', 256), 10)
  assert.equal(expectedTokens(gemini, '/v1beta/models/gemini-x:generateContent', { contents: [] }, '40', 256), 266)
  assert.equal(shrinkable(anthropic, '/v1/messages/count_tokens', {}), 'send less input')
  assert.equal(shrinkable(openai, CHAT, { max_tokens: 5 }), 'lower max_tokens or the prompt')
})

test('periods are UTC days and calendar months', () => {
  const now = Date.UTC(2024, 1, 29, 23, 59, 59)
  assert.deepEqual(periodOf('day', now), { name: '2024-02-29', startsAt: Date.UTC(2024, 1, 29), endsAt: Date.UTC(2024, 2, 1) })
  assert.deepEqual(periodOf('month', now), { name: '2024-02', startsAt: Date.UTC(2024, 1, 1), endsAt: Date.UTC(2024, 2, 1) })
  assert.equal(periodOf('month', Date.UTC(2024, 11, 31)).endsAt, Date.UTC(2025, 0, 1))
  const clock = new PeriodClock()
  const a = clock.current('day', now)
  assert.equal(clock.current('day', now + 500), a, 'cached within the period')
  assert.equal(clock.current('day', now + 1000).name, '2024-03-01')
})

test('memory store: atomic check-and-add, floor at zero, expiry, slots', async (t) => {
  const store = new MemoryStore()
  t.after(() => store.close())
  const expireAt = Date.now() + 60_000
  assert.deepEqual(await store.reserve('t:1', 'm1', 60, 100, expireAt), { ok: true, value: 60 })
  assert.deepEqual(await store.reserve('t:1', 'm2', 50, 100, expireAt), { ok: false, value: 60 })
  await store.settle('t:1', 'm1', 25, 60, expireAt)
  assert.equal(await store.get('t:1'), 25)
  await store.charge('t:1', 'm3', 10, expireAt)
  assert.equal(await store.get('t:1'), 35)
  store.add('t:1', -100, expireAt)
  assert.equal(await store.get('t:1'), 0)
  store.add('t:2', 5, Date.now() - 1)
  assert.equal(await store.get('t:2'), 0, 'expired')
  assert.deepEqual(await store.acquire('c', 'a', 1), { ok: true, value: 1 })
  assert.deepEqual(await store.acquire('c', 'b', 1), { ok: false, value: 1 })
  await store.release('c')
  assert.equal(await store.inFlight('c'), 0)
  store.add('q:{key:a}:2024-01', 5, expireAt)
  assert.deepEqual(store.quotaEntries(Date.now()), [['q:{key:a}:2024-01', 5, expireAt]])
})

test('key layout: every key of a subject carries the subject as its Redis Cluster hash tag', () => {
  const tag = subjectTag('key:team-a')
  assert.equal(tag, '{key:team-a}')
  assert.equal(tpmKey(tag, 29_000_000), 't:{key:team-a}:29000000')
  assert.equal(quotaKey(tag, '2025-01'), 'q:{key:team-a}:2025-01')
  assert.equal(slotKey(tag), 'c:{key:team-a}')
  assert.equal(markerKey(tag, 'abc:1'), 'm:{key:team-a}:abc:1')
  // Keys of quota state files written before hash tags load under the current layout.
  assert.equal(migrateQuotaKey('q:2025-01:key:team-a'), 'q:{key:team-a}:2025-01')
  assert.equal(migrateQuotaKey('q:2025-01-31:ip:::1'), 'q:{ip:::1}:2025-01-31')
  assert.equal(migrateQuotaKey('q:{key:team-a}:2025-01'), 'q:{key:team-a}:2025-01')
  const ids = new UniqueIds()
  assert.notEqual(ids.next(), ids.next())
  assert.notEqual(new UniqueIds().next(), new UniqueIds().next())
})

function problems(redis: Record<string, unknown>, extra: Record<string, unknown> = { store: 'redis' }): string[] {
  try {
    resolveOptions({ ...extra, redis } as RateLimitOptionsInput)
  } catch (err) {
    assert.ok(err instanceof ConfigError)
    return err.problems.map((p) => `${p.path}: ${p.message}`)
  }
  return []
}

test('redis options: exactly one of url, sentinels, cluster, and each setting only with its mode', () => {
  assert.deepEqual(problems({ url: 'redis://127.0.0.1:6379' }), [])
  assert.deepEqual(problems({ sentinels: [{ host: 'a', port: 26379 }], name: 'mymaster', sentinelPassword: 's', password: 'p' }), [])
  assert.deepEqual(problems({ cluster: [{ host: 'a', port: 7000 }], username: 'u', password: 'p' }), [])
  assert.deepEqual(problems({}), ['/redis: set one of url (a single node), sentinels (Redis Sentinel) or cluster (Redis Cluster)'])
  assert.deepEqual(problems({ url: 'redis://a:1', cluster: [{ host: 'a', port: 7000 }] }), [
    '/redis/cluster: conflicts with url: set exactly one of url, sentinels, cluster',
  ])
  assert.deepEqual(problems({ sentinels: [{ host: 'a', port: 26379 }] }), [
    '/redis/name: required with sentinels: the master group name (as in sentinel monitor <name> …)',
  ])
  assert.deepEqual(problems({ cluster: [{ host: 'a', port: 7000 }], name: 'x' }), [
    '/redis/name: only used with sentinels, not with cluster',
  ])
  assert.deepEqual(problems({ url: 'redis://a:1', password: 'p' }), [
    '/redis/password: with url, put it in the url, percent-encoded (redis://user:password@host:port)',
  ])
  assert.deepEqual(problems({ url: 'http://a:1' }), ['/redis/url: must start with redis:// or rediss:// (TLS)'])
  // ioredis would throw at startup; the password is not repeated.
  assert.deepEqual(problems({ url: 'redis://:s3cret@host:notaport' }), [
    '/redis/url: not a valid URL: redis://[user:password@]host:port[/db]; percent-encode a user or password that holds / ? # @ : % or a space (/ as %2F, % as %25)',
  ])
  // What ioredis threw at start (URIError), or sent Redis once the gateway listened (SELECT NaN, an uncaught error).
  assert.deepEqual(problems({ url: 'redis://:x%zz@host:6379/0' }), [
    '/redis/url: the user or password has a % that is no percent-encoding: percent-encode a user or password that holds / ? # @ : % or a space (/ as %2F, % as %25)',
  ])
  for (const url of ['redis://host:6379/abc', 'redis://host:6379/0/1', 'redis://host:6379?db=x']) {
    assert.deepEqual(
      problems({ url }),
      ['/redis/url: the database (the path after host:port) must be a number, as in redis://host:6379/0'],
      url,
    )
  }
  for (const url of [
    'redis://host',
    'redis://host:6379/',
    'redis://host:6379/15',
    'redis://:ab%2Fcd%25@host:6379/0',
    'redis://host:6379?db=2',
  ]) {
    assert.deepEqual(problems({ url }), [], url)
  }
  assert.deepEqual(problems({ cluster: [] }).length, 1)
  assert.deepEqual(problems({ cluster: [{ host: 'a', port: 0 }] }).length, 1)
})

test('options that only work together: redis needs store redis, the state file needs store memory', () => {
  assert.deepEqual(problems({ url: 'redis://a:1' }, { store: 'memory' }), [
    '/redis: set, but store is "memory": nothing would use it (set store: redis)',
  ])
  assert.deepEqual(problems({ url: 'redis://a:1' }, { store: 'redis', quotaStateFile: '/tmp/q.json' }), [
    '/quotaStateFile: only used with store "memory": with Redis, quotas live in Redis and survive restarts',
  ])
  assert.throws(() => resolveOptions({ store: 'redis' }), /\/redis: required when store is "redis"/)
})
