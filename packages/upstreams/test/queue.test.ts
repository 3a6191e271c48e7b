import { strict as assert } from 'node:assert'
import { describe, test } from 'node:test'
import { LlmProxyError } from '@llmproxy/core'
import { type Lease, UpstreamRegistry } from '../src/index.js'
import { config, lease } from './helpers.js'

function setup(queue: { maxWaiting?: number; timeoutMs?: number } = {}) {
  const registry = new UpstreamRegistry({
    upstreams: [config('a', { maxConcurrency: 1 }), config('b', { maxConcurrency: 2 })],
    queue,
  })
  return { registry, solo: registry.pool(['a']), both: registry.pool(['a', 'b']) }
}

function isBusyError(err: unknown): boolean {
  return err instanceof LlmProxyError && err.statusCode === 503 && err.code === 'llmproxy_upstreams_busy' && err.type === 'upstream_error'
}

describe('maxConcurrency and the queue', () => {
  test("tryAcquire says 'busy' when every candidate is at maxConcurrency", () => {
    const { both, registry } = setup()
    const held = [lease(both), lease(both), lease(both)]
    assert.deepEqual(held.map((l) => l.upstream.name).sort(), ['a', 'b', 'b'])
    assert.equal(both.tryAcquire(), 'busy')
    // Excluding the busy ones leaves nothing: null, not busy.
    assert.equal(both.tryAcquire(new Set(['a', 'b'])), null)
    held[0]?.release({ ok: true })
    assert.notEqual(both.tryAcquire(), 'busy')
    assert.equal(registry.get('b')?.maxConcurrency, 2)
  })

  test('waiters are served in FIFO order as leases are released', async () => {
    const { solo } = setup()
    const first = lease(solo)
    const order: number[] = []
    const waits = [1, 2, 3].map((n) =>
      solo.acquire().then((l) => {
        order.push(n)
        return l
      }),
    )
    assert.equal(solo.waiting, 3)
    first.release({ ok: true })
    const second = (await waits[0]) as Lease
    assert.equal(solo.waiting, 2)
    second.release({ ok: true })
    const third = (await waits[1]) as Lease
    third.release({ ok: true })
    const fourth = (await waits[2]) as Lease
    assert.equal(fourth.upstream.name, 'a')
    assert.deepEqual(order, [1, 2, 3])
    assert.equal(solo.waiting, 0)
    fourth.release({ ok: true })
  })

  test('a slot freed by another pool wakes the waiter', async () => {
    const { solo, both } = setup()
    const held = lease(solo)
    const waiting = solo.acquire()
    assert.equal(solo.waiting, 1)
    // A lease taken in another pool holding the same upstream is released: the waiter gets the slot.
    held.release({ ok: true })
    const got = await waiting
    assert.equal(got?.upstream.name, 'a')
    assert.equal(both.tryAcquire(new Set(['b'])), 'busy')
    got?.release({ ok: true })
  })

  test('the queue is bounded: the one too many gets a 503 at once', async () => {
    const { solo } = setup({ maxWaiting: 2, timeoutMs: 60_000 })
    const held = lease(solo)
    const waits = [solo.acquire(), solo.acquire()]
    await assert.rejects(solo.acquire(), isBusyError)
    assert.equal(solo.waiting, 2)
    held.release({ ok: true })
    const next = await waits[0]
    next?.release({ ok: true })
    ;(await waits[1])?.release({ ok: true })
  })

  test('a waiter times out with a 503 and leaves the queue', async () => {
    const { solo, registry } = setup({ timeoutMs: 50 })
    const held = lease(solo)
    const started = Date.now()
    await assert.rejects(solo.acquire(), (err: unknown) => {
      assert.ok(isBusyError(err))
      assert.equal((err as LlmProxyError).headers?.['retry-after'], '1')
      return true
    })
    assert.ok(Date.now() - started >= 45)
    assert.equal(solo.waiting, 0)
    held.release({ ok: true })
    assert.equal(registry.get('a')?.inFlight, 0)
  })

  test('an aborted signal leaves the queue and never gets a lease', async () => {
    const { solo, registry } = setup({ timeoutMs: 60_000 })
    const held = lease(solo)
    const controller = new AbortController()
    const aborted = solo.acquire(undefined, controller.signal)
    const next = solo.acquire()
    assert.equal(solo.waiting, 2)
    controller.abort()
    await assert.rejects(aborted, { name: 'AbortError' })
    assert.equal(solo.waiting, 1)
    held.release({ ok: true })
    const got = await next
    assert.equal(registry.get('a')?.inFlight, 1)
    got?.release({ ok: true })
    await assert.rejects(solo.acquire(undefined, AbortSignal.abort()), { name: 'AbortError' })
  })

  test('acquire answers at once when not busy, and null when nothing is available', async () => {
    const { solo, registry } = setup()
    const got = await solo.acquire()
    assert.equal(got?.upstream.name, 'a')
    got?.release({ ok: true })
    registry.drain('a')
    assert.equal(await solo.acquire(), null)
  })

  test('waiters get null when the busy upstream becomes unavailable', async () => {
    const { solo, registry } = setup({ timeoutMs: 60_000 })
    const held = lease(solo)
    const waiting = solo.acquire()
    registry.drain('a')
    assert.equal(await waiting, null)
    held.release({ ok: true })
  })

  test('a reload removing an upstream retires its pools: their waiters get null at once, for the caller to route again', async () => {
    const { registry, both } = setup({ timeoutMs: 60_000 })
    const held = [lease(both), lease(both), lease(both)]
    const waiting = both.acquire()
    assert.equal(both.retired, false)
    registry.update([config('b', { maxConcurrency: 2 }), config('c')])
    assert.equal(both.retired, true)
    assert.equal(await waiting, null)
    assert.equal(both.waiting, 0)
    // It queues nobody any more, and still leases what it has left to requests that started on it.
    assert.equal(both.tryAcquire(), 'busy')
    assert.equal(await both.acquire(), null)
    for (const l of held) l.release({ ok: true })
    assert.equal(lease(both).upstream.name, 'b')
    // A pool all of whose upstreams stayed is not retired.
    assert.equal(registry.pool(['b']).retired, false)
  })

  test('a pool goes when every pool() that returned it is released: retired, forgotten; its leases in flight end as usual', async () => {
    const { registry, both } = setup({ timeoutMs: 60_000 })
    assert.equal(registry.pool(['a', 'b']), both)
    const held = [lease(both), lease(both), lease(both)]
    const waiting = both.acquire()
    registry.release(both)
    assert.equal(both.retired, false, 'held by the other pool() still')
    registry.release(both)
    assert.equal(both.retired, true)
    assert.equal(await waiting, null)
    // pool() makes a new one; a slot a lease of the old one frees is the new one's to hand out.
    const fresh = registry.pool(['a', 'b'])
    assert.notEqual(fresh, both)
    const next = fresh.acquire()
    held[0]?.release({ ok: true })
    const served = await next
    assert.equal(served?.upstream.name, held[0]?.upstream.name)
    // The old one still leases its upstreams, to requests that started on it (a retry).
    held[1]?.release({ ok: true })
    const retry = lease(both)
    for (const l of [retry, served, held[2]]) l?.release({ ok: true })
  })

  test('close rejects the waiters', async () => {
    const { solo, registry } = setup({ timeoutMs: 60_000 })
    const held = lease(solo)
    const waiting = solo.acquire()
    registry.close()
    await assert.rejects(waiting, { code: 'llmproxy_shutting_down' })
    held.release({ ok: true })
  })
})
