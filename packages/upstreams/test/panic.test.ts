import { strict as assert } from 'node:assert'
import { afterEach, beforeEach, describe, mock, test } from 'node:test'
import { type Pool, UpstreamRegistry, type UpstreamsLogger } from '../src/index.js'
import { config, lease, pickName } from './helpers.js'

const T0 = 1_700_000_000_000

interface LogLine {
  level: 'info' | 'warn'
  msg: string
  fields: Record<string, unknown>
}

function setup(names = ['a', 'b'], passive = { baseEjectionMs: 1000, maxEjectionMs: 8000 }) {
  const logs: LogLine[] = []
  const log: UpstreamsLogger = {
    info: (fields, msg) => logs.push({ level: 'info', msg, fields: fields as Record<string, unknown> }),
    warn: (fields, msg) => logs.push({ level: 'warn', msg, fields: fields as Record<string, unknown> }),
  }
  const registry = new UpstreamRegistry({ upstreams: names.map((name) => config(name)), passive }, log)
  const panicLogs = () => logs.filter((l) => l.msg.includes('panic mode'))
  const snap = (name: string) => registry.snapshot().find((s) => s.name === name)
  return { registry, logs, panicLogs, snap }
}

/** Ejects `name` through `pool` (excluding the others so that the failures land on it): three failed requests. */
function eject(pool: Pool, name: string): void {
  const others = new Set(pool.names.filter((n) => n !== name))
  for (let i = 0; i < 3; i++) {
    const l = lease(pool, others)
    assert.equal(l.upstream.name, name)
    l.release({ ok: false, kind: 'connect', request: {} })
  }
}

describe('panic mode (passive health)', () => {
  beforeEach(() => mock.timers.enable({ apis: ['Date'], now: T0 }))
  afterEach(() => mock.timers.reset())

  test('every upstream ejected: requests still get a lease, balanced by the strategy; one recovering ends the panic', () => {
    const { registry, panicLogs, snap } = setup()
    const pool = registry.pool(['a', 'b'])
    eject(pool, 'a')
    assert.equal(pool.panic, false)
    eject(pool, 'b')
    assert.equal(registry.get('b')?.state, 'ejected')
    assert.equal(pool.panic, true)
    assert.deepEqual(panicLogs(), [
      {
        level: 'warn',
        msg: 'pool in panic mode: no upstream in service, the strategy balances requests among them all',
        fields: { pool: ['a', 'b'], strategy: 'round-robin' },
      },
    ])

    // The pool's strategy (round-robin) balances the panic picks.
    assert.deepEqual(
      Array.from({ length: 4 }, () => {
        const l = lease(pool)
        l.release({ ok: false, kind: 'aborted' })
        return l.upstream.name
      }),
      ['a', 'b', 'a', 'b'],
    )
    // A failed panic pick leaves a ejected; b is next. Excluded upstreams are skipped.
    lease(pool).release({ ok: false, kind: 'status', status: 502 })
    assert.equal(registry.get('a')?.state, 'ejected')
    const onB = lease(pool)
    assert.equal(onB.upstream.name, 'b')
    assert.equal(lease(pool, new Set(['b'])).upstream.name, 'a')
    assert.equal(pool.tryAcquire(new Set(['a', 'b'])), null)
    assert.equal(pool.panic, true)
    assert.equal(panicLogs().length, 1, 'entering panic is logged once')

    // b answers: healthy again, the pool leaves panic mode, and a (still cooling down) is not picked any more.
    onB.release({ ok: true, ttftMs: 20 })
    assert.equal(registry.get('b')?.state, 'healthy')
    assert.equal(pool.panic, false)
    assert.deepEqual(
      panicLogs().map((l) => [l.level, l.msg, l.fields.pool]),
      [
        ['warn', 'pool in panic mode: no upstream in service, the strategy balances requests among them all', ['a', 'b']],
        ['info', 'pool out of panic mode', ['a', 'b']],
      ],
    )
    assert.deepEqual(
      Array.from({ length: 4 }, () => pickName(pool)),
      ['b', 'b', 'b', 'b'],
    )
    assert.equal(pool.tryAcquire(new Set(['b'])), null)
    assert.equal(snap('a')?.panicPicks, 4)
    assert.equal(snap('b')?.panicPicks, 3)
    // A failed panic pick neither extends nor doubles the cooldown: a is half-open 1 s after its ejection.
    assert.equal(snap('a')?.ejections, 1)
    mock.timers.tick(1000)
    assert.equal(snap('a')?.state, 'half-open')
  })

  test('pools nobody routes to any more (released, or retired by a reload) are not reported in panic mode', () => {
    const { registry, panicLogs } = setup(['a', 'b', 'c'])
    const released = registry.pool(['a', 'b'])
    const broken = registry.pool(['a', 'b', 'c'])
    const inForce = registry.pool(['a', 'b'], 'p2c')
    registry.release(released)
    registry.update([config('a'), config('b')])
    assert.deepEqual([released.retired, broken.retired, inForce.retired], [true, true, false])
    eject(inForce, 'a')
    eject(inForce, 'b')
    assert.deepEqual(
      panicLogs().map((l) => l.fields),
      [{ pool: ['a', 'b'], strategy: 'p2c' }],
    )
  })

  test('the only upstream of a pool: ejected, it still takes every request; a success makes it healthy', () => {
    const { registry, snap } = setup(['a'])
    const pool = registry.pool(['a'])
    eject(pool, 'a')
    assert.equal(pool.panic, true)
    for (let i = 0; i < 5; i++) lease(pool).release({ ok: false, kind: 'status', status: 503, request: {} })
    assert.equal(snap('a')?.state, 'ejected')
    assert.equal(snap('a')?.consecutiveFailures, 8)
    assert.equal(snap('a')?.panicPicks, 5)
    // A 4xx answer is an answer: the upstream is alive.
    lease(pool).release({ ok: false, kind: 'status', status: 400 })
    assert.equal(snap('a')?.state, 'healthy')
    assert.equal(snap('a')?.consecutiveFailures, 0)
    assert.equal(pool.panic, false)
  })

  test('half-open: the trial goes first; while it is in flight, panic picks go beside it without being trials', () => {
    const { registry, snap } = setup(['a'])
    const pool = registry.pool(['a'])
    eject(pool, 'a')
    assert.equal(pool.panic, true)
    // The cooldown has passed: in service again, so no panic, and the next request is the trial.
    mock.timers.tick(1000)
    assert.equal(pool.panic, false)
    const trial = lease(pool)
    assert.equal(snap('a')?.state, 'half-open')
    assert.equal(snap('a')?.panicPicks, 0)
    // The trial in flight: nothing is in service, so the next requests are panic picks beside it.
    assert.equal(pool.panic, true)
    const beside = lease(pool)
    assert.equal(snap('a')?.panicPicks, 1)
    // The panic pick failing is no failed trial: still half-open.
    beside.release({ ok: false, kind: 'connect', request: {} })
    assert.equal(snap('a')?.state, 'half-open')
    trial.release({ ok: false, kind: 'connect', request: {} })
    assert.equal(snap('a')?.state, 'ejected')
    assert.equal(snap('a')?.ejections, 2)
    // Ejected again, doubled cooldown; still served in panic mode meanwhile.
    mock.timers.tick(1999)
    lease(pool).release({ ok: true })
    assert.equal(snap('a')?.state, 'healthy')
  })

  test('draining upstreams are never picked, not even in panic mode', () => {
    const { registry } = setup(['a', 'b'])
    const pool = registry.pool(['a', 'b'])
    registry.drain('b')
    eject(pool, 'a')
    assert.equal(pool.panic, true)
    for (let i = 0; i < 5; i++) {
      const l = lease(pool)
      assert.equal(l.upstream.name, 'a')
      l.release({ ok: false, kind: 'connect', request: {} })
    }
    assert.equal(pool.tryAcquire(new Set(['a'])), null)
    // A pool of draining upstreams only is not in panic: it has nothing to pick.
    const drained = registry.pool(['b'])
    assert.equal(drained.tryAcquire(), null)
    assert.equal(drained.panic, false)
  })

  test('a 429 hold is no failure: a pool whose upstreams are only held is not in panic', () => {
    const { registry } = setup(['a', 'b'])
    const solo = registry.pool(['a'])
    lease(solo).release({ ok: false, kind: 'status', status: 429, retryAfterMs: 2000 })
    assert.equal(solo.tryAcquire(), null)
    assert.equal(solo.panic, false)
    assert.equal(solo.holdEnds(), T0 + 2000)
    // b ejected, a held: not in panic either (a is in service; the router waits its hold out).
    const pool = registry.pool(['a', 'b'])
    eject(registry.pool(['b']), 'b')
    assert.equal(pool.tryAcquire(), null)
    assert.equal(pool.panic, false)
    assert.equal(pool.holdEnds(), T0 + 2000)
  })

  test('in panic mode, an upstream held by a 429 is not picked: the strategy picks among the others', () => {
    const { registry } = setup(['a', 'b'])
    const pool = registry.pool(['a', 'b'])
    const early = lease(registry.pool(['b']))
    eject(registry.pool(['b']), 'b')
    eject(registry.pool(['a']), 'a')
    assert.equal(pool.panic, true)
    // A request begun on b before its ejection now answers 429: b is held.
    early.release({ ok: false, kind: 'status', status: 429, retryAfterMs: 500 })
    assert.equal(registry.get('b')?.state, 'ejected')
    assert.equal(lease(pool).upstream.name, 'a')
    assert.equal(pool.tryAcquire(new Set(['a'])), null)
    mock.timers.tick(500)
    assert.equal(lease(pool).upstream.name, 'b')
  })

  test('maxConcurrency holds in panic mode: busy, then the queue gets a panic lease when a slot frees', async () => {
    const registry = new UpstreamRegistry({ upstreams: [config('a', { maxConcurrency: 1 })], passive: { baseEjectionMs: 1000 } })
    const pool = registry.pool(['a'])
    eject(pool, 'a')
    const first = lease(pool)
    assert.equal(pool.tryAcquire(), 'busy')
    const waiting = pool.acquire()
    first.release({ ok: false, kind: 'connect', request: {} })
    const second = await waiting
    assert.equal(second?.upstream.name, 'a')
    assert.equal(registry.snapshot()[0]?.panicPicks, 2)
    second?.release({ ok: true })
    assert.equal(registry.get('a')?.state, 'healthy')
    registry.close()
  })
})
