import { strict as assert } from 'node:assert'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Writable } from 'node:stream'
import { after, describe, test } from 'node:test'
import { ConfigError } from '@llmproxy/core'
import Fastify from 'fastify'
import { type UpstreamSnapshot, type UpstreamsPluginOptions, upstreams } from '../src/index.js'
import { config, lease, pickName, waitFor } from './helpers.js'

async function appWith(options: UpstreamsPluginOptions, logs?: string[]) {
  const stream = new Writable({
    write(chunk, _encoding, done) {
      logs?.push(String(chunk))
      done()
    },
  })
  const app = Fastify({ logger: { level: 'info', stream } })
  try {
    await app.register(upstreams, options)
    await app.ready()
  } catch (err) {
    await app.close()
    throw err
  }
  return app
}

function problemsOf(fn: () => unknown): string[] {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`)
    throw err
  }
  assert.fail('expected a ConfigError')
}

async function registrationProblems(options: unknown): Promise<string[]> {
  const app = Fastify()
  try {
    await app.register(upstreams, options as UpstreamsPluginOptions)
    await app.ready()
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`)
    throw err
  } finally {
    await app.close()
  }
  assert.fail('expected a ConfigError')
}

describe('plugin', () => {
  test('decorates fastify.upstreams and registers core', async () => {
    const app = await appWith({ upstreams: [config('a'), config('b', { url: 'http://10.0.0.2:8000/' })], healthChecks: { enabled: false } })
    try {
      assert.ok(app.hasPlugin('@llmproxy/core'))
      assert.deepEqual(
        app.upstreams.list().map((u) => u.name),
        ['a', 'b'],
      )
      const b = app.upstreams.get('b')
      assert.equal(b?.url, 'http://10.0.0.2:8000')
      assert.equal(b?.weight, 1)
      assert.equal(b?.maxConcurrency, null)
      assert.equal(app.upstreams.get('nope'), undefined)
      const pool = app.upstreams.pool(['a', 'b'])
      assert.equal(app.upstreams.pool(['a', 'b']), pool)
      assert.notEqual(app.upstreams.pool(['a', 'b'], 'p2c'), pool)
      assert.equal(pickName(pool), 'a')
    } finally {
      await app.close()
    }
  })

  test('option validation errors name each field', async () => {
    const problems = await registrationProblems({
      upstreams: [
        { name: 'a', url: 'http://x', protocol: 'openai', weight: 0 },
        { name: 'a', url: 'ftp://x', protocol: 'grpc' },
        { name: 'c', url: 'http://x', protocol: 'openai', extra: 1 },
      ],
      passive: { failuresToEject: 0 },
      queue: { timeoutMs: 'soon' },
    })
    assert.ok(
      problems.some((p) => p.startsWith('/upstreams/0/weight:')),
      problems.join('\n'),
    )
    assert.ok(
      problems.some((p) => p.startsWith('/upstreams/1/protocol:')),
      problems.join('\n'),
    )
    assert.ok(
      problems.some((p) => p.startsWith('/upstreams/2/extra: unknown key')),
      problems.join('\n'),
    )
    assert.ok(
      problems.some((p) => p.startsWith('/passive/failuresToEject:')),
      problems.join('\n'),
    )
    assert.ok(
      problems.some((p) => p.startsWith('/queue/timeoutMs:')),
      problems.join('\n'),
    )

    const semantic = await registrationProblems({
      upstreams: [
        { name: 'a', url: 'http://x', protocol: 'openai' },
        { name: 'a', url: 'ftp://x', protocol: 'openai' },
        // The scheme forgotten, a key in the query string (Gemini's style): the value is never repeated.
        { name: 'b', url: 'generativelanguage.googleapis.com/?key=sk-secret-1', protocol: 'openai' },
        { name: 'c', url: 'http://u:p@x/?q=1', protocol: 'openai' },
        { name: 'd', url: 'https://api.anthropic.com', protocol: 'anthropic', healthCheck: { enabled: true } },
        {
          name: 'e',
          url: 'http://u:s3/cr#et@bad host',
          protocol: 'openai',
          apiKey: 'sk-…',
          headers: { 'x team': 'a', 'x-org~id': 'line\nbreak', Expect: '100-continue' },
        },
      ],
      passive: { baseEjectionMs: 10_000, maxEjectionMs: 5000 },
    })
    assert.deepEqual(semantic, [
      '/upstreams/1/name: duplicate upstream name "a"',
      '/upstreams/1/url: must be an http or https URL, got "ftp:"',
      '/upstreams/2/url: not a valid URL: expected http(s)://host[:port][/path]',
      '/upstreams/3/url: must not have a query string or a fragment',
      '/upstreams/4/healthCheck/path: required when enabled: the anthropic protocol has no default health check path',
      // Secrets are never repeated: not a url's password, nor a key (only the character and where it is).
      '/upstreams/5/url: not a valid URL: expected http(s)://host[:port][/path]',
      '/upstreams/5/apiKey: has a character an HTTP header cannot carry (U+2026 at index 3)',
      '/upstreams/5/headers/x team: not a valid HTTP header name',
      '/upstreams/5/headers/x-org~0id: has a character an HTTP header cannot carry (U+000A at index 4)',
      // undici refuses to send it: every request to the upstream would fail.
      '/upstreams/5/headers/Expect: set by the HTTP client for each request, not here',
      '/passive/maxEjectionMs: must be >= baseEjectionMs',
    ])
    assert.deepEqual(await registrationProblems({}), [': must have required properties upstreams'])
  })

  test('pool() and addStrategy() reject unknown names clearly', async () => {
    const app = await appWith({ upstreams: [config('a')] })
    try {
      assert.throws(() => app.upstreams.pool(['a', 'x']), /Unknown upstream "x" in pool; known: a/)
      assert.throws(() => app.upstreams.pool(['a'], 'fastest'), /Unknown balancing strategy "fastest"; known: round-robin, weighted/)
      assert.throws(() => app.upstreams.pool([]), /at least one upstream/)
      assert.throws(() => app.upstreams.pool(['a', 'a']), /listed twice/)
      assert.throws(() => app.upstreams.addStrategy('weighted', () => ({ pick: () => undefined })), /already exists/)
    } finally {
      await app.close()
    }
  })

  test('custom strategies from the options', async () => {
    const app = await appWith({
      upstreams: [config('a'), config('b')],
      strategies: { last: () => ({ pick: (candidates) => candidates[candidates.length - 1] }) },
    })
    try {
      const pool = app.upstreams.pool(['a', 'b'], 'last')
      assert.deepEqual([pickName(pool), pickName(pool)], ['b', 'b'])
    } finally {
      await app.close()
    }
  })

  test('drain and enable; state events and logs once per transition', async () => {
    const logs: string[] = []
    const app = await appWith({ upstreams: [config('a'), config('b')] }, logs)
    try {
      const events: [string, string, string][] = []
      app.upstreams.on('state', (snapshot, previous, reason) => events.push([snapshot.name, `${previous}>${snapshot.state}`, reason]))
      const pool = app.upstreams.pool(['a', 'b'])
      assert.equal(app.upstreams.drain('a'), true)
      assert.equal(app.upstreams.drain('a'), true)
      assert.equal(app.upstreams.drain('zzz'), false)
      assert.deepEqual(
        Array.from({ length: 3 }, () => pickName(pool)),
        ['b', 'b', 'b'],
      )
      // Draining is changed by drain/enable only: failures and checks leave it.
      const onA = app.upstreams.pool(['a'])
      assert.equal(onA.tryAcquire(), null)
      assert.equal(app.upstreams.enable('a'), true)
      assert.equal(app.upstreams.enable('zzz'), false)
      assert.equal(pickName(onA), 'a')
      assert.deepEqual(events, [
        ['a', 'healthy>draining', 'drained by an admin'],
        ['a', 'draining>healthy', 'enabled by an admin'],
      ])
      const lines = logs.filter((l) => l.includes('upstream state changed')).map((l) => JSON.parse(l) as Record<string, unknown>)
      assert.equal(lines.length, 2)
      assert.deepEqual(
        { upstream: lines[0]?.upstream, state: lines[0]?.state, previousState: lines[0]?.previousState },
        { upstream: 'a', state: 'draining', previousState: 'healthy' },
      )
    } finally {
      await app.close()
    }
  })

  test('a lease in flight on a drained upstream still releases', async () => {
    const app = await appWith({ upstreams: [config('a')] })
    try {
      const l = lease(app.upstreams.pool(['a']))
      app.upstreams.drain('a')
      l.release({ ok: false, kind: 'connect' })
      l.release({ ok: false, kind: 'connect' })
      assert.equal(app.upstreams.get('a')?.inFlight, 0)
      assert.equal(app.upstreams.get('a')?.state, 'draining')
    } finally {
      await app.close()
    }
  })

  test('snapshot shape', async () => {
    const app = await appWith({ upstreams: [config('a', { weight: 3, maxConcurrency: 4, apiKey: 'secret' })] })
    try {
      const l = lease(app.upstreams.pool(['a']))
      const [snap] = app.upstreams.snapshot()
      const expected: UpstreamSnapshot = {
        name: 'a',
        url: 'http://127.0.0.1:1/a',
        protocol: 'openai',
        state: 'healthy',
        inFlight: 1,
        ewmaTtftMs: null,
        ejections: 0,
        consecutiveFailures: 0,
        recentErrors: 0,
        lastError: null,
        weight: 3,
        maxConcurrency: 4,
        heldUntil: null,
        panicPicks: 0,
      }
      assert.deepEqual(snap, expected)
      assert.ok(!JSON.stringify(snap).includes('secret'))
      l.release({ ok: true, ttftMs: 42 })
      assert.equal(app.upstreams.snapshot()[0]?.ewmaTtftMs, 42)
    } finally {
      await app.close()
    }
  })

  test('update() keeps the state of unchanged upstreams, replaces changed ones, stops removed checks, starts new ones', async () => {
    const seen: string[] = []
    const server = createServer((req, res) => {
      seen.push(req.url ?? '')
      res.end('ok')
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    after(() => server.close())
    const app = await appWith({
      upstreams: [
        { name: 'keep', url: 'http://127.0.0.1:1', protocol: 'openai', healthCheck: { enabled: false } },
        { name: 'move', url: 'http://127.0.0.1:2', protocol: 'openai', healthCheck: { enabled: false } },
        { name: 'gone', url: base, protocol: 'vllm', healthCheck: { path: '/gone' } },
      ],
      healthChecks: { intervalMs: 30, jitter: 0 },
      passive: { failuresToEject: 1, baseEjectionMs: 600_000, maxEjectionMs: 600_000 },
    })
    try {
      const registry = app.upstreams
      const pool = registry.pool(['keep', 'move', 'gone'])
      const keep = lease(pool, new Set(['move', 'gone']))
      keep.release({ ok: true, ttftMs: 80 })
      const inFlight = lease(pool, new Set(['move', 'gone']))
      lease(pool, new Set(['keep', 'gone'])).release({ ok: false, kind: 'connect' })
      assert.equal(registry.get('move')?.state, 'ejected')
      await waitFor(() => seen.includes('/gone'), 'a check of "gone"')

      const before = registry.get('keep')
      registry.update([
        { name: 'keep', url: 'http://127.0.0.1:1/', protocol: 'openai', weight: 7, healthCheck: { enabled: false } },
        { name: 'move', url: 'http://127.0.0.1:3', protocol: 'openai', healthCheck: { enabled: false } },
        { name: 'new', url: base, protocol: 'vllm', healthCheck: { path: '/new' } },
      ])
      const after = registry.get('keep')
      assert.equal(after, before)
      assert.equal(after?.weight, 7)
      assert.equal(after?.ewmaTtftMs, 80)
      assert.equal(after?.inFlight, 1)
      assert.equal(registry.get('move')?.state, 'healthy')
      assert.equal(registry.get('move')?.url, 'http://127.0.0.1:3')
      assert.equal(registry.get('gone'), undefined)
      assert.deepEqual(
        registry.snapshot().map((s) => s.name),
        ['keep', 'move', 'new'],
      )
      inFlight.release({ ok: true })
      assert.equal(registry.get('keep')?.inFlight, 0)

      // The old pool keeps working without the removed upstream; pool() no longer knows it.
      const picked = new Set(Array.from({ length: 4 }, () => pickName(pool)))
      assert.deepEqual([...picked].sort(), ['keep', 'move'])
      assert.throws(() => registry.pool(['keep', 'move', 'gone']), /Unknown upstream "gone"/)

      await waitFor(() => seen.includes('/new'), 'a check of "new"')
      const goneChecks = seen.filter((p) => p === '/gone').length
      await waitFor(() => seen.filter((p) => p === '/new').length >= 3, 'more checks of "new"')
      assert.equal(seen.filter((p) => p === '/gone').length, goneChecks)

      assert.deepEqual(
        problemsOf(() => registry.update([config('x'), config('x')])),
        ['/1/name: duplicate upstream name "x"'],
      )
      assert.equal(registry.get('keep'), before)
    } finally {
      await app.close()
    }
  })
})
