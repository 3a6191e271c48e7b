import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { type AddressInfo, createServer as createTcpServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type MockUpstream, rawExchange, startMockUpstream } from '@llmproxy/mock-upstream'
import { type Dispatcher, request } from 'undici'
import { parseConfig, type RunningGateway, redactConfig, startGateway } from '../src/index.js'
import { logSink } from './helpers.js'

const TOKEN = 'admin-token-0123456789abcdef'
const ADMIN = { authorization: `Bearer ${TOKEN}` }

/** Every secret of the config below: none may appear in any admin answer. */
const SECRETS = {
  upstreamKeyA: 'sk-upstream-a-secret-value',
  upstreamKeyB: 'sk-upstream-b-secret-value',
  upstreamHeader: 'upstream-header-secret-value',
  teamKey: 'sk-team-a-secret-value-1234',
  otherKey: 'sk-team-b-secret-value-5678',
  webhookSecret: 'webhook-signing-secret-value',
  webhookAuth: 'webhook-bearer-secret-value',
  webhookQuery: 'webhook-query-secret-value',
  // An @ in a password: the user info ends at the last one.
  redisPassword: 'redis-password@secret-value',
  adminToken: TOKEN,
  // Secrets in headers and metadata whose names do not look secret.
  apimKey: 'apim-subscription-secret-value',
  customAuth: 'custom-auth-secret-value',
  webhookCustom: 'webhook-custom-secret-value',
  keyMetadata: 'key-metadata-secret-value',
}

interface Harness {
  gateway: RunningGateway
  mockA: MockUpstream
  mockB: MockUpstream
  logs: string[]
  close(): Promise<void>
}

async function startAll(yaml: (mockA: MockUpstream, mockB: MockUpstream) => string): Promise<Harness> {
  const mockA = await startMockUpstream({ defaults: { tokens: 5 } })
  const mockB = await startMockUpstream({ defaults: { tokens: 5 } })
  const logs: string[] = []
  try {
    const config = parseConfig(yaml(mockA, mockB), 'admin-test', {})
    const gateway = await startGateway(config, { logDestination: logSink(logs) })
    return {
      gateway,
      mockA,
      mockB,
      logs,
      async close() {
        await gateway.shutdown('test over')
        await mockA.close()
        await mockB.close()
      },
    }
  } catch (err) {
    await mockA.close()
    await mockB.close()
    throw err
  }
}

async function get(
  url: string,
  headers: Record<string, string> = ADMIN,
): Promise<{ status: number; headers: Record<string, unknown>; text: string }> {
  const res = await request(url, { headers })
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() }
}

async function post(url: string, headers: Record<string, string> = ADMIN, body?: string): Promise<{ status: number; text: string }> {
  const res = await request(url, { method: 'POST', headers, body })
  return { status: res.statusCode, text: await res.body.text() }
}

async function chat(url: string, key: string, model = 'gpt-test'): Promise<number> {
  const res = await request(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Hi' }] }),
  })
  await res.body.text()
  return res.statusCode
}

/** A request the admin routes refuse before their handler (validation, body limit) is answered in the OpenAI shape. */
async function assertRefusalsOpenAiShaped(adminUrl: string): Promise<void> {
  const invalid = await post(`${adminUrl}/admin/upstreams//drain`)
  assert.equal(invalid.status, 400, invalid.text)
  assert.deepEqual(JSON.parse(invalid.text), {
    error: {
      message: 'params/name must NOT have fewer than 1 characters',
      type: 'invalid_request_error',
      param: null,
      code: 'llmproxy_invalid_request',
    },
  })
  const tooLarge = await post(
    `${adminUrl}/admin/upstreams/a/drain`,
    { ...ADMIN, 'content-type': 'application/json' },
    'x'.repeat(70 * 1024),
  )
  assert.equal(tooLarge.status, 413, tooLarge.text)
  assert.deepEqual(JSON.parse(tooLarge.text).error, {
    message: 'The request body exceeds the limit of 65536 bytes.',
    type: 'invalid_request_error',
    param: null,
    code: 'llmproxy_body_too_large',
  })
  // What Node or Fastify refuse before a route (and the token check) runs.
  const cases: [string, string, number, string][] = [
    ['malformed', 'GARBAGE\r\n\r\n', 400, 'llmproxy_malformed_request'],
    [
      'headers too large',
      `GET /admin/upstreams HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`,
      431,
      'llmproxy_headers_too_large',
    ],
    [
      'bad percent-encoding',
      'POST /admin/upstreams/%E0%A4%A/drain HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n',
      400,
      'llmproxy_invalid_url',
    ],
  ]
  for (const [name, raw, status, code] of cases) {
    const response = await rawExchange(adminUrl, raw)
    assert.match(response, new RegExp(`^HTTP/1\\.1 ${status} `), name)
    const body = JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4)) as { error: { code: string; type: string } }
    assert.equal(body.error.code, code, `${name}: ${response}`)
    assert.equal(body.error.type, 'invalid_request_error', name)
  }
}

const chatRequests = (mock: MockUpstream) => mock.requests.filter((r) => r.path === '/v1/chat/completions').length

describe('admin API mounted on the gateway', () => {
  let h: Harness
  let webhook: Server
  let spoolDir: string
  before(async () => {
    spoolDir = mkdtempSync(join(tmpdir(), 'llmproxy-admin-'))
    webhook = createServer((req, res) => {
      req.resume()
      req.on('end', () => res.end('ok'))
    })
    await new Promise<void>((resolve) => webhook.listen(0, '127.0.0.1', resolve))
    const hook = `http://127.0.0.1:${(webhook.address() as AddressInfo).port}/usage?team=blue&token=${SECRETS.webhookQuery}`
    h = await startAll(
      (a, b) => `
server: { host: 127.0.0.1, port: 0 }
upstreams:
  - name: a
    url: "${a.url}"
    protocol: openai
    apiKey: "${SECRETS.upstreamKeyA}"
    headers: { x-api-key: "${SECRETS.upstreamHeader}", x-team: blue-team, Ocp-Apim-Subscription-Key: "${SECRETS.apimKey}", X-Custom-Auth: "${SECRETS.customAuth}" }
  - { name: b, url: "${b.url}", protocol: openai, apiKey: "${SECRETS.upstreamKeyB}" }
models:
  - { name: gpt-test, upstreams: [a, b], upstreamModel: mock-model }
healthChecks: { enabled: false }
auth:
  keys:
    - { id: team-a, key: "${SECRETS.teamKey}", models: [gpt-test], rateLimit: { tpm: 100000 }, quota: { tokens: 1000000, per: day }, metadata: { crm: { apiHandle: "${SECRETS.keyMetadata}" }, plan: pro } }
    - { id: team-b, key: "${SECRETS.otherKey}" }
rateLimit: { store: redis, perKey: { concurrency: 8 } }
redis: { url: "redis://default:${SECRETS.redisPassword}@127.0.0.1:6390/0", keyPrefix: "llmproxy-admin-test:" }
usage:
  webhook: { url: "${hook}", secret: "${SECRETS.webhookSecret}", headers: { Authorization: "Bearer ${SECRETS.webhookAuth}", x-source: gateway-7, X-Billing-Tenant: "${SECRETS.webhookCustom}" } }
  spoolDir: "${spoolDir}"
  batch: { maxWaitMs: 10 }
  shutdownFlushMs: 1000
admin: { token: "${TOKEN}" }
`,
    )
  })
  after(async () => {
    await h?.close()
    await new Promise((resolve) => webhook?.close(resolve))
    if (spoolDir !== undefined) rmSync(spoolDir, { recursive: true, force: true })
  })

  test('every admin route needs the admin token; a gateway API key is not one', async () => {
    const base = h.gateway.adminUrl
    assert.equal(base, h.gateway.url)
    const routes: [string, string][] = [
      ['GET', '/admin/upstreams'],
      ['POST', '/admin/upstreams/a/drain'],
      ['POST', '/admin/upstreams/a/enable'],
      ['GET', '/admin/keys'],
      ['GET', '/admin/usage'],
      ['POST', '/admin/reload'],
      ['GET', '/admin/config'],
      ['GET', '/admin/openapi.json'],
    ]
    const refused: Record<string, string>[] = [
      {},
      { authorization: 'Bearer wrong-token-0123456789abcdef' },
      { authorization: `Bearer ${TOKEN}x` },
      { authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}` },
      { authorization: TOKEN },
      { authorization: `Bearer ${SECRETS.teamKey}` },
      { 'x-api-key': TOKEN },
    ]
    for (const [method, path] of routes) {
      for (const headers of refused) {
        const res: Dispatcher.ResponseData = await request(`${base}${path}`, { method: method as 'GET' | 'POST', headers })
        const body = (await res.body.json()) as { error: { type: string; code: string } }
        assert.equal(res.statusCode, 401, `${method} ${path} ${JSON.stringify(headers)}`)
        assert.equal(body.error.type, 'authentication_error')
        assert.equal(body.error.code, 'llmproxy_invalid_api_key')
        assert.match(String(res.headers['www-authenticate']), /^Bearer realm=/)
      }
    }
    assert.equal(h.gateway.app.upstreams.get('a')?.state, 'healthy', 'a refused drain changed nothing')
    const ok = await get(`${base}/admin/upstreams`, { authorization: `bearer   ${TOKEN}` })
    assert.equal(ok.status, 200)
  })

  test('an unknown admin path or method is a 404 with the admin token (not the gateway keys’ 401), a 401 without it', async () => {
    for (const [method, path] of [
      ['GET', '/admin/nothing'],
      ['PUT', '/admin/upstreams'],
      ['POST', '/admin/upstreams/a/nothing'],
    ] as const) {
      const found = await request(`${h.gateway.url}${path}`, { method, headers: ADMIN })
      const body = (await found.body.json()) as { error: { code: string } }
      assert.deepEqual([found.statusCode, body.error.code], [404, 'llmproxy_not_found'], `${method} ${path}`)
      const refused = await request(`${h.gateway.url}${path}`, { method })
      await refused.body.text()
      assert.equal(refused.statusCode, 401, `${method} ${path} without a token`)
    }
  })

  test('GET /admin/upstreams is the upstream snapshot, without credentials', async () => {
    const res = await get(`${h.gateway.url}/admin/upstreams`)
    assert.equal(res.status, 200)
    const list = JSON.parse(res.text) as Record<string, unknown>[]
    assert.deepEqual(
      list.map((u) => u.name),
      ['a', 'b'],
    )
    assert.deepEqual(list, JSON.parse(JSON.stringify(h.gateway.app.upstreams.snapshot())))
    const first = list[0] as Record<string, unknown>
    for (const field of ['url', 'protocol', 'state', 'inFlight', 'ewmaTtftMs', 'recentErrors', 'lastError', 'weight', 'heldUntil']) {
      assert.ok(field in first, `${field} missing`)
    }
    assert.equal(first.state, 'healthy')
    assert.equal(first.ewmaTtftMs, null)
    assert.ok(!res.text.includes(SECRETS.upstreamKeyA))
  })

  test('a drained upstream gets no new requests until it is enabled; unknown names are 404', async () => {
    const base = h.gateway.url
    const drained = await post(`${base}/admin/upstreams/a/drain`)
    assert.equal(drained.status, 200)
    assert.equal((JSON.parse(drained.text) as { name: string; state: string }).state, 'draining')
    h.mockA.reset()
    h.mockB.reset()
    for (let i = 0; i < 4; i++) assert.equal(await chat(base, SECRETS.teamKey), 200)
    assert.equal(chatRequests(h.mockA), 0)
    assert.equal(chatRequests(h.mockB), 4)

    const enabled = await post(`${base}/admin/upstreams/a/enable`)
    assert.equal(enabled.status, 200)
    assert.equal((JSON.parse(enabled.text) as { state: string }).state, 'healthy')
    for (let i = 0; i < 4; i++) assert.equal(await chat(base, SECRETS.teamKey), 200)
    assert.ok(chatRequests(h.mockA) >= 1, 'a gets requests again')

    for (const action of ['drain', 'enable']) {
      const missing = await post(`${base}/admin/upstreams/ghost/${action}`)
      assert.equal(missing.status, 404)
      const body = JSON.parse(missing.text) as { error: { type: string; code: string; message: string } }
      assert.equal(body.error.code, 'llmproxy_not_found')
      assert.equal(body.error.type, 'invalid_request_error')
      assert.match(body.error.message, /ghost/)
    }
  })

  test('GET /admin/keys lists ids, models, limits and usage, never a key or its hash', async () => {
    assert.equal(await chat(h.gateway.url, SECRETS.teamKey), 200)
    type Entry = {
      id: string
      models: string[] | null
      limits: Record<string, unknown> | null
      usage: {
        tpm: { limit: number; used: number } | null
        quota: { limit: number; used: number; remaining: number } | null
        concurrency: { limit: number; inFlight: number } | null
      }
    }
    let keys: Entry[] = []
    let text = ''
    // Tokens are charged when the usage record arrives, just after the response.
    for (let i = 0; i < 100; i++) {
      const res = await get(`${h.gateway.url}/admin/keys`)
      assert.equal(res.status, 200)
      text = res.text
      keys = JSON.parse(text) as Entry[]
      if ((keys[0]?.usage.tpm?.used ?? 0) > 0) break
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    assert.deepEqual(
      keys.map((k) => k.id),
      ['team-a', 'team-b'],
    )
    const [a, b] = keys as [Entry, Entry]
    assert.deepEqual(a.models, ['gpt-test'])
    assert.deepEqual(a.limits, { tpm: 100000, quota: { tokens: 1000000, per: 'day' } })
    assert.equal(a.usage.tpm?.limit, 100000)
    assert.ok((a.usage.tpm?.used ?? 0) > 0, 'tokens of the request above are counted')
    assert.equal(a.usage.quota?.limit, 1000000)
    assert.equal(a.usage.quota?.remaining, 1000000 - (a.usage.quota?.used ?? 0))
    assert.deepEqual(a.usage.concurrency, { limit: 8, inFlight: 0 })
    assert.equal(b.models, null)
    assert.equal(b.limits, null)
    assert.equal(b.usage.tpm, null)
    assert.equal(b.usage.quota, null)
    assert.ok(!text.includes(SECRETS.teamKey) && !text.includes(SECRETS.otherKey))
    assert.ok(!/[0-9a-f]{64}/i.test(text), 'no hash')
  })

  test('GET /admin/usage reports the webhook sink', async () => {
    const res = await get(`${h.gateway.url}/admin/usage`)
    assert.equal(res.status, 200)
    const stats = JSON.parse(res.text) as Record<string, unknown>
    assert.equal(stats.enabled, true)
    for (const field of ['queueDepth', 'spoolBytes', 'delivered', 'deliveryFailures', 'dropped', 'notSpooled']) {
      assert.equal(typeof stats[field], 'number', field)
    }
    assert.ok('lastDeliveryAt' in stats && 'lastError' in stats)
  })

  test('GET /admin/config redacts every header value and metadata value, whatever their names, and every other secret', async () => {
    const res = await get(`${h.gateway.url}/admin/config`)
    assert.equal(res.status, 200)
    for (const [name, secret] of Object.entries(SECRETS)) assert.ok(!res.text.includes(secret), `${name} leaked: ${res.text}`)
    const config = JSON.parse(res.text) as {
      upstreams: { apiKey?: string; headers?: Record<string, string> }[]
      auth: { keys: { id: string; key: string; metadata?: Record<string, unknown> }[] }
      redis: { url: string }
      usage: { webhook: { url: string; secret: string; headers: Record<string, string> } }
      admin: { token: string }
      models: { name: string }[]
      timeouts: Record<string, number>
    }
    assert.equal(config.upstreams[0]?.apiKey, '[redacted]')
    // Shown: what is known to be safe (the names), not what does not look secret.
    assert.deepEqual(config.upstreams[0]?.headers, {
      'x-api-key': '[redacted]',
      'x-team': '[redacted]',
      'Ocp-Apim-Subscription-Key': '[redacted]',
      'X-Custom-Auth': '[redacted]',
    })
    assert.deepEqual(
      config.auth.keys.map((k) => [k.id, k.key, k.metadata]),
      [
        ['team-a', '[redacted]', { crm: '[redacted]', plan: '[redacted]' }],
        ['team-b', '[redacted]', undefined],
      ],
    )
    assert.equal(config.redis.url, 'redis://default:[redacted]@127.0.0.1:6390/0')
    assert.equal(config.usage.webhook.secret, '[redacted]')
    assert.deepEqual(config.usage.webhook.headers, {
      Authorization: '[redacted]',
      'x-source': '[redacted]',
      'X-Billing-Tenant': '[redacted]',
    })
    assert.match(config.usage.webhook.url, /\/usage\?team=\[redacted\]&token=\[redacted\]$/)
    assert.equal(config.admin.token, '[redacted]')
    assert.equal(config.models[0]?.name, 'gpt-test')
    // The file sets no timeouts: the defaults in force, long enough for a reasoning model's or a long prompt's silence.
    assert.deepEqual(config.timeouts, {
      connectMs: 5000,
      firstTokenMs: 300000,
      idleMs: 300000,
      heartbeatMs: 5000,
      responseMs: 600000,
      clientStallMs: 60000,
    })
    // Nothing else is lost on the way: the answer is the config in force, redacted.
    assert.deepEqual(config, JSON.parse(JSON.stringify(redactConfig(h.gateway.app.llmConfig.current()))))
  })

  test('GET /admin/openapi.json documents the admin routes only, with the bearer scheme', async () => {
    const res = await get(`${h.gateway.url}/admin/openapi.json`)
    assert.equal(res.status, 200)
    const doc = JSON.parse(res.text) as {
      openapi: string
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>
      components: { securitySchemes: Record<string, { type: string; scheme: string }> }
    }
    assert.match(doc.openapi, /^3\./)
    const routes = Object.entries(doc.paths)
      .flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`))
      .sort()
    assert.deepEqual(routes, [
      'GET /admin/config',
      'GET /admin/keys',
      'GET /admin/openapi.json',
      'GET /admin/reload',
      'GET /admin/upstreams',
      'GET /admin/usage',
      'POST /admin/reload',
      'POST /admin/upstreams/{name}/drain',
      'POST /admin/upstreams/{name}/enable',
    ])
    assert.deepEqual(doc.components.securitySchemes.adminToken, { type: 'http', scheme: 'bearer' })
    const drain = doc.paths['/admin/upstreams/{name}/drain']?.post
    assert.ok(drain?.responses['200'] !== undefined && drain.responses['404'] !== undefined && drain.responses['401'] !== undefined)
    assert.ok(doc.paths['/admin/reload']?.post?.responses['400'] !== undefined)
  })

  test('a body sent to an admin route is ignored, whatever it is (content-type: application/json with none, or not JSON)', async () => {
    const json = { ...ADMIN, 'content-type': 'application/json' }
    for (const body of [undefined, '', 'x', '{}']) {
      const drained = await post(`${h.gateway.url}/admin/upstreams/a/drain`, json, body)
      assert.equal(drained.status, 200, `${JSON.stringify(body)}: ${drained.text}`)
      assert.equal(JSON.parse(drained.text).state, 'draining')
      assert.equal((await post(`${h.gateway.url}/admin/upstreams/a/enable`, json, body)).status, 200)
      const reload = await post(`${h.gateway.url}/admin/reload`, json, body)
      // This gateway has no config file: the reload's own 400, not a parse error (nor a 500).
      assert.equal(reload.status, 400, reload.text)
      assert.equal(JSON.parse(reload.text).reloaded, false)
    }
  })

  test('validation, body-limit and pre-route refusals are in the OpenAI shape, as on a separate admin port', async () => {
    await assertRefusalsOpenAiShaped(h.gateway.url)
  })

  test('POST /admin/reload without a config file is a 400 and changes nothing', async () => {
    const res = await post(`${h.gateway.url}/admin/reload`)
    assert.equal(res.status, 400)
    const body = JSON.parse(res.text) as { reloaded: boolean; error: { type: string }; problems: { path: string; message: string }[] }
    assert.equal(body.reloaded, false)
    assert.equal(body.error.type, 'invalid_request_error')
    assert.match(body.problems[0]?.message ?? '', /no config file/)
  })

  test('no secret reached the logs', () => {
    const text = h.logs.join('\n')
    for (const [name, secret] of Object.entries(SECRETS)) assert.ok(!text.includes(secret), `${name} logged`)
    assert.ok(text.includes('admin: upstream drained'))
  })
})

describe('admin API on its own port', () => {
  let h: Harness
  before(async () => {
    h = await startAll(
      (a) => `
server: { host: 127.0.0.1, port: 0 }
upstreams:
  - { name: a, url: "${a.url}", protocol: openai }
models:
  - { name: gpt-test, upstreams: [a] }
healthChecks: { enabled: false }
admin: { token: "${TOKEN}", host: 127.0.0.1, port: 0 }
`,
    )
  })
  after(() => h?.close())

  test('the admin routes are served on the admin address only, after the gateway and closed with it', async () => {
    const adminUrl = h.gateway.adminUrl
    assert.ok(adminUrl !== null)
    assert.notEqual(adminUrl, h.gateway.url)
    assert.equal(h.gateway.app.llmAdmin.separate, true)

    const upstreams = await get(`${adminUrl}/admin/upstreams`)
    assert.equal(upstreams.status, 200)
    assert.equal((JSON.parse(upstreams.text) as { name: string }[])[0]?.name, 'a')
    const refused = await get(`${adminUrl}/admin/upstreams`, {})
    assert.equal(refused.status, 401)
    const openapi = await get(`${adminUrl}/admin/openapi.json`)
    assert.ok('/admin/keys' in (JSON.parse(openapi.text) as { paths: object }).paths)
    const unknown = await get(`${adminUrl}/admin/nothing`)
    assert.equal(unknown.status, 404)
    assert.equal((JSON.parse(unknown.text) as { error: { code: string } }).error.code, 'llmproxy_not_found')
    const keys = await get(`${adminUrl}/admin/keys`)
    assert.deepEqual(JSON.parse(keys.text), [])
    const usage = await get(`${adminUrl}/admin/usage`)
    assert.deepEqual(JSON.parse(usage.text), { enabled: false })
    await assertRefusalsOpenAiShaped(adminUrl)

    // Not on the gateway's own address; the gateway still serves there.
    const mounted = await get(`${h.gateway.url}/admin/upstreams`)
    assert.equal(mounted.status, 404)
    assert.equal(await chat(h.gateway.url, 'no-auth-configured'), 200)

    await h.gateway.shutdown('test')
    await assert.rejects(request(`${adminUrl}/admin/upstreams`, { headers: ADMIN }), /ECONNREFUSED/)
  })
})

test('the gateway does not start when its separate admin port is taken', async () => {
  const blocker = createTcpServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  const mock = await startMockUpstream()
  const logs: string[] = []
  try {
    const port = (blocker.address() as AddressInfo).port
    const config = parseConfig(
      `
server: { host: 127.0.0.1, port: 0 }
upstreams: [{ name: a, url: "${mock.url}", protocol: openai }]
models: [{ name: gpt-test, upstreams: [a] }]
healthChecks: { enabled: false }
admin: { token: "${TOKEN}", host: 127.0.0.1, port: ${port} }
`,
      'admin-test',
      {},
    )
    await assert.rejects(startGateway(config, { logDestination: logSink(logs) }), {
      name: 'ConfigError',
      message: `Invalid listen address:\n  - /admin/port: ${port} is already in use on 127.0.0.1`,
    })
    assert.ok(logs.some((l) => l.includes('admin API could not start')))
    // The gateway it had started is closed again.
    const listening = logs.map((l) => /Server listening at (http:\/\/[^"\s]+)/.exec(l)?.[1]).find((u) => u !== undefined)
    assert.ok(listening !== undefined)
    await assert.rejects(request(`${listening}/healthz`), /ECONNREFUSED/)
  } finally {
    await mock.close()
    await new Promise((resolve) => blocker.close(resolve))
  }
})

test('mounted on a gateway listening on every interface, the admin URL is the gateway URL, an address to connect to', async () => {
  const h = await startAll(
    (a) => `
server: { host: 0.0.0.0, port: 0 }
upstreams: [{ name: a, url: "${a.url}", protocol: openai }]
models: [{ name: gpt-test, upstreams: [a] }]
healthChecks: { enabled: false }
admin: { token: "${TOKEN}" }
`,
  )
  try {
    assert.equal(h.gateway.adminUrl, h.gateway.url)
    assert.doesNotMatch(h.gateway.url, /0\.0\.0\.0/)
    assert.equal((await get(`${h.gateway.adminUrl}/admin/upstreams`)).status, 200)
  } finally {
    await h.close()
  }
})

describe('no admin section', () => {
  let h: Harness
  before(async () => {
    h = await startAll(
      (a) => `
server: { host: 127.0.0.1, port: 0 }
upstreams:
  - { name: a, url: "${a.url}", protocol: openai }
models:
  - { name: gpt-test, upstreams: [a] }
healthChecks: { enabled: false }
`,
    )
  })
  after(() => h?.close())

  test('there is no admin API', async () => {
    assert.equal(h.gateway.adminUrl, null)
    for (const path of ['/admin/upstreams', '/admin/config', '/admin/openapi.json']) {
      const res = await get(`${h.gateway.url}${path}`)
      assert.equal(res.status, 404, path)
    }
  })
})
