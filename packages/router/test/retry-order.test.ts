// Issue 14, items 1 and 2: a single-upstream model with one fallback model, as a new user configures it. A
// transient error is retried on the model the client asked for before the model changes; a persistent 429 is
// backed off, then the fallback answers; the 429 reaches the client only when there is nowhere left.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { expectedContent, type MockUpstream } from '@llmproxy/mock-upstream'
import { type Cluster, chatBody, errorOf, generations, readAnswer, send, startCluster } from './failover-helpers.js'
import { eventually } from './helpers.js'

function firstN(mock: MockUpstream, n: number, behavior: Parameters<MockUpstream['setDefaults']>[0]): void {
  let seen = 0
  mock.program(() => (seen++ < n ? behavior : undefined))
}

describe('one upstream per model, one fallback model (retry.attempts 3)', () => {
  let c: Cluster
  before(async () => {
    c = await startCluster({
      mocks: { a: {}, b: {} },
      models: [
        { name: 'm', upstreams: ['a'], upstreamModel: 'm-model', fallbacks: ['f'] },
        { name: 'f', upstreams: ['b'], upstreamModel: 'f-model' },
      ],
      router: { retry: { attempts: 3, backoffMs: 50, maxRetryAfterMs: 5000 } },
    })
  })
  after(() => c.close())

  for (const stream of [false, true]) {
    test(`a single 500, then healthy: answered by the model asked for, after a backoff (${stream ? 'stream' : 'JSON'})`, async () => {
      c.reset()
      firstN(c.mock('a'), 1, { status: 500 })
      const res = await send(c.url, chatBody('m', { stream }))
      assert.equal(res.status, 200, res.text)
      const answer = readAnswer(res)
      assert.equal(answer.model, 'm-model', 'not the fallback: a transient error deserves a retry of the requested model')
      assert.equal(answer.content, expectedContent(5))
      assert.equal(generations(c.mock('b')).length, 0)
      const seen = generations(c.mock('a'))
      assert.equal(seen.length, 2)
      await eventually(() => c.records.length === 1, 2000, 'usage record')
      assert.equal(c.records[0]?.attempts, 2)
    })
  }

  test('a persistent 429 without Retry-After: backed off on the model asked for, then the fallback answers', async () => {
    c.reset()
    c.mock('a').program(() => ({ status: 429 }))
    const res = await send(c.url, chatBody('m'))
    assert.equal(res.status, 200, res.text)
    assert.equal(readAnswer(res).model, 'f-model')
    const tries = generations(c.mock('a')).map((r) => r.receivedAt)
    assert.equal(tries.length, 2, 'retried once (two attempts of three), the last one kept for the fallback')
    assert.ok((tries[1] as number) - (tries[0] as number) >= 500, 'the retry waited for the 429 hold, not a tight loop')
    assert.equal(generations(c.mock('b')).length, 1)
  })

  test('a 429 with a Retry-After longer than maxRetryAfterMs: the fallback at once', async () => {
    c.reset()
    c.mock('a').program(() => ({ status: 429, retryAfter: 30 }))
    const res = await send(c.url, chatBody('m'))
    assert.equal(res.status, 200, res.text)
    assert.equal(readAnswer(res).model, 'f-model')
    assert.equal(generations(c.mock('a')).length, 1)
    assert.ok(res.ms < 1000, `took ${Math.round(res.ms)} ms`)
  })

  test('everything rate limited: the client gets the 429, with a Retry-After', async () => {
    c.reset()
    c.mock('a').program(() => ({ status: 429, retryAfter: 30 }))
    c.mock('b').program(() => ({ status: 429, retryAfter: 30 }))
    const res = await send(c.url, chatBody('m'))
    assert.equal(res.status, 429, res.text)
    assert.equal(errorOf(res).type, 'rate_limit_error')
    assert.ok(Number(res.headers['retry-after']) >= 1)
  })
})

describe('a fallback model on the same upstream (a hosted API that limits each model on its own)', () => {
  let c: Cluster
  before(async () => {
    c = await startCluster({
      mocks: { api: {} },
      models: [
        { name: 'big', upstreams: ['api'], upstreamModel: 'big-model', fallbacks: ['small'] },
        { name: 'small', upstreams: ['api'], upstreamModel: 'small-model' },
      ],
      router: { retry: { attempts: 3, backoffMs: 50, maxRetryAfterMs: 5000 } },
    })
  })
  after(() => c.close())

  test('a persistent 429 on the model asked for: the fallback model answers from the same upstream', async () => {
    c.reset()
    const api = c.mock('api')
    api.program((req) => ((req.body as { model?: string }).model === 'big-model' ? { status: 429 } : undefined))
    const res = await send(c.url, chatBody('big'))
    assert.equal(res.status, 200, res.text)
    assert.equal(readAnswer(res).model, 'small-model')
    const asked = generations(api).map((r) => (r.body as { model: string }).model)
    assert.deepEqual(asked, ['big-model', 'big-model', 'small-model'])
    // The hold is the model's: a request for the fallback model itself is not held back by it.
    const direct = await send(c.url, chatBody('small'))
    assert.equal(direct.status, 200, direct.text)
    assert.ok(direct.ms < 500, `the other model waited ${Math.round(direct.ms)} ms`)
  })

  test('both models limited: the client gets the 429 (nowhere left)', async () => {
    c.reset()
    c.mock('api').program(() => ({ status: 429, retryAfter: 30 }))
    const res = await send(c.url, chatBody('big'))
    assert.equal(res.status, 429, res.text)
  })
})

describe('never more than 4 attempts on one upstream within 3 s', () => {
  test('a single-upstream model, six attempts allowed, every one a 500', async () => {
    const c = await startCluster({
      mocks: { a: { behavior: { status: 500 } } },
      models: [{ name: 'm', upstreams: ['a'] }],
      router: { retry: { attempts: 6, backoffMs: 10, budgetMs: 10_000 } },
    })
    try {
      const res = await send(c.url, chatBody('m'))
      assert.equal(res.status, 500, 'the last upstream answer is passed on')
      const times = generations(c.mock('a')).map((r) => r.receivedAt)
      assert.equal(times.length, 6)
      for (let i = 4; i < times.length; i++) {
        assert.ok((times[i] as number) - (times[i - 4] as number) >= 2950, `attempts at ${times.map(Math.round).join(', ')}`)
      }
    } finally {
      await c.close()
    }
  })
})
