// Access control end to end, through the reference gateway on a real socket: API keys (plaintext and
// sha256:), per-key model access (aliases included), the IP allowlist, open health and metrics routes,
// and the client's key never reaching the upstream nor the logs.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { Writable } from 'node:stream'
import { after, before, test } from 'node:test'
import type { UsageRecord } from '@llmproxy/core'
import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { buildGateway, parseConfig } from '@llmproxy/server'
import type { FastifyInstance } from 'fastify'
import { errorOf, type HttpResult, pollUntil, postJson } from './http-helpers.js'

const KEY_A = 'sk-e2e-access-team-a-3f9c2d7e1b'
const KEY_HASHED = 'sk-e2e-access-hashed-8a41c0d2f6'
const KEY_UPPER = 'sk-e2e-access-upper-5e7b9d3a20'
const KEY_UNKNOWN = 'sk-e2e-access-unknown-77c1e0f4ab'
const KEY_ALIAS = 'sk-e2e-access-alias-only-4d2a9c81'
const KEY_NONE = 'sk-e2e-access-no-model-b06e3f5a7c'
const UPSTREAM_SECRET = 'sk-upstream-secret-e2e-access-0c4d'
const CLIENT_KEYS = [KEY_A, KEY_HASHED, KEY_UPPER, KEY_UNKNOWN, KEY_ALIAS, KEY_NONE]
const WWW_AUTHENTICATE = 'Bearer realm="llmproxy"'

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex')

interface Gateway {
  app: FastifyInstance
  url: string
  logLines: string[]
  usage: UsageRecord[]
}

let mock: MockUpstream
let open: Gateway // allowlist contains the loopback addresses
let closed: Gateway // allowlist without them
const apps: FastifyInstance[] = []

async function startGateway(ipAllowlist: string[]): Promise<Gateway> {
  const config = parseConfig(
    JSON.stringify({
      // trace: the most verbose level, so that every log line the gateway can write is checked for keys
      server: { host: '127.0.0.1', port: 0, logLevel: 'trace' },
      upstreams: [
        { name: 'mock', url: mock.url, protocol: 'openai', apiKey: UPSTREAM_SECRET },
        // no credential of its own: nothing may take its place, least of all the client's
        { name: 'mock-keyless', url: mock.url, protocol: 'openai' },
      ],
      models: [
        { name: 'gpt-test', aliases: ['alias-test'], upstreams: ['mock'], upstreamModel: 'mock-model' },
        { name: 'other-model', upstreams: ['mock'], upstreamModel: 'mock-model' },
        { name: 'keyless-model', upstreams: ['mock-keyless'], upstreamModel: 'mock-model' },
      ],
      healthChecks: { enabled: false },
      passiveHealth: { failuresToEject: 1000 },
      auth: {
        keys: [
          { id: 'team-a', key: KEY_A, models: ['gpt-test'] },
          { id: 'team-hashed', key: `sha256:${sha256(KEY_HASHED)}` },
          { id: 'team-upper', key: `sha256:${sha256(KEY_UPPER).toUpperCase()}`, models: ['other-model'] },
          { id: 'alias-only', key: KEY_ALIAS, models: ['alias-test'] },
          { id: 'no-model', key: KEY_NONE, models: [] },
        ],
        ipAllowlist,
      },
    }),
    'e2e-access',
  )
  const logLines: string[] = []
  const logDestination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logLines.push(line)
      callback()
    },
  })
  const app = await buildGateway(config, { logDestination })
  apps.push(app)
  const usage: UsageRecord[] = []
  app.llm.addHook('onUsage', (record) => {
    usage.push(record)
  })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, url, logLines, usage }
}

before(async () => {
  mock = await startMockUpstream({ defaults: { tokens: 3 } })
  open = await startGateway(['127.0.0.1', '::1'])
  closed = await startGateway(['10.0.0.0/8'])
})

after(async () => {
  await Promise.allSettled(apps.map((app) => app.close()))
  await mock?.close()
})

function chat(gw: Gateway, model: string, headers: Record<string, string> = {}, extra: Record<string, unknown> = {}): Promise<HttpResult> {
  const body = JSON.stringify({ model, messages: [{ role: 'user', content: 'Hello' }], ...extra })
  return postJson(`${gw.url}/v1/chat/completions`, body, headers)
}

const bearer = (key: string): Record<string, string> => ({ authorization: `Bearer ${key}` })

function chatRequests(): number {
  return mock.requests.filter((r) => r.path === '/v1/chat/completions').length
}

function assertError(result: HttpResult, status: number, type: string, code: string): void {
  assert.equal(result.status, status, result.text)
  const error = errorOf(result)
  assert.equal(error.type, type)
  assert.equal(error.code, code)
  assert.equal(typeof error.message, 'string')
  for (const key of CLIENT_KEYS) assert.ok(!result.text.includes(key), 'the error echoes no key')
}

test('no key, or an unknown one: 401 with WWW-Authenticate, and nothing reaches the upstream', async () => {
  const sent = chatRequests()
  const missing = await chat(open, 'gpt-test')
  assertError(missing, 401, 'authentication_error', 'llmproxy_missing_api_key')
  assert.equal(missing.headers.get('www-authenticate'), WWW_AUTHENTICATE)

  const unknown = await chat(open, 'gpt-test', bearer(KEY_UNKNOWN))
  assertError(unknown, 401, 'authentication_error', 'llmproxy_invalid_api_key')
  assert.equal(unknown.headers.get('www-authenticate'), WWW_AUTHENTICATE)

  // the other key headers are checked too
  const unknownXApiKey = await chat(open, 'gpt-test', { 'x-api-key': KEY_UNKNOWN })
  assertError(unknownXApiKey, 401, 'authentication_error', 'llmproxy_invalid_api_key')

  const models = await fetch(`${open.url}/v1/models`)
  assert.equal(models.status, 401)
  assert.equal(models.headers.get('www-authenticate'), WWW_AUTHENTICATE)
  await models.arrayBuffer()
  assert.equal(chatRequests(), sent)
})

test('a key limited to a model: 403 llmproxy_model_not_allowed for others, the model and its alias are allowed', async () => {
  const sent = chatRequests()
  const refused = await chat(open, 'other-model', bearer(KEY_A))
  assertError(refused, 403, 'permission_error', 'llmproxy_model_not_allowed')
  assert.equal(chatRequests(), sent, 'a refused model never reaches the upstream')

  const direct = await chat(open, 'gpt-test', bearer(KEY_A))
  assert.equal(direct.status, 200, direct.text)
  const viaAlias = await chat(open, 'alias-test', bearer(KEY_A))
  assert.equal(viaAlias.status, 200, viaAlias.text)
  // Anthropic- and Azure-style key headers identify the same key
  assert.equal((await chat(open, 'gpt-test', { 'x-api-key': KEY_A })).status, 200)
  assert.equal((await chat(open, 'gpt-test', { 'api-key': KEY_A })).status, 200)
  assertError(await chat(open, 'other-model', { 'api-key': KEY_A }), 403, 'permission_error', 'llmproxy_model_not_allowed')
  assert.equal(chatRequests(), sent + 4)
})

test('sha256: keys work (lower- and upper-case digests), and their model lists apply', async () => {
  const hashed = await chat(open, 'other-model', bearer(KEY_HASHED))
  assert.equal(hashed.status, 200, hashed.text)
  assert.equal((await chat(open, 'alias-test', bearer(KEY_HASHED))).status, 200)
  const upper = await chat(open, 'other-model', bearer(KEY_UPPER))
  assert.equal(upper.status, 200, upper.text)
  assertError(await chat(open, 'gpt-test', bearer(KEY_UPPER)), 403, 'permission_error', 'llmproxy_model_not_allowed')
  // the digest itself is not a key
  assertError(await chat(open, 'gpt-test', bearer(sha256(KEY_HASHED))), 401, 'authentication_error', 'llmproxy_invalid_api_key')
  assertError(await chat(open, 'gpt-test', bearer(`sha256:${sha256(KEY_HASHED)}`)), 401, 'authentication_error', 'llmproxy_invalid_api_key')
})

test('the model lists show a key only the models it may use, in every API; any other is its 404, as OpenAI answers', async () => {
  const get = (path: string, key: string, headers: Record<string, string> = {}) =>
    fetch(`${open.url}${path}`, { headers: { ...bearer(key), ...headers } })
  const listed = async (key: string): Promise<string[]> => {
    const openai = (await (await get('/v1/models', key)).json()) as { data: { id: string }[] }
    const anthropic = (await (await get('/v1/models', key, { 'anthropic-version': '2023-06-01' })).json()) as { data: { id: string }[] }
    const gemini = (await (await get('/v1beta/models', key)).json()) as { models: { name: string }[] }
    const ids = openai.data.map((m) => m.id)
    assert.deepEqual(
      anthropic.data.map((m) => m.id),
      ids,
    )
    assert.deepEqual(
      gemini.models.map((m) => m.name.slice('models/'.length)),
      ids,
    )
    return ids
  }
  assert.deepEqual(await listed(KEY_HASHED), ['gpt-test', 'alias-test', 'other-model', 'keyless-model'])
  // A model's key sees its aliases; an alias's key the alias alone (the model's own name is refused to it).
  assert.deepEqual(await listed(KEY_A), ['gpt-test', 'alias-test'])
  assert.deepEqual(await listed(KEY_UPPER), ['other-model'])
  assert.deepEqual(await listed(KEY_ALIAS), ['alias-test'])
  assert.deepEqual(await listed(KEY_NONE), [])

  assert.equal((await get('/v1/models/alias-test', KEY_A)).status, 200)
  for (const [path, key] of [
    ['/v1/models/other-model', KEY_A],
    ['/v1/models/gpt-test', KEY_ALIAS],
    ['/v1/models/gpt-test', KEY_NONE],
  ] as const) {
    const hidden = await get(path, key)
    assert.equal(hidden.status, 404, path)
    assert.equal(((await hidden.json()) as { error: { code: string } }).error.code, 'model_not_found')
  }
  const gemini = await get('/v1beta/models/other-model', KEY_A)
  assert.equal(gemini.status, 404)
  assert.equal(((await gemini.json()) as { error: { status: string } }).error.status, 'NOT_FOUND')
})

test('an IP allowlist without 127.0.0.1 refuses it (403), even with a valid key; health and metrics stay open', async () => {
  const sent = chatRequests()
  assertError(await chat(closed, 'gpt-test', bearer(KEY_A)), 403, 'permission_error', 'llmproxy_ip_denied')
  assertError(await chat(closed, 'gpt-test'), 403, 'permission_error', 'llmproxy_ip_denied')
  const models = await fetch(`${closed.url}/v1/models`, { headers: bearer(KEY_A) })
  assert.equal(models.status, 403)
  await models.arrayBuffer()
  assert.equal(chatRequests(), sent)
  // A path with no route too: checked before anything else, it never reaches the gateway-wide rate limit. And without
  // a key, an address the list admits gets its 401 there, not the 404 that would tell it which paths exist.
  for (const [gw, status] of [
    [closed, 403],
    [open, 401],
  ] as const) {
    const unrouted = await fetch(`${gw.url}/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent`)
    assert.equal(unrouted.status, status)
    await unrouted.arrayBuffer()
  }

  const health = await fetch(`${closed.url}/healthz`)
  assert.equal(health.status, 200)
  assert.deepEqual(await health.json(), { status: 'ok' })
  const metrics = await fetch(`${closed.url}/metrics`)
  assert.equal(metrics.status, 200)
  assert.match(await metrics.text(), /^# HELP /m)
})

test('/healthz and /metrics work without a key', async () => {
  const health = await fetch(`${open.url}/healthz`)
  assert.equal(health.status, 200)
  assert.deepEqual(await health.json(), { status: 'ok' })
  const metrics = await fetch(`${open.url}/metrics`)
  assert.equal(metrics.status, 200)
  assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain/)
  const text = await metrics.text()
  assert.match(text, /^# TYPE llmproxy_/m, 'the LLM metrics are exposed')
})

test('usage records carry the key id (never the key)', async () => {
  const viaAlias = await chat(open, 'alias-test', bearer(KEY_A))
  assert.equal(viaAlias.status, 200)
  const hashed = await chat(open, 'other-model', bearer(KEY_HASHED))
  assert.equal(hashed.status, 200)
  const recordOf = (result: HttpResult): Promise<UsageRecord | undefined> => {
    const requestId = result.headers.get('x-request-id')
    assert.ok(requestId)
    return pollUntil(
      async () => open.usage.find((r) => r.requestId === requestId),
      (r) => r !== undefined,
      `the usage record of request ${requestId}`,
    )
  }
  const a = await recordOf(viaAlias)
  assert.equal(a?.keyId, 'team-a')
  assert.equal(a?.model, 'alias-test')
  assert.equal(a?.status, 200)
  const h = await recordOf(hashed)
  assert.equal(h?.keyId, 'team-hashed')
  assert.equal(h?.model, 'other-model')
  // every record so far has a configured key id: no request was routed with another identity
  for (const record of open.usage) {
    assert.ok(['team-a', 'team-hashed', 'team-upper'].includes(record.keyId ?? ''), `keyId ${record.keyId}`)
    const text = JSON.stringify(record)
    for (const key of CLIENT_KEYS) assert.ok(!text.includes(key), 'a usage record holds a key')
  }
})

test("the client's key never reaches the upstream, in any header, streamed or not", async () => {
  mock.reset()
  assert.equal((await chat(open, 'gpt-test', bearer(KEY_A))).status, 200)
  assert.equal((await chat(open, 'gpt-test', { 'x-api-key': KEY_A })).status, 200)
  assert.equal((await chat(open, 'gpt-test', { 'api-key': KEY_A, cookie: `session=${KEY_A}` })).status, 200)
  const streamed = await chat(open, 'gpt-test', bearer(KEY_HASHED), { stream: true })
  assert.equal(streamed.status, 200, streamed.text)
  assert.match(streamed.text, /data: \[DONE\]/)
  const embeddings = await postJson(`${open.url}/v1/embeddings`, JSON.stringify({ model: 'gpt-test', input: 'hi' }), bearer(KEY_A))
  assert.equal(embeddings.status, 200, embeddings.text)

  assert.equal((await chat(open, 'keyless-model', bearer(KEY_HASHED))).status, 200)
  assert.equal((await chat(open, 'keyless-model', { 'x-api-key': KEY_HASHED }, { stream: true })).status, 200)

  const received = mock.requests.filter((r) => r.method === 'POST')
  assert.equal(received.length, 7)
  for (const [i, request] of received.entries()) {
    const headers = JSON.stringify(request.headers)
    for (const key of CLIENT_KEYS) assert.ok(!headers.includes(key), `a client key reached the upstream in ${request.path}: ${headers}`)
    // the last two went to the upstream without a credential of its own
    const expected = i < 5 ? `Bearer ${UPSTREAM_SECRET}` : undefined
    assert.equal(request.headers.authorization, expected, "the upstream gets the gateway's own credential, or none")
    assert.equal(request.headers['x-api-key'], undefined)
    assert.equal(request.headers['api-key'], undefined)
    assert.equal(request.headers.cookie, undefined)
  }
})

test("no key (client's or upstream's) ever appears in the gateway's log output", async () => {
  // one more of each kind of request, then read every line both gateways wrote at trace level
  await chat(open, 'gpt-test', bearer(KEY_UNKNOWN))
  await chat(open, 'other-model', bearer(KEY_A))
  await chat(closed, 'gpt-test', bearer(KEY_A))
  assert.equal((await chat(open, 'gpt-test', bearer(KEY_A))).status, 200)
  await pollUntil(
    async () => open.logLines.some((l) => l.includes('"keyId":"team-a"')),
    (found) => found,
    'a request log line naming team-a',
  )
  const lines = [...open.logLines, ...closed.logLines]
  assert.ok(lines.length > 10, `${lines.length} log lines`)
  for (const line of lines) {
    for (const secret of [...CLIENT_KEYS, UPSTREAM_SECRET]) {
      assert.ok(!line.includes(secret), `a key was logged: ${line.replace(secret, '<the key>')}`)
    }
  }
})
