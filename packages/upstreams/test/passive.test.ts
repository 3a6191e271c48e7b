import { strict as assert } from 'node:assert'
import { afterEach, beforeEach, describe, mock, test } from 'node:test'
import { UpstreamRegistry, type UpstreamSnapshot, type UpstreamState } from '../src/index.js'
import { config, lease, pickName } from './helpers.js'

const T0 = 1_700_000_000_000

interface Transition {
  name: string
  from: UpstreamState
  to: UpstreamState
  reason: string
}

function setup(passive: { failuresToEject?: number; baseEjectionMs?: number; maxEjectionMs?: number } = {}) {
  const registry = new UpstreamRegistry({ upstreams: [config('a'), config('b')], passive })
  const transitions: Transition[] = []
  registry.on('state', (snapshot: UpstreamSnapshot, from: UpstreamState, reason: string) => {
    transitions.push({ name: snapshot.name, from, to: snapshot.state, reason })
  })
  return { registry, transitions, solo: registry.pool(['a']), both: registry.pool(['a', 'b']) }
}

describe('passive health', () => {
  beforeEach(() => mock.timers.enable({ apis: ['Date'], now: T0 }))
  afterEach(() => mock.timers.reset())

  test('ejects after N consecutive failures and skips the ejected upstream', () => {
    const { registry, solo, both, transitions } = setup()
    lease(solo).release({ ok: false, kind: 'connect' })
    lease(solo).release({ ok: false, kind: 'status', status: 503 })
    assert.equal(registry.get('a')?.state, 'healthy')
    lease(solo).release({ ok: false, kind: 'timeout' })
    assert.equal(registry.get('a')?.state, 'ejected')
    // b is in service: a is not picked, even with b excluded (no panic mode).
    assert.equal(both.tryAcquire(new Set(['b'])), null)
    assert.equal(both.panic, false)
    assert.deepEqual(
      Array.from({ length: 4 }, () => pickName(both)),
      ['b', 'b', 'b', 'b'],
    )
    const snap = registry.snapshot().find((s) => s.name === 'a')
    assert.equal(snap?.ejections, 1)
    assert.equal(snap?.consecutiveFailures, 3)
    assert.equal(snap?.recentErrors, 3)
    assert.equal(snap?.lastError, 'timeout')
    assert.equal(transitions.length, 1)
    assert.deepEqual({ ...transitions[0], reason: undefined }, { name: 'a', from: 'healthy', to: 'ejected', reason: undefined })
    assert.match(transitions[0]?.reason ?? '', /3 consecutive failures/)
  })

  test('a success resets the count; 4xx and aborts are not failures', () => {
    const { registry, solo } = setup()
    lease(solo).release({ ok: false, kind: 'stall' })
    lease(solo).release({ ok: false, kind: 'error' })
    lease(solo).release({ ok: true })
    assert.equal(registry.get('a')?.state, 'healthy')
    lease(solo).release({ ok: false, kind: 'status', status: 500 })
    lease(solo).release({ ok: false, kind: 'status', status: 400 })
    lease(solo).release({ ok: false, kind: 'status', status: 404 })
    lease(solo).release({ ok: false, kind: 'aborted' })
    lease(solo).release({ ok: false, status: 502 })
    assert.equal(registry.get('a')?.state, 'healthy')
    assert.equal(registry.snapshot()[0]?.consecutiveFailures, 2)
    lease(solo).release({ ok: false, kind: 'connect' })
    assert.equal(registry.get('a')?.state, 'ejected')
  })

  test('one failure per request: a request failing three times on the only upstream of its pool does not eject it', () => {
    const { registry, solo } = setup()
    // What the router does: every attempt of one client request is released with the same `request` token.
    const first = {}
    for (let i = 0; i < 3; i++) lease(solo).release({ ok: false, kind: 'status', status: 503, request: first })
    let snap = registry.snapshot()[0]
    assert.equal(snap?.state, 'healthy')
    assert.equal(snap?.consecutiveFailures, 1)
    assert.equal(snap?.recentErrors, 1)
    assert.equal(snap?.lastError, 'status 503')
    // Interleaved with other requests, a repeat still counts nothing; three different requests eject.
    const second = {}
    lease(solo).release({ ok: false, kind: 'connect', request: second })
    lease(solo).release({ ok: false, kind: 'timeout', request: first })
    lease(solo).release({ ok: false, kind: 'timeout', request: second })
    assert.equal(registry.get('a')?.state, 'healthy')
    assert.equal(registry.snapshot()[0]?.consecutiveFailures, 2)
    lease(solo).release({ ok: false, kind: 'stall', request: {} })
    snap = registry.snapshot()[0]
    assert.equal(snap?.state, 'ejected')
    assert.equal(snap?.consecutiveFailures, 3)
    assert.equal(snap?.recentErrors, 3)
    assert.equal(snap?.ejections, 1)
  })

  test('three separate failing requests eject; attempts without a request token each count', () => {
    const { registry, solo } = setup()
    for (let i = 0; i < 3; i++) lease(solo).release({ ok: false, kind: 'connect', request: {} })
    assert.equal(registry.get('a')?.state, 'ejected')

    const other = setup()
    for (let i = 0; i < 3; i++) lease(other.solo).release({ ok: false, kind: 'connect' })
    assert.equal(other.registry.get('a')?.state, 'ejected')
  })

  test('a success ends the streak: the same request failing again afterwards counts again', () => {
    const { registry, solo } = setup({ failuresToEject: 2 })
    const request = {}
    lease(solo).release({ ok: false, kind: 'connect', request })
    lease(solo).release({ ok: true })
    lease(solo).release({ ok: false, kind: 'connect', request })
    assert.equal(registry.snapshot()[0]?.consecutiveFailures, 1)
    lease(solo).release({ ok: false, kind: 'connect', request })
    assert.equal(registry.get('a')?.state, 'healthy')
    lease(solo).release({ ok: false, kind: 'connect', request: {} })
    assert.equal(registry.get('a')?.state, 'ejected')
  })

  test('a half-open trial that fails re-ejects, even when its request had already failed there', () => {
    const { registry, both } = setup({ baseEjectionMs: 1000 })
    const notB = new Set(['b'])
    const request = {}
    lease(both, notB).release({ ok: false, kind: 'connect', request })
    lease(both, notB).release({ ok: false, kind: 'connect', request: {} })
    lease(both, notB).release({ ok: false, kind: 'connect', request: {} })
    assert.equal(registry.get('a')?.state, 'ejected')
    mock.timers.tick(1000)
    const trial = lease(both, notB)
    assert.equal(registry.get('a')?.state, 'half-open')
    trial.release({ ok: false, kind: 'connect', request })
    assert.equal(registry.get('a')?.state, 'ejected')
    assert.equal(registry.snapshot()[0]?.ejections, 2)
  })

  test('cooldown, then one half-open trial; failure re-ejects with a doubled cooldown, success recovers', () => {
    const { registry, both, transitions } = setup({ baseEjectionMs: 1000, maxEjectionMs: 3000 })
    // a, in a pool whose other upstream is in service but excluded: a is never picked in panic mode.
    const notB = new Set(['b'])
    for (let i = 0; i < 3; i++) lease(both, notB).release({ ok: false, kind: 'connect' })
    mock.timers.tick(999)
    assert.equal(both.tryAcquire(notB), null)
    mock.timers.tick(1)
    const trial = lease(both, notB)
    assert.equal(registry.get('a')?.state, 'half-open')
    // Exactly one trial: the others skip it.
    assert.equal(both.tryAcquire(notB), null)
    assert.equal(both.tryAcquire(notB), null)
    trial.release({ ok: false, kind: 'connect' })
    assert.equal(registry.get('a')?.state, 'ejected')

    // Doubled: 2000, then capped at 3000.
    mock.timers.tick(1999)
    assert.equal(both.tryAcquire(notB), null)
    mock.timers.tick(1)
    lease(both, notB).release({ ok: false, kind: 'timeout' })
    mock.timers.tick(2999)
    assert.equal(both.tryAcquire(notB), null)
    mock.timers.tick(1)
    lease(both, notB).release({ ok: false, kind: 'status', status: 500 })
    mock.timers.tick(2999)
    assert.equal(both.tryAcquire(notB), null)
    mock.timers.tick(1)
    lease(both, notB).release({ ok: true, ttftMs: 50 })
    assert.equal(registry.get('a')?.state, 'healthy')
    assert.equal(registry.snapshot()[0]?.consecutiveFailures, 0)
    assert.equal(registry.snapshot()[0]?.ejections, 4)

    // A success resets the streak: the next ejection is back to the base cooldown.
    for (let i = 0; i < 3; i++) lease(both, notB).release({ ok: false, kind: 'connect' })
    mock.timers.tick(1000)
    assert.notEqual(both.tryAcquire(notB), null)

    assert.deepEqual(
      transitions.map((x) => `${x.from}>${x.to}`),
      [
        'healthy>ejected',
        'ejected>half-open',
        'half-open>ejected',
        'ejected>half-open',
        'half-open>ejected',
        'ejected>half-open',
        'half-open>ejected',
        'ejected>half-open',
        'half-open>healthy',
        'healthy>ejected',
        'ejected>half-open',
      ],
    )
  })

  test('a half-open trial that the client aborts frees the trial for the next request', () => {
    const { registry, solo } = setup({ baseEjectionMs: 1000 })
    for (let i = 0; i < 3; i++) lease(solo).release({ ok: false, kind: 'connect' })
    mock.timers.tick(1000)
    lease(solo).release({ ok: false, kind: 'aborted' })
    assert.equal(registry.get('a')?.state, 'half-open')
    lease(solo).release({ ok: false, kind: 'status', status: 404 })
    assert.equal(registry.get('a')?.state, 'healthy')
  })

  test('requests in flight during the ejection do not end it or double it', () => {
    const { registry, solo } = setup({ baseEjectionMs: 1000 })
    const stale = [lease(solo), lease(solo)]
    for (let i = 0; i < 3; i++) lease(solo).release({ ok: false, kind: 'connect' })
    stale[0]?.release({ ok: true })
    stale[1]?.release({ ok: false, kind: 'connect' })
    assert.equal(registry.get('a')?.state, 'ejected')
    assert.equal(registry.snapshot()[0]?.ejections, 1)
    mock.timers.tick(1000)
    assert.notEqual(solo.tryAcquire(), null)
  })

  test('429 holds the upstream back until Retry-After, without counting a failure', () => {
    const { registry, solo, both, transitions } = setup()
    lease(solo).release({ ok: false, kind: 'status', status: 429, retryAfterMs: 2000 })
    const snap = registry.snapshot()[0]
    assert.equal(snap?.heldUntil, T0 + 2000)
    assert.equal(snap?.consecutiveFailures, 0)
    assert.equal(snap?.state, 'healthy')
    assert.equal(solo.tryAcquire(), null)
    assert.equal(pickName(both), 'b')
    mock.timers.tick(1999)
    assert.equal(solo.tryAcquire(), null)
    mock.timers.tick(1)
    lease(solo).release({ ok: false, kind: 'status', status: 429 })
    // Default hold: 1 s.
    assert.equal(registry.snapshot()[0]?.heldUntil, T0 + 3000)
    mock.timers.tick(1000)
    assert.equal(registry.snapshot()[0]?.heldUntil, null)
    assert.equal(pickName(solo), 'a')
    assert.equal(transitions.length, 0)
  })

  test('a 429 reported with its model holds the upstream back for that model only', () => {
    const { registry, solo } = setup()
    lease(solo).release({ ok: false, kind: 'status', status: 429, retryAfterMs: 2000, model: 'big' })
    assert.equal(solo.tryAcquire(undefined, 'big'), null)
    assert.equal(solo.holdEnds(undefined, 'big'), T0 + 2000)
    const other = solo.tryAcquire(undefined, 'small')
    assert.ok(other !== null && other !== 'busy', 'another model of the same upstream is not held')
    other.release({ ok: true })
    assert.equal(solo.holdEnds(undefined, 'small'), 0)
    assert.equal(registry.snapshot()[0]?.heldUntil, T0 + 2000)
    mock.timers.tick(2000)
    assert.equal(pickName(solo), 'a')
    assert.ok(solo.tryAcquire(undefined, 'big') !== null)
  })

  test('a 503 with a Retry-After holds the whole upstream back until it passes, without counting a failure', () => {
    const { registry, solo, both } = setup()
    lease(solo).release({ ok: false, kind: 'status', status: 503, retryAfterMs: 2000, model: 'big', request: {} })
    const snap = registry.snapshot()[0]
    assert.equal(snap?.heldUntil, T0 + 2000)
    assert.equal(snap?.consecutiveFailures, 0)
    // The server is unavailable: every model of it, unlike a 429's hold.
    assert.equal(solo.tryAcquire(undefined, 'small'), null)
    assert.equal(solo.holdEnds(undefined, 'small'), T0 + 2000)
    assert.equal(solo.heldUnavailable(), true)
    assert.equal(pickName(both), 'b')
    mock.timers.tick(2000)
    assert.equal(solo.heldUnavailable(), false)
    // A 429 holds it back too, but it is rate limiting, not unavailable.
    lease(solo).release({ ok: false, kind: 'status', status: 429, retryAfterMs: 2000 })
    assert.equal(solo.holdEnds(), T0 + 4000)
    assert.equal(solo.heldUnavailable(), false)
    mock.timers.tick(2000)
    // Without a Retry-After (or with 0: no wait asked for), a 503 is a failure, and no hold.
    lease(solo).release({ ok: false, kind: 'status', status: 503, request: {} })
    lease(solo).release({ ok: false, kind: 'status', status: 503, retryAfterMs: 0, request: {} })
    assert.equal(registry.snapshot()[0]?.consecutiveFailures, 2)
    assert.equal(registry.snapshot()[0]?.heldUntil, null)
  })

  test("a 503's hold lasts no longer than an ejection's longest cooldown; a 429's is the upstream's word", () => {
    const { registry, solo } = setup({ baseEjectionMs: 5000, maxEjectionMs: 60_000 })
    // A proxy's maintenance page, one replica of many: it would take every model out for the hour.
    lease(solo).release({ ok: false, kind: 'status', status: 503, retryAfterMs: 3_600_000, request: {} })
    assert.equal(registry.snapshot()[0]?.heldUntil, T0 + 60_000)
    mock.timers.tick(60_000)
    const after = solo.tryAcquire()
    assert.ok(after !== null && after !== 'busy', 'in service again once the cap has passed')
    after.release({ ok: true })
    lease(solo).release({ ok: false, kind: 'status', status: 429, retryAfterMs: 3_600_000, model: 'big' })
    assert.equal(solo.holdEnds(undefined, 'big'), T0 + 60_000 + 3_600_000)
  })

  test('release is idempotent', () => {
    const { registry, solo } = setup({ failuresToEject: 2 })
    const l = lease(solo)
    assert.equal(registry.get('a')?.inFlight, 1)
    l.release({ ok: false, kind: 'connect' })
    l.release({ ok: false, kind: 'connect' })
    assert.equal(registry.get('a')?.inFlight, 0)
    assert.equal(registry.get('a')?.state, 'healthy')
  })

  test('recent errors count the last 60 seconds only', () => {
    const { registry, solo } = setup({ failuresToEject: 100 })
    lease(solo).release({ ok: false, kind: 'connect' })
    mock.timers.tick(30_000)
    lease(solo).release({ ok: false, kind: 'connect' })
    lease(solo).release({ ok: false, kind: 'connect' })
    assert.equal(registry.snapshot()[0]?.recentErrors, 3)
    mock.timers.tick(31_000)
    assert.equal(registry.snapshot()[0]?.recentErrors, 2)
    mock.timers.tick(60_000)
    assert.equal(registry.snapshot()[0]?.recentErrors, 0)
  })
})
