import { strict as assert } from 'node:assert'
import { test } from 'node:test'
import { anthropic, gemini, openai } from '@llmproxy/protocols'
import { expectedTokens } from '../src/reservation.js'
import { MemoryStore } from '../src/store.js'
import { formatDuration, PeriodClock, periodOf } from '../src/windows.js'

test('formatDuration uses OpenAI’s reset format', () => {
  assert.equal(formatDuration(250), '250ms')
  assert.equal(formatDuration(1000), '1s')
  assert.equal(formatDuration(12_300), '13s')
  assert.equal(formatDuration(360_000), '6m0s')
  assert.equal(formatDuration(3_723_000), '1h2m3s')
})

test('expectedTokens: output cap (in the client API’s fields, or the default) times the answers asked for, plus bytes / 4', () => {
  assert.equal(expectedTokens(openai, { max_tokens: 100 }, '40', 256), 110)
  assert.equal(expectedTokens(openai, { max_completion_tokens: 7 }, '4', 256), 8)
  assert.equal(expectedTokens(openai, { max_output_tokens: 7 }, '0', 256), 7)
  assert.equal(expectedTokens(gemini, { generationConfig: { maxOutputTokens: 9 } }, '1', 256), 10)
  assert.equal(expectedTokens(openai, { max_tokens: 'x' }, '8', 256), 258)
  assert.equal(expectedTokens(openai, { a: 1 }, undefined, 0), Math.ceil(Buffer.byteLength('{"a":1}') / 4))
  // n answers of max_tokens each (and best_of candidates generated server-side), Gemini's candidateCount
  assert.equal(expectedTokens(openai, { n: 8, max_tokens: 100 }, '0', 256), 800)
  assert.equal(expectedTokens(openai, { n: 2, best_of: 5, max_tokens: 10 }, '0', 256), 50)
  assert.equal(expectedTokens(openai, { n: 3 }, '0', 256), 768)
  assert.equal(expectedTokens(gemini, { generationConfig: { maxOutputTokens: 9, candidateCount: 4 } }, '0', 256), 36)
  assert.equal(expectedTokens(anthropic, { max_tokens: 50, n: 8 }, '0', 256), 50)
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
  assert.deepEqual(await store.reserve('t:1', 60, 100, expireAt), { ok: true, value: 60 })
  assert.deepEqual(await store.reserve('t:1', 50, 100, expireAt), { ok: false, value: 60 })
  await store.add('t:1', -100, expireAt)
  assert.equal(await store.get('t:1'), 0)
  await store.add('t:2', 5, Date.now() - 1)
  assert.equal(await store.get('t:2'), 0, 'expired')
  assert.deepEqual(await store.acquire('c', 'a', 1), { ok: true, value: 1 })
  assert.deepEqual(await store.acquire('c', 'b', 1), { ok: false, value: 1 })
  await store.release('c')
  assert.equal(await store.inFlight('c'), 0)
  await store.add('q:2024-01:key:a', 5, expireAt)
  assert.deepEqual(store.quotaEntries(Date.now()), [['q:2024-01:key:a', 5, expireAt]])
})
