// Token reservations count every answer a request asks for: `n × max_tokens` (hardening issue, item 4).
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { startGatewayWithMock, type TestGateway } from './helpers.js'
import { errorOf, postJson } from './http-helpers.js'

const KEY = 'sk-e2e-reservations-5b2c9e1f70'
let gateway: TestGateway

before(async () => {
  gateway = await startGatewayWithMock({
    auth: { keys: [{ id: 'quota-key', key: KEY, quota: { tokens: 1000, per: 'day' } }] },
    rateLimit: {},
  })
  // Slow answers, so that all ten requests are in flight together and reservations decide.
  gateway.mock.setDefaults({ tokens: 5, ttftMs: 300 })
})

after(() => gateway.close())

test('a 1,000-token quota admits one of ten concurrent requests asking for n: 8 × max_tokens: 100', async () => {
  const body = JSON.stringify({ model: 'gpt-test', n: 8, max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] })
  const results = await Promise.all(
    Array.from({ length: 10 }, () => postJson(`${gateway.url}/v1/chat/completions`, body, { authorization: `Bearer ${KEY}` })),
  )
  const admitted = results.filter((r) => r.status === 200)
  const refused = results.filter((r) => r.status === 429)
  assert.equal(admitted.length, 1, `statuses: ${results.map((r) => r.status).join(',')}`)
  assert.equal(refused.length, 9)
  for (const r of refused) assert.equal(errorOf(r).code, 'quota_exceeded')
})
