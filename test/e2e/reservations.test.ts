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
