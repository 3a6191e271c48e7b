import { strict as assert } from 'node:assert'
import { describe, test } from 'node:test'
import { EWMA_FORGET_MS, type Lease, type Strategy, type Upstream, UpstreamRegistry } from '../src/index.js'
import { config, countPicks, lease, pickName } from './helpers.js'

function registryOf(...names: string[]): UpstreamRegistry {
  return new UpstreamRegistry({ upstreams: names.map((name) => config(name)) })
}

describe('round-robin', () => {
  test('takes each upstream in turn, evenly', () => {
    const pool = registryOf('a', 'b', 'c').pool(['a', 'b', 'c'])
    assert.equal(pool.strategy, 'round-robin')
    const sequence = Array.from({ length: 6 }, () => pickName(pool))
    assert.deepEqual(sequence, ['a', 'b', 'c', 'a', 'b', 'c'])
    assert.deepEqual(countPicks(pool, 3000), { a: 1000, b: 1000, c: 1000 })
  })

  test('keeps rotating when an upstream is out of the candidates', () => {
    const registry = registryOf('a', 'b', 'c')
    const pool = registry.pool(['a', 'b', 'c'])
    registry.drain('b')
    assert.deepEqual(
      Array.from({ length: 4 }, () => pickName(pool)),
      ['a', 'c', 'a', 'c'],
    )
    assert.equal(pool.tryAcquire(new Set(['a', 'b', 'c'])), null)
  })
})

test('round-robin: a failover pick keeps the turn, so a failing upstream gets its share of first attempts, not all', () => {
  const pool = registryOf('bad', 'ok').pool(['bad', 'ok'])
  const firsts: string[] = []
  for (let request = 0; request < 6; request++) {
    const first = pickName(pool)
    firsts.push(first)
    // 'bad' fails each time: the request goes on to the other one.
    if (first === 'bad') assert.equal(pickName(pool, new Set(['bad'])), 'ok')
  }
  assert.deepEqual(firsts, ['bad', 'ok', 'bad', 'ok', 'bad', 'ok'])
})

describe('weighted', () => {
  test('5:3:1 within 1% over 10,000 picks, without long runs', () => {
    const registry = new UpstreamRegistry({
      upstreams: [config('a', { weight: 5 }), config('b', { weight: 3 }), config('c', { weight: 1 })],
    })
    const pool = registry.pool(['a', 'b', 'c'], 'weighted')
    const sequence: string[] = []
    for (let i = 0; i < 10_000; i++) sequence.push(pickName(pool))
    const share = (name: string) => sequence.filter((n) => n === name).length / sequence.length
    assert.ok(Math.abs(share('a') - 5 / 9) < 0.01, `a: ${share('a')}`)
    assert.ok(Math.abs(share('b') - 3 / 9) < 0.01, `b: ${share('b')}`)
    assert.ok(Math.abs(share('c') - 1 / 9) < 0.01, `c: ${share('c')}`)
    // Smooth: the heaviest never runs more than twice in a row, and every 9 picks hold exactly 5, 3 and 1.
    let run = 1
    let longest = 1
    for (let i = 1; i < sequence.length; i++) {
      run = sequence[i] === sequence[i - 1] ? run + 1 : 1
      longest = Math.max(longest, run)
    }
    assert.ok(longest <= 2, `longest run ${longest}`)
    for (let start = 0; start + 9 <= 900; start += 9) {
      const window = sequence.slice(start, start + 9)
      assert.deepEqual(
        ['a', 'b', 'c'].map((n) => window.filter((x) => x === n).length),
        [5, 3, 1],
      )
    }
  })

  test('follows the weights of the upstreams left when one is excluded', () => {
    const registry = new UpstreamRegistry({
      upstreams: [config('a', { weight: 5 }), config('b', { weight: 3 }), config('c', { weight: 1 })],
    })
    const pool = registry.pool(['a', 'b', 'c'], 'weighted')
    const counts: Record<string, number> = {}
    const noA = new Set(['a'])
    for (let i = 0; i < 400; i++) {
      const name = pickName(pool, noA)
      counts[name] = (counts[name] ?? 0) + 1
    }
    assert.deepEqual(counts, { b: 300, c: 100 })
  })
})

describe('least-connections', () => {
  test('steers away from the loaded upstream and takes ties in turn', () => {
    const pool = registryOf('a', 'b', 'c').pool(['a', 'b', 'c'], 'least-connections')
    const held = [lease(pool), lease(pool), lease(pool)]
    assert.deepEqual(
      held.map((l) => l.upstream.name),
      ['a', 'b', 'c'],
    )
    // a gets two more requests in flight: new ones go to b and c only, in turn.
    const extra = [lease(pool, new Set(['b', 'c'])), lease(pool, new Set(['b', 'c']))]
    const picks = Array.from({ length: 6 }, () => pickName(pool))
    assert.deepEqual(picks, ['b', 'c', 'b', 'c', 'b', 'c'])
    for (const l of [...held, ...extra]) l.release({ ok: true })
  })

  test('picks the upstream with the fewest requests in flight', () => {
    const pool = registryOf('a', 'b').pool(['a', 'b'], 'least-connections')
    const onA = [lease(pool, new Set(['b'])), lease(pool, new Set(['b']))]
    const onB = lease(pool, new Set(['a']))
    // a: 2, b: 1 → b, then 2:2 → tie.
    const next = lease(pool)
    assert.equal(next.upstream.name, 'b')
    for (const l of [...onA, onB, next]) l.release({ ok: true })
  })
})

describe('latency', () => {
  test('prefers the fast upstream, tries one without a sample, and penalises load', () => {
    const registry = registryOf('fast', 'slow', 'new')
    const pool = registry.pool(['fast', 'slow'], 'latency')
    // Seed: each gets one sample.
    const a = lease(pool)
    const b = lease(pool)
    assert.notEqual(a.upstream.name, b.upstream.name)
    for (const l of [a, b]) l.release({ ok: true, ttftMs: l.upstream.name === 'fast' ? 100 : 1000 })
    assert.equal(registry.get('fast')?.ewmaTtftMs, 100)
    assert.equal(registry.get('slow')?.ewmaTtftMs, 1000)
    assert.deepEqual(countPicks(pool, 50), { fast: 50 })

    // 10 requests in flight on fast: cost 100 × 11 > 1000 × 1.
    const held = Array.from({ length: 10 }, () => lease(pool, new Set(['slow'])))
    assert.equal(lease(pool).upstream.name, 'slow')
    for (const l of held) l.release({ ok: true })

    // An upstream without a sample gets tried first.
    const withNew = registry.pool(['fast', 'slow', 'new'], 'latency')
    assert.equal(pickName(withNew), 'new')
  })

  test('the EWMA follows peaks at once and decays towards lower samples', () => {
    const registry = registryOf('a')
    const pool = registry.pool(['a'], 'latency')
    lease(pool).release({ ok: true, ttftMs: 100 })
    lease(pool).release({ ok: true, ttftMs: 500 })
    assert.equal(registry.get('a')?.ewmaTtftMs, 500)
    lease(pool).release({ ok: true, ttftMs: 100 })
    const ewma = registry.get('a')?.ewmaTtftMs ?? 0
    assert.ok(ewma < 500 && ewma > 100, String(ewma))
  })

  test('an average not refreshed for EWMA_FORGET_MS is forgotten: a recovered upstream is tried again and won back', (t) => {
    t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 })
    const registry = registryOf('steady', 'recovered')
    const pool = registry.pool(['steady', 'recovered'], 'latency')
    const a = lease(pool)
    const b = lease(pool)
    for (const l of [a, b]) l.release({ ok: true, ttftMs: l.upstream.name === 'steady' ? 50 : 400 })
    assert.deepEqual(countPicks(pool, 20), { steady: 20 })
    // 'steady' keeps serving (its average stays fresh); 'recovered' gets nothing, so nothing updates its 400 ms.
    t.mock.timers.tick(EWMA_FORGET_MS / 2)
    const served = lease(pool)
    assert.equal(served.upstream.name, 'steady')
    served.release({ ok: true, ttftMs: 50 })
    t.mock.timers.tick(EWMA_FORGET_MS / 2 + 1)
    assert.equal(registry.get('recovered')?.ewmaTtftMs, 400)
    // Forgotten: tried first while idle, as an upstream without a sample.
    const probe = lease(pool)
    assert.equal(probe.upstream.name, 'recovered')
    // Faster now: its average starts again from this sample (not 400 decayed by one step), and it wins.
    probe.release({ ok: true, ttftMs: 20 })
    assert.equal(registry.get('recovered')?.ewmaTtftMs, 20)
    assert.deepEqual(countPicks(pool, 20), { recovered: 20 })
  })

  test('a forgotten average gets one probe: no other request until its sample comes, or EWMA_FORGET_MS passes', (t) => {
    t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 })
    const registry = registryOf('fast', 'slow')
    const pool = registry.pool(['fast', 'slow'], 'latency')
    for (const l of [lease(pool), lease(pool)]) l.release({ ok: true, ttftMs: l.upstream.name === 'fast' ? 50 : 8000 })
    /** `n` requests at once; those on 'fast' answer (its average stays fresh). Returns those on 'slow', in flight. */
    const burst = (n: number): Lease[] => {
      const held = Array.from({ length: n }, () => lease(pool))
      for (const l of held) if (l.upstream.name === 'fast') l.release({ ok: true, ttftMs: 50 })
      return held.filter((l) => l.upstream.name === 'slow')
    }
    t.mock.timers.tick(EWMA_FORGET_MS / 2)
    assert.deepEqual(burst(12), [])
    t.mock.timers.tick(EWMA_FORGET_MS / 2 + 1)
    // 'slow' is forgotten: one probe, not a share of the burst (each would wait as long as its 8 s sample).
    const probes = burst(12)
    assert.equal(probes.length, 1)
    t.mock.timers.tick(EWMA_FORGET_MS / 2)
    assert.deepEqual(burst(12), [], 'no second probe while the first is under way')
    // The probe has not answered in EWMA_FORGET_MS: another goes.
    t.mock.timers.tick(EWMA_FORGET_MS / 2)
    const [second] = burst(12)
    assert.equal(second?.upstream.name, 'slow')
    // It answers fast: 'slow' has an average again, and wins.
    second?.release({ ok: true, ttftMs: 20 })
    probes[0]?.release({ ok: false, kind: 'aborted' })
    assert.deepEqual(countPicks(pool, 5), { slow: 5 })
  })
})

describe('p2c', () => {
  test('prefers the less loaded upstreams', () => {
    const pool = registryOf('a', 'b', 'c').pool(['a', 'b', 'c'], 'p2c')
    const held = Array.from({ length: 10 }, () => lease(pool, new Set(['b', 'c'])))
    const counts = countPicks(pool, 1000)
    // Of any two distinct choices at least one is b or c, which always beats a.
    assert.equal(counts.a, undefined)
    assert.ok((counts.b ?? 0) > 300 && (counts.c ?? 0) > 300, JSON.stringify(counts))
    for (const l of held) l.release({ ok: true })
    const even = countPicks(pool, 3000)
    assert.ok((even.a ?? 0) > 600, JSON.stringify(even))
  })
})

describe('custom strategies', () => {
  test('are used by name and see only the candidates', () => {
    const registry = registryOf('a', 'b', 'c')
    const seen: string[][] = []
    registry.addStrategy('last', (upstreams) => {
      assert.deepEqual(
        upstreams.map((u) => u.name),
        ['a', 'b', 'c'],
      )
      const strategy: Strategy = {
        pick(candidates: readonly Upstream[]) {
          seen.push(candidates.map((u) => u.name))
          return candidates[candidates.length - 1]
        },
      }
      return strategy
    })
    const pool = registry.pool(['a', 'b', 'c'], 'last')
    assert.equal(pickName(pool), 'c')
    assert.equal(pickName(pool, new Set(['c'])), 'b')
    assert.deepEqual(seen, [
      ['a', 'b', 'c'],
      ['a', 'b'],
    ])
    assert.throws(() => registry.addStrategy('last', () => ({ pick: () => undefined })), /already exists/)
  })

  test('a strategy that declines gives null', () => {
    const registry = registryOf('a')
    registry.addStrategy('none', () => ({ pick: () => undefined }))
    assert.equal(registry.pool(['a'], 'none').tryAcquire(), null)
  })
})
