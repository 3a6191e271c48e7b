import { strict as assert } from 'node:assert'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify from 'fastify'
import fastifyMetrics from 'fastify-metrics'
import { Registry } from 'prom-client'
import { llmMetrics } from '../src/index.js'
import { parseExposition, type Sample, series, value } from './helpers.js'

const NAME = 'http_request_duration_seconds'

/** The family's HELP/TYPE lines and, per series (labels without `le`), its `le` list and count. */
function shape(text: string) {
  const header = text.split('\n').filter((l) => l.startsWith(`# HELP ${NAME} `) || l.startsWith(`# TYPE ${NAME} `))
  const samples = parseExposition(text)
  const key = (s: Sample) => JSON.stringify(Object.entries(s.labels).filter(([k]) => k !== 'le'))
  const les = new Map<string, string[]>()
  for (const s of series(samples, `${NAME}_bucket`)) les.set(key(s), [...(les.get(key(s)) ?? []), s.labels.le as string])
  const counts = series(samples, `${NAME}_count`)
    .map((s) => [key(s), s.value, les.get(key(s))] as const)
    .sort((a, b) => a[0].localeCompare(b[0]))
  return { header, counts }
}

test('the route histogram has the shape and counts of fastify-metrics for the same traffic', async (t) => {
  const app = Fastify()
  t.after(() => app.close())
  // fastify-metrics' own route histogram as the reference, on a registry of its own
  const reference = new Registry()
  await app.register(fastifyMetrics.default, {
    endpoint: null,
    defaultMetrics: { enabled: false },
    routeMetrics: {
      enabled: { histogram: true, summary: false },
      registeredRoutesOnly: false,
      overrides: { histogram: { registers: [reference] }, summary: { registers: [reference] } },
    },
  })
  await app.register(llmMetrics, { defaultMetrics: false })
  app.get('/hello/:name', async () => 'hi')
  app.post('/items', async (_req, reply) => reply.code(201).send({ ok: true }))
  app.get('/fail', async () => {
    throw new Error('boom')
  })
  app.get('/renamed', { config: { statsId: 'custom-id' } }, async () => 'x')
  app.get('/hidden', { config: { disableMetrics: true } }, async () => 'x')
  app.get('/slow', async () => {
    await sleep(60)
    return 'slow'
  })
  for (const url of ['/hello/a', '/hello/b', '/fail', '/renamed', '/hidden', '/nope', '/slow']) await app.inject(url)
  await app.inject({ method: 'POST', url: '/items', payload: {} })
  await app.inject({ method: 'HEAD', url: '/hello/a' })
  // (not OPTIONS /hello/a: a 404, which fastify-metrics measures because it checks the route's method)

  const ours = (await app.inject('/metrics')).body
  const theirs = await reference.metrics()
  assert.deepEqual(shape(ours), shape(theirs))

  const s = parseExposition(ours)
  const get = (route: string, status: string, method = 'GET') => value(s, `${NAME}_count`, { method, route, status_code: status })
  assert.equal(get('/hello/:name', '200'), 2)
  assert.equal(get('/items', '201', 'POST'), 1)
  assert.equal(get('/fail', '500'), 1)
  assert.equal(get('custom-id', '200'), 1, 'config.statsId names the route')
  assert.equal(get('__unknown__', '404'), 1)
  assert.equal(
    series(s, `${NAME}_count`).some(
      (x) => x.labels.route === '/hidden' || x.labels.route === '/metrics' || (x.labels.method !== 'GET' && x.labels.method !== 'POST'),
    ),
    false,
    'disableMetrics routes, the scrape route and HEAD are not measured',
  )
  assert.equal(series(s, `${NAME}_count`).length, 6)
  // durations are fastify's reply.elapsedTime: the slow route's 60 ms land in the 0.1 s bucket or later
  const slow = { method: 'GET', route: '/slow', status_code: '200' }
  const sum = value(s, `${NAME}_sum`, slow) ?? 0
  assert.ok(sum >= 0.055 && sum < 30, `slow route sum ${sum}`)
  assert.equal(value(s, `${NAME}_bucket`, { le: '0.05', ...slow }), 0)
  assert.match(ours, /^http_request_duration_seconds_bucket\{le="0\.005",method="GET",route="\/hello\/:name",status_code="200"\} \d$/m)
})

test('HEAD, OPTIONS, TRACE and CONNECT are not measured, even to an unknown URL (fastify-metrics measures those 404s)', async (t) => {
  const app = Fastify()
  t.after(() => app.close())
  await app.register(llmMetrics, { defaultMetrics: false })
  await app.inject({ method: 'HEAD', url: '/nope' })
  await app.inject({ method: 'OPTIONS', url: '/nope' })
  await app.inject({ method: 'TRACE', url: '/nope' })
  await app.inject({ method: 'DELETE', url: '/nope' })
  const s = parseExposition((await app.inject('/metrics')).body)
  assert.deepEqual(
    series(s, `${NAME}_count`).map((x) => x.labels),
    [{ method: 'DELETE', route: '__unknown__', status_code: '404' }],
  )
})

test('with defaultMetrics and routeMetrics both off, neither fastify-metrics nor HTTP metrics are registered', async (t) => {
  const app = Fastify()
  t.after(() => app.close())
  await app.register(llmMetrics, { defaultMetrics: false, routeMetrics: false })
  app.get('/x', async () => 'x')
  await app.ready()
  assert.equal(app.hasDecorator('llmproxyFastifyMetrics'), false)
  await app.inject('/x')
  const body = (await app.inject('/metrics')).body
  assert.equal(body.includes('http_request'), false)
  assert.equal(body.includes('process_'), false)
})
