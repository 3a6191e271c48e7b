import { strict as assert } from 'node:assert'
import { once } from 'node:events'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { after, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify from 'fastify'
import { type UpstreamConfig, UpstreamRegistry, type UpstreamsOptions, upstreams } from '../src/index.js'
import { lease, pickName, waitFor } from './helpers.js'

interface Target {
  server: Server
  url: string
  healthy: boolean
  /** Never answer (for timeouts). */
  hang: boolean
  /** Send 200 and its headers, then never end the body. */
  stallBody: boolean
  delayMs: number
  seen: { path: string; headers: IncomingHttpHeaders }[]
  active: number
  maxActive: number
  /** Open connections. */
  sockets: Set<Socket>
}

const targets: Target[] = []

async function target(): Promise<Target> {
  const t: Target = {
    server: createServer(),
    url: '',
    healthy: true,
    hang: false,
    stallBody: false,
    delayMs: 0,
    seen: [],
    active: 0,
    maxActive: 0,
    sockets: new Set(),
  }
  t.server.on('connection', (socket: Socket) => {
    t.sockets.add(socket)
    socket.on('close', () => t.sockets.delete(socket))
  })
  t.server.on('request', (req, res) => {
    t.seen.push({ path: req.url ?? '', headers: req.headers })
    if (t.hang) return
    if (t.stallBody) {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write('{')
      return
    }
    t.active++
    t.maxActive = Math.max(t.maxActive, t.active)
    setTimeout(() => {
      t.active--
      res.statusCode = t.healthy ? 200 : 503
      res.end('{}')
    }, t.delayMs)
  })
  t.server.listen(0, '127.0.0.1')
  await once(t.server, 'listening')
  t.url = `http://127.0.0.1:${(t.server.address() as AddressInfo).port}`
  targets.push(t)
  return t
}

after(async () => {
  for (const t of targets) {
    t.server.closeAllConnections()
    t.server.close()
  }
})

const FAST = { intervalMs: 50, timeoutMs: 500, jitter: 0.1, unhealthyAfter: 2, healthyAfter: 2 }

function registryFor(list: UpstreamConfig[], extra: Partial<UpstreamsOptions> = {}): UpstreamRegistry {
  return new UpstreamRegistry({ upstreams: list, healthChecks: FAST, ...extra })
}

describe('active health checks', () => {
  test('vllm: /health with the bearer key; unhealthy after failed checks, healthy again after good ones', async () => {
    const t = await target()
    const registry = registryFor([{ name: 'v', url: t.url, protocol: 'vllm', apiKey: 'sk-vllm', headers: { 'x-team': 'ml' } }])
    const states: string[] = []
    registry.on('state', (snapshot) => states.push(snapshot.state))
    registry.start()
    try {
      await waitFor(() => t.seen.length >= 1, 'a first check')
      assert.equal(t.seen[0]?.path, '/health')
      assert.equal(t.seen[0]?.headers.authorization, 'Bearer sk-vllm')
      assert.equal(t.seen[0]?.headers['x-team'], 'ml')
      t.healthy = false
      await waitFor(() => registry.get('v')?.state === 'unhealthy', 'unhealthy')
      // The pool's only upstream: panic mode still sends requests to it.
      const pool = registry.pool(['v'])
      assert.equal(pool.panic, true)
      assert.equal(registry.snapshot()[0]?.lastError, 'health check: status 503')
      t.healthy = true
      await waitFor(() => registry.get('v')?.state === 'healthy', 'healthy again')
      assert.equal(pool.panic, false)
      assert.deepEqual(states, ['unhealthy', 'healthy'])
    } finally {
      registry.close()
    }
  })

  test('openai: /v1/models under the base path; anthropic and gemini send their key headers on a given path', async () => {
    const t = await target()
    const registry = registryFor([
      { name: 'o', url: `${t.url}/openai/`, protocol: 'openai', apiKey: 'sk-o' },
      { name: 'an', url: t.url, protocol: 'anthropic', apiKey: 'sk-an', healthCheck: { path: '/v1/models' } },
      { name: 'g', url: t.url, protocol: 'gemini', apiKey: 'g-key', healthCheck: { path: 'v1beta/models' } },
    ])
    registry.start()
    try {
      await waitFor(() => t.seen.length >= 3, 'three checks')
      const byPath = (p: string) => t.seen.find((s) => s.path === p)?.headers
      assert.equal(byPath('/openai/v1/models')?.authorization, 'Bearer sk-o')
      const anthropic = t.seen.find((s) => s.headers['x-api-key'] === 'sk-an')
      assert.equal(anthropic?.path, '/v1/models')
      assert.equal(anthropic?.headers['anthropic-version'], '2023-06-01')
      assert.equal(anthropic?.headers.authorization, undefined)
      assert.equal(byPath('/v1beta/models')?.['x-goog-api-key'], 'g-key')
    } finally {
      registry.close()
    }
  })

  test('no active check for anthropic/gemini without a path, nor when disabled', async () => {
    const t = await target()
    const registry = registryFor([
      { name: 'an', url: t.url, protocol: 'anthropic' },
      { name: 'g', url: t.url, protocol: 'gemini' },
      { name: 'off', url: t.url, protocol: 'vllm', healthCheck: { enabled: false } },
    ])
    const globallyOff = registryFor([{ name: 'v', url: t.url, protocol: 'vllm' }], {
      healthChecks: { ...FAST, enabled: false },
    })
    // A control upstream proves checks run meanwhile.
    const control = await target()
    const controlRegistry = registryFor([{ name: 'c', url: control.url, protocol: 'tgi' }])
    registry.start()
    globallyOff.start()
    controlRegistry.start()
    try {
      await waitFor(() => control.seen.length >= 3, 'control checks')
      assert.equal(control.seen[0]?.path, '/health')
      assert.equal(t.seen.length, 0)
    } finally {
      registry.close()
      globallyOff.close()
      controlRegistry.close()
    }
  })

  test('a check that times out (before its answer, or in its body) or is refused fails', async () => {
    const hanging = await target()
    hanging.hang = true
    const stalling = await target()
    stalling.stallBody = true
    const closed = await target()
    closed.server.close()
    await once(closed.server, 'close')
    const registry = registryFor(
      [
        { name: 'hang', url: hanging.url, protocol: 'vllm' },
        { name: 'stall', url: stalling.url, protocol: 'vllm' },
        { name: 'refused', url: closed.url, protocol: 'vllm' },
      ],
      { healthChecks: { ...FAST, timeoutMs: 100, unhealthyAfter: 1 } },
    )
    registry.start()
    try {
      const unhealthy = (name: string) => registry.get(name)?.state === 'unhealthy'
      await waitFor(() => unhealthy('hang') && unhealthy('stall') && unhealthy('refused'), 'all unhealthy')
      const [hang, stall, refused] = registry.snapshot()
      assert.match(hang?.lastError ?? '', /health check: timed out after 100 ms/)
      assert.match(stall?.lastError ?? '', /health check: timed out after 100 ms/)
      assert.equal(refused?.lastError, 'health check: ECONNREFUSED')
    } finally {
      registry.close()
    }
  })

  test('checks of one upstream never overlap', async () => {
    const t = await target()
    t.delayMs = 120
    const registry = registryFor([{ name: 'slow', url: t.url, protocol: 'vllm' }], {
      healthChecks: { ...FAST, intervalMs: 10, jitter: 0 },
    })
    registry.start()
    try {
      await waitFor(() => t.seen.length >= 3, 'three checks')
      assert.equal(t.maxActive, 1)
    } finally {
      registry.close()
    }
  })

  test('good checks end an ejection before its cooldown', async () => {
    const t = await target()
    const registry = registryFor([{ name: 'v', url: t.url, protocol: 'vllm' }], {
      passive: { failuresToEject: 1, baseEjectionMs: 600_000, maxEjectionMs: 600_000 },
    })
    const pool = registry.pool(['v'])
    const l = pool.tryAcquire()
    assert.ok(l !== null && l !== 'busy')
    l.release({ ok: false, kind: 'connect' })
    assert.equal(registry.get('v')?.state, 'ejected')
    registry.start()
    try {
      await waitFor(() => registry.get('v')?.state === 'healthy', 'healthy through checks')
      assert.ok(t.seen.length >= 2)
    } finally {
      registry.close()
    }
  })

  test('app.close stops the checks at once, aborting the one in flight', async () => {
    const t = await target()
    t.hang = true
    const app = Fastify()
    await app.register(upstreams, {
      upstreams: [{ name: 'v', url: t.url, protocol: 'vllm' }],
      healthChecks: { ...FAST, timeoutMs: 60_000 },
    })
    await app.ready()
    await waitFor(() => t.seen.length === 1, 'a check in flight')
    assert.equal(t.sockets.size, 1)
    const started = Date.now()
    await app.close()
    assert.ok(Date.now() - started < 2000, 'close was slow')
    await waitFor(() => t.sockets.size === 0, 'the check connection to close')
    await sleep(200)
    assert.equal(t.seen.length, 1)
  })

  test('no check runs before the app is ready', async () => {
    const t = await target()
    const app = Fastify()
    await app.register(upstreams, { upstreams: [{ name: 'v', url: t.url, protocol: 'vllm' }], healthChecks: FAST })
    await app.after()
    await sleep(150)
    assert.equal(t.seen.length, 0)
    await app.ready()
    await waitFor(() => t.seen.length >= 1, 'a check after ready')
    await app.close()
  })
})

describe('panic mode with active checks', () => {
  test('every upstream unhealthy yet serving: panic mode balances them by the strategy; one healthy again ends it', async () => {
    const x = await target()
    const y = await target()
    x.healthy = false
    y.healthy = false
    const registry = registryFor([
      { name: 'x', url: x.url, protocol: 'vllm' },
      { name: 'y', url: y.url, protocol: 'vllm' },
    ])
    const pool = registry.pool(['x', 'y'], 'least-connections')
    registry.start()
    try {
      await waitFor(() => registry.get('x')?.state === 'unhealthy' && registry.get('y')?.state === 'unhealthy', 'both unhealthy')
      assert.equal(pool.panic, true)
      // The checks keep the pool in panic for as long as they fail: its load must stay spread (as Envoy does).
      const first = lease(pool)
      const second = lease(pool)
      assert.deepEqual([first.upstream.name, second.upstream.name], ['x', 'y'])
      first.release({ ok: false, kind: 'status', status: 503, request: {} })
      // A request answered in panic mode does not end an unhealthy state: the checks decide.
      second.release({ ok: true })
      assert.equal(registry.get('y')?.state, 'unhealthy')
      assert.deepEqual(
        Array.from({ length: 4 }, () => pickName(pool)),
        ['x', 'y', 'x', 'y'],
      )

      x.healthy = true
      await waitFor(() => registry.get('x')?.state === 'healthy', 'x healthy again')
      assert.equal(pool.panic, false)
      assert.deepEqual(new Set(Array.from({ length: 10 }, () => pickName(pool))), new Set(['x']))
      assert.equal(pool.tryAcquire(new Set(['x'])), null)
      assert.equal(registry.snapshot().find((s) => s.name === 'y')?.panicPicks, 3)
    } finally {
      registry.close()
    }
  })

  test('unhealthy stays hard while an upstream of the pool is not unhealthy: in panic, only the ejected ones are picked', async () => {
    const x = await target()
    const y = await target()
    x.healthy = false
    const registry = registryFor(
      [
        { name: 'x', url: x.url, protocol: 'vllm' },
        // Passive health only: its checks would end its ejection.
        { name: 'y', url: y.url, protocol: 'vllm', healthCheck: { enabled: false } },
      ],
      { passive: { failuresToEject: 1, baseEjectionMs: 600_000, maxEjectionMs: 600_000 } },
    )
    const pool = registry.pool(['x', 'y'])
    registry.start()
    try {
      await waitFor(() => registry.get('x')?.state === 'unhealthy', 'x unhealthy')
      assert.deepEqual(new Set(Array.from({ length: 10 }, () => pickName(pool))), new Set(['y']))
      assert.equal(pool.tryAcquire(new Set(['y'])), null)
      assert.equal(pool.panic, false)

      lease(pool).release({ ok: false, kind: 'connect', request: {} })
      assert.equal(registry.get('y')?.state, 'ejected')
      assert.equal(pool.panic, true)
      for (let i = 0; i < 10; i++) {
        const l = lease(pool)
        assert.equal(l.upstream.name, 'y')
        l.release({ ok: false, kind: 'connect', request: {} })
      }
      assert.equal(pool.tryAcquire(new Set(['y'])), null)
      assert.equal(registry.get('x')?.state, 'unhealthy')
      assert.equal(registry.snapshot().find((s) => s.name === 'x')?.panicPicks, 0)
    } finally {
      registry.close()
    }
  })
})
