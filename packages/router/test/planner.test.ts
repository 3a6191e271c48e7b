import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { errors } from '@llmproxy/core'
import { type Lease, UpstreamRegistry } from '@llmproxy/upstreams'
import { ModelTable } from '../src/models.js'
import type { Retry, RetryOn } from '../src/options.js'
import { AttemptPlanner, type Clock, type Plan } from '../src/planner.js'

/** A clock the test moves by hand; epoch time is real (pools keep Retry-After holds in Date.now() terms). */
class TestClock implements Clock {
  at = 0
  chance = 0.5
  now = () => this.at
  wall = () => Date.now()
  random = () => this.chance
}

const RETRY_DEFAULTS: Retry = {
  attempts: 3,
  on: ['connect', 'timeout', 'stall', 429, 500, 502, 503, 504],
  budgetMs: 60_000,
  backoffMs: 100,
  maxRetryAfterMs: 5000,
}

function setup(retry: Partial<Retry> = {}) {
  const registry = new UpstreamRegistry({
    upstreams: ['a1', 'a2', 'b1', 'c1'].map((name) => ({
      name,
      url: `http://127.0.0.1:1/${name}`,
      protocol: 'openai' as const,
      weight: 1,
    })),
    // Ejections out of the way: the planner's own logic is what is tested.
    passive: { failuresToEject: 1000 },
  })
  const table = ModelTable.build(
    [
      { name: 'a', upstreams: ['a1', 'a2'], fallbacks: ['b', 'c'] },
      { name: 'b', upstreams: ['b1'] },
      { name: 'c', upstreams: ['c1'] },
    ],
    registry,
  )
  const settings = { ...RETRY_DEFAULTS, ...retry }
  const clock = new TestClock()
  const route = table.get('a')
  assert.ok(route)
  const planner = new AttemptPlanner(route, 'a', settings, new Set<RetryOn>(settings.on), 0, clock)
  return { planner, clock, registry }
}

function attempt(plan: Plan): Lease {
  if (plan.type !== 'attempt') assert.fail(`expected an attempt, got ${plan.type}${plan.type === 'fail' ? `: ${plan.error.message}` : ''}`)
  return (plan as { lease: Lease }).lease
}

/** Fails the attempt the way the router does: the lease is released, the planner told. */
function fail(planner: AttemptPlanner, lease: Lease, status = 502, retryAfterMs?: number): void {
  lease.release({ ok: false, kind: 'status', status, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) })
  planner.failed(errors.upstreamFailed(`answered ${status}`), status === 429 ? (retryAfterMs ?? 0) : undefined)
}

test('ModelTable.build: when the registry refuses a route (an unknown strategy), the pools taken for the others go back', () => {
  const { registry } = setup()
  const [kept] = ModelTable.build([{ name: 'b', upstreams: ['b1'] }], registry).pools
  assert.ok(kept)
  assert.throws(
    () =>
      ModelTable.build(
        [
          { name: 'b', upstreams: ['b1'] },
          { name: 'c', upstreams: ['c1'], strategy: 'nope' },
        ],
        registry,
      ),
    /Unknown balancing strategy "nope"/,
  )
  // Held by the tables of setup() and above only: given back by both, it is retired.
  registry.release(kept)
  assert.equal(kept.retired, false)
  registry.release(kept)
  assert.equal(kept.retired, true)
})

describe('AttemptPlanner', () => {
  test('the pool first, each upstream once, then the fallbacks in order, when no attempt is left to spare', () => {
    // 4 attempts: the pool's two, then one per fallback.
    const { planner } = setup({ attempts: 4 })
    const order: string[] = []
    for (let i = 0; i < 4; i++) {
      const lease = attempt(planner.next())
      order.push(lease.upstream.name)
      fail(planner, lease)
    }
    assert.deepEqual(order.slice(0, 2).sort(), ['a1', 'a2'])
    assert.deepEqual(order.slice(2), ['b1', 'c1'])
    assert.equal(planner.attempts, 4)
  })

  test('attempts to spare: the requested model’s pool again after a backoff, before any fallback', () => {
    const { planner, clock } = setup({ attempts: 5, backoffMs: 100 })
    fail(planner, attempt(planner.next()))
    fail(planner, attempt(planner.next()))
    clock.chance = 0.5
    assert.deepEqual(planner.next(), { type: 'wait', delayMs: 50 })
    assert.equal(planner.route.name, 'a')
    clock.at = 50
    const retried = attempt(planner.next())
    assert.ok(['a1', 'a2'].includes(retried.upstream.name), 'the same model, after the backoff')
    fail(planner, retried)
    // 3 attempts used, 2 fallbacks untried, 5 attempts in all: none to spare any more.
    const next = attempt(planner.next())
    assert.equal(planner.route.name, 'b')
    assert.equal(next.upstream.name, 'b1')
  })

  test('the requested model has every attempt but one per fallback, its rounds backing off with doubling jitter', () => {
    const { planner, clock } = setup({ attempts: 8, backoffMs: 100 })
    clock.chance = 0.5
    const names: string[] = []
    const waits: number[] = []
    for (;;) {
      const plan = planner.next()
      if (plan.type === 'fail') break
      if (plan.type === 'wait') {
        waits.push(plan.delayMs)
        clock.at += plan.delayMs
        continue
      }
      const lease = attempt(plan)
      names.push(lease.upstream.name)
      fail(planner, lease)
    }
    assert.equal(names.length, 8)
    assert.ok(
      names.slice(0, 6).every((name) => name.startsWith('a')),
      names.join(' '),
    )
    assert.deepEqual(names.slice(6), ['b1', 'c1'])
    assert.deepEqual(waits.slice(0, 2), [50, 100], 'full jitter, doubling')
  })

  test('never a fifth attempt on one upstream within 3 s', () => {
    const registry = new UpstreamRegistry({
      upstreams: [{ name: 'x', url: 'http://127.0.0.1:1', protocol: 'openai', weight: 1 }],
      passive: { failuresToEject: 1000 },
    })
    const route = ModelTable.build([{ name: 'm', upstreams: ['x'] }], registry).get('m')
    assert.ok(route)
    const clock = new TestClock()
    clock.chance = 0
    const planner = new AttemptPlanner(route, 'm', { ...RETRY_DEFAULTS, attempts: 10 }, new Set<RetryOn>(RETRY_DEFAULTS.on), 0, clock)
    const times: number[] = []
    while (times.length < 6) {
      const plan = planner.next()
      if (plan.type === 'wait') {
        clock.at += plan.delayMs
        continue
      }
      times.push(clock.at)
      fail(planner, attempt(plan))
    }
    for (let i = 4; i < times.length; i++) {
      assert.ok((times[i] as number) - (times[i - 4] as number) >= 3000, `attempts at ${times.join(', ')} ms`)
    }
  })

  test('the attempt limit ends the request with the last attempt’s error', () => {
    const { planner } = setup({ attempts: 2 })
    fail(planner, attempt(planner.next()), 500)
    fail(planner, attempt(planner.next()), 503)
    const plan = planner.next()
    assert.equal(plan.type, 'fail')
    assert.equal((plan as { error: Error }).error.message, 'answered 503')
    assert.equal(planner.canRetry(), false)
  })

  test('the budget: no attempt starts, and no wait is planned, past retry.budgetMs', () => {
    const { planner, clock } = setup({ attempts: 10, budgetMs: 1000 })
    fail(planner, attempt(planner.next()))
    clock.at = 1000
    assert.equal(planner.next().type, 'fail')

    const second = setup({ attempts: 10, budgetMs: 1000, backoffMs: 2000 })
    for (let i = 0; i < 4; i++) fail(second.planner, attempt(second.planner.next()))
    second.clock.at = 900
    second.clock.chance = 0.5
    const plan = second.planner.next()
    assert.equal(plan.type, 'fail', 'a backoff of 1000 ms would end past the budget')

    // A slot the pool's queue hands over after the budget: no attempt, and the slot goes back.
    const third = setup({ attempts: 10, budgetMs: 1000 })
    fail(third.planner, attempt(third.planner.next()))
    third.clock.at = 1000
    const handed = third.registry.pool(['a1', 'a2']).tryAcquire()
    assert.ok(handed !== null && handed !== 'busy')
    assert.equal(third.planner.afterQueue(handed).type, 'fail')
    assert.equal(third.registry.get(handed.upstream.name)?.inFlight, 0)
  })

  test('upstreams held back by a 429 are waited for (up to maxRetryAfterMs), then retried', () => {
    const { planner } = setup({ attempts: 10, maxRetryAfterMs: 5000 })
    for (let i = 0; i < 2; i++) fail(planner, attempt(planner.next()), 429, 200)
    const plan = planner.next()
    assert.equal(planner.route.name, 'a', 'the requested model is waited for before a fallback')
    assert.equal(plan.type, 'wait')
    const delay = (plan as { delayMs: number }).delayMs
    assert.ok(delay >= 200 && delay <= 210, `waits the Retry-After out (+slack): ${delay}`)
  })

  test('a Retry-After longer than maxRetryAfterMs goes back to the client as a 429', () => {
    const { planner } = setup({ attempts: 10, maxRetryAfterMs: 1000 })
    for (let i = 0; i < 4; i++) {
      const lease = attempt(planner.next())
      lease.release({ ok: false, kind: 'status', status: 429, retryAfterMs: 3000 })
      planner.failed(errors.rateLimited('held', 'llmproxy_upstream_rate_limited', { 'retry-after': '3' }), 3000)
    }
    const plan = planner.next()
    assert.equal(plan.type, 'fail')
    assert.equal((plan as { error: { statusCode: number } }).error.statusCode, 429)
  })

  test('nothing available and nothing held: 503 at once', () => {
    const { planner, registry } = setup()
    for (const name of ['a1', 'a2', 'b1', 'c1']) registry.drain(name)
    const plan = planner.next()
    assert.equal(plan.type, 'fail')
    assert.equal((plan as { error: { statusCode: number; message: string } }).error.statusCode, 503)
    assert.match((plan as { error: { message: string } }).error.message, /No healthy upstream for model "a"/)
  })

  test('advance(): a context-length 400 moves on to the next fallback model', () => {
    const { planner } = setup()
    const lease = attempt(planner.next())
    assert.equal(planner.route.name, 'a')
    assert.equal(planner.hasFallbackLeft(), true)
    fail(planner, lease, 400)
    const next = attempt(planner.advance())
    assert.equal(planner.route.name, 'b')
    assert.equal(next.upstream.name, 'b1')
    fail(planner, next, 400)
    attempt(planner.advance())
    assert.equal(planner.route.name, 'c')
    assert.equal(planner.hasFallbackLeft(), false)
  })

  test('a 404 (the model not served there): the other upstreams, then the fallbacks, never a new round', () => {
    // Attempts to spare: a failure would give the requested model's pool another round first.
    const { planner } = setup({ attempts: 5 })
    const order: string[] = []
    while (order.length === 0 || planner.canMoveOn()) {
      const lease = attempt(planner.next())
      order.push(lease.upstream.name)
      lease.release({ ok: false, kind: 'status', status: 404 })
      planner.notServed(errors.upstreamFailed('answered 404'))
    }
    assert.deepEqual(order.slice(0, 2).sort(), ['a1', 'a2'])
    assert.deepEqual(order.slice(2), ['b1', 'c1'])
    // Nowhere left: the caller relays the last 404. Had it moved on, no round would have started either.
    assert.equal(planner.next().type, 'fail')
    // A fallback whose upstreams are all out is nowhere to go.
    const fresh = setup({ attempts: 5 })
    for (const name of ['b1', 'c1']) fresh.registry.drain(name)
    for (let i = 0; i < 2; i++) {
      attempt(fresh.planner.next()).release({ ok: false, kind: 'status', status: 404 })
      fresh.planner.notServed(errors.upstreamFailed('answered 404'))
    }
    assert.equal(fresh.planner.canMoveOn(), false)
  })

  test('retryable(): what retry.on lists, connection losses as connect failures', () => {
    const { planner } = setup({ on: ['connect', 429, 503] })
    assert.equal(planner.retryable('status', 429), true)
    assert.equal(planner.retryable('status', 500), false)
    assert.equal(planner.retryable('connect'), true)
    assert.equal(planner.retryable('error'), true)
    assert.equal(planner.retryable('timeout'), false)
    assert.equal(planner.retryable('stall'), false)
  })

  test('every upstream at its concurrency limit: queue', () => {
    const registry = new UpstreamRegistry({
      upstreams: [{ name: 'x', url: 'http://127.0.0.1:1', protocol: 'openai', weight: 1, maxConcurrency: 1 }],
    })
    const route = ModelTable.build([{ name: 'm', upstreams: ['x'] }], registry).get('m')
    assert.ok(route)
    const busy = registry.pool(['x']).tryAcquire()
    assert.ok(busy !== null && busy !== 'busy')
    const planner = new AttemptPlanner(route, 'm', RETRY_DEFAULTS, new Set<RetryOn>(RETRY_DEFAULTS.on), 0, new TestClock())
    assert.deepEqual(planner.next(), { type: 'queue' })
    busy.release({ ok: true })
    assert.equal(attempt(planner.afterQueue(route.pool.tryAcquire(planner.tried) as Lease)).upstream.name, 'x')
  })
})
