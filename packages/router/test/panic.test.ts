// Issue 14, item 4: passive health must not refuse everyone. A pool's only upstream that fails every request
// for a while keeps receiving them (one failure counted per request, panic mode once it is ejected), and the
// first good answer after it recovers is served. A real gateway, a real mock upstream, the official client.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { expectedContent } from '@llmproxy/mock-upstream'
import OpenAI from 'openai'
import { type Cluster, generations, startCluster } from './failover-helpers.js'

let c: Cluster
before(async () => {
  c = await startCluster({
    mocks: { solo: {} },
    models: [{ name: 'm', upstreams: ['solo'], upstreamModel: 'pool-model' }],
    router: { retry: { attempts: 3, backoffMs: 20 } },
    // The cooldown outlasts the test: only panic mode can keep the upstream reachable.
    passive: { failuresToEject: 3, baseEjectionMs: 600_000, maxEjectionMs: 600_000 },
  })
})
after(() => c.close())

test("a pool's only upstream failing every request, then recovering: every request reaches it, the first good answer is served", async () => {
  const client = new OpenAI({ baseURL: `${c.url}/v1`, apiKey: 'unused', maxRetries: 0 })
  const ask = () => client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'Hello there' }] })
  const solo = c.mock('solo')
  const snapshot = () => c.app.upstreams.snapshot()[0]
  // A crashed inference server: the connection is reset before any answer (a committed 5xx answer would be
  // what the client gets, and says nothing here about health counting).
  solo.program(() => ({ fault: 'reset-before-headers' }))

  for (let i = 1; i <= 6; i++) {
    const before = generations(solo).length
    await assert.rejects(ask(), (err: unknown) => {
      assert.ok(err instanceof OpenAI.APIError, String(err))
      assert.equal(err.status, 502, `request ${i}`)
      return true
    })
    // Every attempt of every request went to the upstream: no 503 made up by the gateway without trying.
    assert.equal(generations(solo).length - before, 3, `request ${i}: attempts that reached the upstream`)
    const record = c.records.at(-1)
    assert.equal(record?.upstream, 'solo')
    assert.equal(record?.attempts, 3)
    // Three attempts of one request are one failure: the third failed request ejects it.
    assert.equal(snapshot()?.consecutiveFailures, i, `after request ${i}`)
    assert.equal(snapshot()?.state, i < 3 ? 'healthy' : 'ejected', `after request ${i}`)
  }
  // Ejected by the first attempt of request 3: its two retries and every attempt of requests 4 to 6 were
  // sent to it in panic mode.
  assert.equal(snapshot()?.panicPicks, 11)
  assert.equal(c.app.upstreams.pool(['solo']).panic, true)

  solo.program(null)
  const before = generations(solo).length
  const completion = await ask()
  assert.equal(completion.choices[0]?.message.content, expectedContent(5))
  assert.equal(generations(solo).length - before, 1)
  assert.equal(snapshot()?.state, 'healthy')
  assert.equal(snapshot()?.consecutiveFailures, 0)
  assert.equal(c.app.upstreams.pool(['solo']).panic, false)
  assert.equal(c.records.at(-1)?.status, 200)
})
