import { strict as assert } from 'node:assert'
import { connect } from 'node:net'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { ConfigError, llmCore } from '@llmproxy/core'
import Fastify from 'fastify'
import fastifyMetrics from 'fastify-metrics'
import { Gauge, register as globalRegister, Registry } from 'prom-client'
import { request } from 'undici'
import { llmMetrics } from '../src/index.js'
import { buildApp, parseExposition, series, usageRecord, value } from './helpers.js'

test('two apps in one process keep separate registries and counts', async (t) => {
  const a = await buildApp({ defaultMetrics: true })
  t.after(() => a.app.close())
  const b = await buildApp({ defaultMetrics: true })
  t.after(() => b.app.close())
  assert.notEqual(a.app.llmMetrics.registry, b.app.llmMetrics.registry)
  assert.notEqual(a.app.llmMetrics.registry, globalRegister)
  await a.emit((req) => {
    a.app.llm.emitUsage(usageRecord(), req)
    a.app.llm.emitUsage(usageRecord(), req)
  })
  await b.emit((req) => b.app.llm.emitUsage(usageRecord(), req))
  const labels = { model: 'qwen-7b', upstream: 'vllm-a', status: '200' }
  assert.equal(value(await a.scrape(), 'llmproxy_requests_total', labels), 2)
  const sb = await b.scrape()
  assert.equal(value(sb, 'llmproxy_requests_total', labels), 1)
  assert.ok(series(sb, 'process_cpu_user_seconds_total').length === 1, 'process metrics in each registry')
  assert.equal((await globalRegister.getMetricsAsJSON()).length, 0, "prom-client's global registry is untouched")
})

test('HTTP route metrics from fastify-metrics: histogram per route, the scrape route excluded, no summary', async (t) => {
  const { app, scrape } = await buildApp(
    {},
    {
      after: (a) => {
        a.get('/hello/:name', async () => 'hi')
      },
    },
  )
  t.after(() => app.close())
  await app.inject('/hello/a')
  await app.inject('/hello/b')
  await app.inject('/nope')
  await scrape()
  const s = await scrape()
  assert.equal(value(s, 'http_request_duration_seconds_count', { method: 'GET', route: '/hello/:name', status_code: '200' }), 2)
  assert.equal(value(s, 'http_request_duration_seconds_count', { method: 'GET', route: '__unknown__', status_code: '404' }), 1)
  assert.equal(
    series(s, 'http_request_duration_seconds_count').some((x) => x.labels.route === '/metrics'),
    false,
  )
  assert.equal(
    s.some((x) => x.name.startsWith('http_request_summary')),
    false,
  )
  assert.equal(
    s.some((x) => x.name.startsWith('process_')),
    false,
    'defaultMetrics: false (set by buildApp)',
  )
})

test('a request whose client left is measured once: before its body was read (status 0), or by its usage record', async (t) => {
  const app = Fastify()
  t.after(() => app.close())
  await app.register(llmMetrics, { defaultMetrics: false })
  // As the router does: no answer before the client leaves, then a usage record saying it left (status as sent).
  app.post('/chat', (request, reply) => {
    if ((request.body as { answer?: boolean }).answer === true) return reply.send({ ok: true })
    reply.raw.on('close', () => app.llm.emitUsage(usageRecord({ status: 0, durationMs: 30, clientAborted: true }), request))
  })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  const { hostname, port } = new URL(url)
  const leaveAfter = async (head: string, body: string) => {
    const socket = connect(Number(port), hostname)
    socket.on('error', () => {})
    socket.write(`POST /chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n${head}\r\n${body}`)
    await sleep(100)
    socket.destroy()
  }
  await leaveAfter('content-length: 100\r\n', '{"answer":')
  await leaveAfter('content-length: 2\r\n', '{}')
  await fetch(`${url}/chat`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"answer":true}' })
  await sleep(50)

  const s = parseExposition((await app.inject('/metrics')).body)
  const count = (status: string) => value(s, 'http_request_duration_seconds_count', { method: 'POST', route: '/chat', status_code: status })
  assert.deepEqual([count('0'), count('200')], [2, 1])
  // The routed one's duration is its record's.
  const sum = value(s, 'http_request_duration_seconds_sum', { method: 'POST', route: '/chat', status_code: '0' }) ?? 0
  assert.ok(sum >= 0.03 && sum < 5, `sum ${sum}`)
})

test('routes registered before the plugin are measured too', async (t) => {
  const app = Fastify()
  t.after(() => app.close())
  app.get('/early', async () => 'early')
  await app.register(llmMetrics, { defaultMetrics: false })
  await app.inject('/early')
  const s = parseExposition((await app.inject('/metrics')).body)
  assert.equal(value(s, 'http_request_duration_seconds_count', { method: 'GET', route: '/early', status_code: '200' }), 1)
})

test('defaultMetrics on (default) gives process metrics; routeMetrics off gives no HTTP metrics', async (t) => {
  const app = Fastify()
  t.after(() => app.close())
  await app.register(llmMetrics, { routeMetrics: false })
  app.get('/x', async () => 'x')
  await app.inject('/x')
  const s = parseExposition((await app.inject('/metrics')).body)
  assert.equal(series(s, 'process_cpu_user_seconds_total').length, 1)
  assert.equal(
    s.some((x) => x.name.startsWith('http_request_')),
    false,
  )
})

test('path option, content type, route config opting out of auth and rate limits', async (t) => {
  const app = Fastify()
  t.after(() => app.close())
  const configs = new Map<string, unknown>()
  app.addHook('onRoute', (route) => {
    configs.set(route.url ?? '', route.config)
  })
  await app.register(llmMetrics, { path: '/internal/prom', defaultMetrics: false })
  const res = await app.inject('/internal/prom')
  assert.equal(res.statusCode, 200)
  assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/)
  assert.match(res.body, /# TYPE llmproxy_requests_total counter/)
  assert.equal((await app.inject('/metrics')).statusCode, 404)
  assert.equal((await app.inject({ method: 'HEAD', url: '/internal/prom' })).statusCode, 404)
  assert.deepEqual(configs.get('/internal/prom'), { auth: false, rateLimit: false, disableMetrics: true })
})

test('scrape over a real socket', async (t) => {
  const { app, emit } = await buildApp()
  t.after(() => app.close())
  await emit((req) => app.llm.emitUsage(usageRecord({ model: 'sock' }), req))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  assert.ok(address !== null && typeof address === 'object')
  const res = await request(`http://127.0.0.1:${address.port}/metrics`)
  assert.equal(res.statusCode, 200)
  const s = parseExposition(await res.body.text())
  assert.equal(value(s, 'llmproxy_requests_total', { model: 'sock', upstream: 'vllm-a', status: '200' }), 1)
})

test('a failing collector answers 500 in the OpenAI error shape', async (t) => {
  const { app } = await buildApp()
  t.after(() => app.close())
  new Gauge({
    name: 'custom_broken',
    help: 'throws on collect',
    registers: [app.llmMetrics.registry],
    collect() {
      throw new Error('collector down')
    },
  })
  const res = await app.inject('/metrics')
  assert.equal(res.statusCode, 500)
  assert.deepEqual(res.json(), {
    error: { message: 'Internal gateway error.', type: 'server_error', param: null, code: 'llmproxy_internal_error' },
  })
})

test('works with core registered by the app first, and next to a host app fastify-metrics', async (t) => {
  const app = Fastify()
  t.after(() => app.close())
  await app.register(llmCore)
  const hostRegistry = new Registry()
  await app.register(fastifyMetrics.default, {
    endpoint: '/host-metrics',
    defaultMetrics: { enabled: false },
    routeMetrics: { overrides: { histogram: { registers: [hostRegistry] }, summary: { registers: [hostRegistry] } } },
  })
  await app.register(llmMetrics, { defaultMetrics: false })
  app.post('/emit', async (req) => {
    app.llm.emitUsage(usageRecord(), req)
    return 'ok'
  })
  await app.inject({ method: 'POST', url: '/emit' })
  const s = parseExposition((await app.inject('/metrics')).body)
  assert.equal(value(s, 'llmproxy_requests_total', { model: 'qwen-7b', upstream: 'vllm-a', status: '200' }), 1)
  assert.equal((await app.inject('/host-metrics')).statusCode, 200)
})

test('invalid options fail registration with a ConfigError naming every path', async () => {
  const app = Fastify()
  await assert.rejects(
    async () => {
      await app.register(llmMetrics, {
        path: 'metrics',
        prefix: '9bad-',
        perKeyLabels: 'yes',
        maxLabelValues: 0,
        buckets: { ttftSeconds: [], durationSeconds: [-1] },
        extra: 1,
      } as never)
    },
    (err: unknown) => {
      assert.ok(err instanceof ConfigError)
      assert.deepEqual(err.problems.map((p) => p.path).sort(), [
        '/buckets/durationSeconds/0',
        '/buckets/ttftSeconds',
        '/extra',
        '/maxLabelValues',
        '/path',
        '/perKeyLabels',
        '/prefix',
      ])
      assert.match(err.message, /^Invalid @llmproxy\/metrics options:/)
      return true
    },
  )
  await app.close()
})

test('bucket lists must be strictly increasing', async () => {
  const app = Fastify()
  await assert.rejects(
    async () => {
      await app.register(llmMetrics, { buckets: { ttftSeconds: [0.1, 0.5, 0.5], durationSeconds: [2, 1] } })
    },
    (err: unknown) => {
      assert.ok(err instanceof ConfigError)
      assert.deepEqual(err.problems, [
        { path: '/buckets/ttftSeconds/2', message: 'must be greater than the previous bucket' },
        { path: '/buckets/durationSeconds/1', message: 'must be greater than the previous bucket' },
      ])
      return true
    },
  )
  await app.close()
})
