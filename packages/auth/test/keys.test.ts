import { strict as assert } from 'node:assert'
import { test } from 'node:test'
import { ConfigError, llmCore, WWW_AUTHENTICATE } from '@llmproxy/core'
import Fastify from 'fastify'
import { auth, isModelAllowed } from '../src/index.js'
import { build, KEY_A, KEY_B, logCapture, type Seen, sha256Hex } from './helpers.js'

const keys = [
  { id: 'team-a', key: KEY_A, models: ['qwen-7b', 'gpt-4o-mini'], rateLimit: { rpm: 600, tpm: 200_000 }, metadata: { team: 'a' } },
  { id: 'team-b', key: `sha256:${sha256Hex(KEY_B)}`, quota: { tokens: 5_000_000, per: 'month' as const } },
]

for (const [name, headers] of [
  ['Authorization: Bearer', { authorization: `Bearer ${KEY_A}` }],
  ['Authorization: bearer (any case)', { authorization: `bEaReR ${KEY_A}` }],
  ['x-api-key (Anthropic clients)', { 'x-api-key': KEY_A }],
  ['api-key (Azure clients)', { 'api-key': KEY_A }],
  ['x-goog-api-key (Gemini clients)', { 'x-goog-api-key': KEY_A }],
] as const) {
  test(`accepts the key in ${name}`, async (t) => {
    const { app } = await build({ keys })
    t.after(() => app.close())
    const res = await app.inject({ url: '/v1/whoami', headers })
    assert.equal(res.statusCode, 200)
    assert.equal(res.json<Seen>().keyId, 'team-a')
  })
}

test('Authorization: Bearer wins over x-api-key and api-key', async (t) => {
  const { app } = await build({ keys })
  t.after(() => app.close())
  const res = await app.inject({ url: '/v1/whoami', headers: { authorization: `Bearer ${KEY_B}`, 'x-api-key': KEY_A, 'api-key': KEY_A } })
  assert.equal(res.json<Seen>().keyId, 'team-b')
})

test('a key in the query string is ignored', async (t) => {
  const { app } = await build({ keys })
  t.after(() => app.close())
  const res = await app.inject({
    url: '/v1/whoami',
    query: { key: KEY_A, api_key: KEY_A, 'api-key': KEY_A, authorization: `Bearer ${KEY_A}` },
  })
  assert.equal(res.statusCode, 401)
  assert.equal(res.json().error.code, 'llmproxy_missing_api_key')
})

test('keyInQuery: ?key= is accepted on Gemini paths only, and only when switched on', async (t) => {
  const off = await build({ keys })
  const on = await build({ keys, keyInQuery: true })
  t.after(() => Promise.all([off.app.close(), on.app.close()]))
  // Gemini's routes: v1beta's, and its stable v1's generation and counting.
  for (const gemini of [
    `/v1beta/models/gemini-flash:generateContent?alt=sse&key=${KEY_A}`,
    `/v1beta/models?key=${KEY_A}`,
    `/v1/models/gemini-flash:generateContent?key=${KEY_A}`,
    `/v1/models/gemini-flash:streamGenerateContent?alt=sse&key=${KEY_A}`,
    `/v1/models/gemini-flash:countTokens?key=${KEY_A}`,
  ]) {
    // Past auth, the path is a 404 (the test app has no Gemini route); refused, a 401.
    assert.equal((await off.app.inject({ method: 'POST', url: gemini })).statusCode, 401, gemini)
    assert.equal((await on.app.inject({ method: 'POST', url: gemini })).statusCode, 404, gemini)
  }
  // The rest of /v1/ is OpenAI's, model lookups included.
  for (const openai of [`/v1/whoami?key=${KEY_A}`, `/v1/models?key=${KEY_A}`, `/v1/models/gemini-flash?key=${KEY_A}`]) {
    const elsewhere = await on.app.inject({ url: openai })
    assert.equal(elsewhere.statusCode, 401, openai)
    assert.equal(elsewhere.json().error.code, 'llmproxy_missing_api_key')
  }
  const wrong = await on.app.inject({ method: 'POST', url: '/v1beta/models/g:generateContent?key=sk-not-a-key' })
  // Gemini's error shape on a Gemini path: the catalogue code is the ErrorInfo reason.
  assert.equal(wrong.json().error.details[0].reason, 'llmproxy_invalid_api_key')
})

test('a sha256: key (any hex case) matches its plaintext, which never sits in config', async (t) => {
  const { app } = await build({ keys: [{ id: 'upper', key: `sha256:${sha256Hex(KEY_B).toUpperCase()}` }] })
  t.after(() => app.close())
  const ok = await app.inject({ url: '/v1/whoami', headers: { authorization: `Bearer ${KEY_B}` } })
  assert.equal(ok.json<Seen>().keyId, 'upper')
  // The digest itself is not a key.
  const digest = await app.inject({ url: '/v1/whoami', headers: { authorization: `Bearer sha256:${sha256Hex(KEY_B)}` } })
  assert.equal(digest.statusCode, 401)
})

test('missing key: 401, WWW-Authenticate, OpenAI error shape, llmproxy_missing_api_key', async (t) => {
  const { app, rejections } = await build({ keys })
  t.after(() => app.close())
  for (const headers of [
    {},
    { authorization: 'Bearer ' },
    { authorization: `Basic ${Buffer.from(`u:${KEY_A}`).toString('base64')}` },
    { 'x-api-key': '' },
  ]) {
    const res = await app.inject({ url: '/v1/whoami', headers })
    assert.equal(res.statusCode, 401)
    assert.equal(res.headers['www-authenticate'], WWW_AUTHENTICATE)
    assert.match(String(res.headers['content-type']), /^application\/json/)
    const body = res.json()
    assert.deepEqual(Object.keys(body), ['error'])
    assert.equal(body.error.type, 'authentication_error')
    assert.equal(body.error.code, 'llmproxy_missing_api_key')
    assert.equal(typeof body.error.message, 'string')
  }
  assert.deepEqual(rejections, Array(4).fill({ reason: 'auth', keyId: null, statusCode: 401 }))
})

test('unknown key: 401 llmproxy_invalid_api_key, the key not echoed, emitReject called', async (t) => {
  const { app, rejections } = await build({ keys })
  t.after(() => app.close())
  const res = await app.inject({ url: '/v1/whoami', headers: { authorization: 'Bearer sk-not-a-real-key-123' } })
  assert.equal(res.statusCode, 401)
  assert.equal(res.headers['www-authenticate'], 'Bearer realm="llmproxy"')
  assert.deepEqual(res.json(), {
    error: { message: 'Invalid API key.', type: 'authentication_error', param: null, code: 'llmproxy_invalid_api_key' },
  })
  assert.ok(!res.body.includes('sk-not-a-real-key-123'))
  assert.deepEqual(rejections, [{ reason: 'auth', keyId: null, statusCode: 401 }])
})

test('success sets request.llm (keyId, allowedModels, keyLimits) and request.llmKey, precomputed per key', async (t) => {
  const { app, served } = await build({ keys: [...keys, { id: 'all', key: 'sk-all-models-key-000', models: ['*'] }] })
  t.after(() => app.close())
  const a = (await app.inject({ url: '/v1/whoami', headers: { 'x-api-key': KEY_A } })).json<Seen>()
  assert.deepEqual(a, {
    keyId: 'team-a',
    allowedModels: ['qwen-7b', 'gpt-4o-mini'],
    keyLimits: { rpm: 600, tpm: 200_000 },
    llmKey: { id: 'team-a', models: ['qwen-7b', 'gpt-4o-mini'], limits: { rpm: 600, tpm: 200_000 }, metadata: { team: 'a' } },
  })
  await app.inject({ url: '/v1/whoami', headers: { 'x-api-key': KEY_A } })
  const [first, second] = served
  assert.ok(first && second)
  for (let i = 0; i < 3; i++) assert.equal(first[i], second[i], 'the same objects are shared by the key’s requests')
  assert.ok(Object.isFrozen(first[1]) && Object.isFrozen(first[2]))

  const b = (await app.inject({ url: '/v1/whoami', headers: { 'x-api-key': KEY_B } })).json<Seen>()
  assert.deepEqual(b, {
    keyId: 'team-b',
    allowedModels: null,
    keyLimits: { quota: { tokens: 5_000_000, per: 'month' } },
    llmKey: { id: 'team-b', limits: { quota: { tokens: 5_000_000, per: 'month' } } },
  })
  const all = (await app.inject({ url: '/v1/whoami', headers: { 'x-api-key': 'sk-all-models-key-000' } })).json<Seen>()
  assert.equal(all.allowedModels, null)
  assert.equal(all.keyLimits, null)
})

test('isModelAllowed: true for any allowed name, always true for keys with all models', async (t) => {
  const app = Fastify()
  t.after(() => app.close())
  await app.register(auth, { keys })
  app.post('/check', async (request) => {
    const { names } = request.body as { names: string[] }
    return { allowed: isModelAllowed(request, ...names) }
  })
  const check = async (key: string, names: string[]) =>
    (await app.inject({ method: 'POST', url: '/check', headers: { 'x-api-key': key }, payload: { names } })).json().allowed
  assert.equal(await check(KEY_A, ['qwen-7b']), true)
  assert.equal(await check(KEY_A, ['llama-70b']), false)
  assert.equal(await check(KEY_A, ['gpt-4o-mini', 'qwen-7b']), true)
  assert.equal(await check(KEY_A, ['llama-70b', 'qwen-7b']), true)
  assert.equal(await check(KEY_A, []), false)
  assert.equal(await check(KEY_B, ['llama-70b']), true)
})

test('route opt-out with config: { auth: false }, and the skip callback', async (t) => {
  const { app } = await build({ keys, ipAllowlist: ['10.0.0.0/8'], skip: (request) => request.headers['x-internal'] === 'yes' })
  t.after(() => app.close())
  const health = await app.inject({ url: '/health' })
  assert.equal(health.statusCode, 200)
  assert.deepEqual(health.json(), { ok: true, keyId: null })
  const skipped = await app.inject({ url: '/v1/whoami', headers: { 'x-internal': 'yes' } })
  assert.equal(skipped.statusCode, 200)
  assert.equal(skipped.json<Seen>().llmKey, null)
  const checked = await app.inject({ url: '/v1/whoami', headers: { 'x-internal': 'no' } })
  assert.equal(checked.statusCode, 403)
})

test('works in an app that registered @llmproxy/core itself, and protects unknown routes too', async (t) => {
  const app = Fastify()
  t.after(() => app.close())
  await app.register(llmCore)
  await app.register(auth, { keys })
  await app.ready()
  const res = await app.inject({ url: '/nope' })
  assert.equal(res.statusCode, 401)
  assert.equal((await app.inject({ url: '/nope', headers: { 'x-api-key': KEY_A } })).statusCode, 404)
})

test('fastify.auth: keyIds, identity (no key, no hash), update() swaps the table, invalid update keeps the old one', async (t) => {
  const { app } = await build({ keys })
  t.after(() => app.close())
  assert.deepEqual(app.llmAuth.keyIds(), ['team-a', 'team-b'])
  const identity = app.llmAuth.identity('team-b')
  assert.deepEqual(identity, { id: 'team-b', limits: { quota: { tokens: 5_000_000, per: 'month' } } })
  assert.ok(!JSON.stringify(identity).includes(sha256Hex(KEY_B)))
  assert.equal(app.llmAuth.identity('nobody'), undefined)

  app.llmAuth.update([{ id: 'team-c', key: 'sk-gamma-new-key-777', models: ['qwen-7b'] }])
  assert.deepEqual(app.llmAuth.keyIds(), ['team-c'])
  assert.equal((await app.inject({ url: '/v1/whoami', headers: { 'x-api-key': KEY_A } })).statusCode, 401)
  const c = await app.inject({ url: '/v1/whoami', headers: { 'x-api-key': 'sk-gamma-new-key-777' } })
  assert.equal(c.json<Seen>().keyId, 'team-c')

  assert.throws(
    () =>
      app.llmAuth.update([
        { id: 'x', key: 'sk-x-0000000000' },
        { id: 'x', key: 'sk-y-0000000000' },
      ]),
    (err: unknown) => err instanceof ConfigError && err.problems.some((p) => p.path === '/keys/1/id'),
  )
  assert.throws(() => app.llmAuth.update([{ id: 'x' } as never]), /\/keys\/0/)
  assert.deepEqual(app.llmAuth.keyIds(), ['team-c'])
  assert.equal((await app.inject({ url: '/v1/whoami', headers: { 'x-api-key': 'sk-gamma-new-key-777' } })).statusCode, 200)
})

test('validation errors name every offending field and never print a key', async () => {
  const app = Fastify()
  await assert.rejects(
    async () => {
      await app.register(auth, {
        keys: [
          { id: 'a', key: 'sk-secret-plaintext-1' },
          { id: 'a', key: 'sk-secret-plaintext-2' },
          { id: 'c', key: `sha256:${sha256Hex('sk-secret-plaintext-1')}` },
          { id: 'd', key: 'sha256:nothex' },
          { id: 'e', key: 'sk-e', quota: { tokens: 10, per: 'year' } },
        ],
        ipAllowlist: ['10.0.0.0/33', 'localhost', '::1/129', '::1/64x'],
        ipDenylist: ['1.2.3.4', '2001:db8::/32'],
      } as never)
    },
    (err: unknown) => {
      assert.ok(err instanceof ConfigError)
      assert.deepEqual(err.problems.map((p) => p.path).sort(), ['/keys/4/quota/per'])
      return true
    },
  )
  await app.close()
  const app2 = Fastify()
  await assert.rejects(
    async () => {
      await app2.register(auth, {
        keys: [
          { id: 'a', key: 'sk-secret-plaintext-1' },
          { id: 'a', key: 'sk-secret-plaintext-2' },
          { id: 'c', key: `sha256:${sha256Hex('sk-secret-plaintext-1')}` },
          { id: 'd', key: 'sha256:nothex' },
          // Never sent as written in a header: it could never authenticate.
          { id: 'e', key: 'sk-clé-secrète' },
          { id: 'f', key: 'sk with blanks' },
        ],
        ipAllowlist: ['10.0.0.0/33', 'localhost', '::1/129', '::1/64x', '10.0.0.0/8'],
        ipDenylist: ['1.2.3.4', '2001:db8::/32'],
      })
    },
    (err: unknown) => {
      assert.ok(err instanceof ConfigError)
      assert.deepEqual(err.problems.map((p) => p.path).sort(), [
        '/ipAllowlist/0',
        '/ipAllowlist/1',
        '/ipAllowlist/2',
        '/ipAllowlist/3',
        '/keys/1/id',
        '/keys/2/key',
        '/keys/3/key',
        '/keys/4/key',
        '/keys/5/key',
      ])
      assert.match(err.message, /duplicate id "a"/)
      assert.match(err.message, /\/keys\/4\/key: must be printable ASCII/)
      assert.ok(!err.message.includes('sk-secret') && !err.message.includes('secrète') && !err.message.includes('blanks'))
      return true
    },
  )
  await app2.close()
  for (const [options, path] of [
    [{ ipAllowList: ['10.0.0.0/8'] }, '/ipAllowList'],
    [{ resolveKey: 'db' }, '/resolveKey'],
    [{ skip: true }, '/skip'],
    [{ cache: { ttlMs: -1 } }, '/cache/ttlMs'],
  ] as const) {
    const app3 = Fastify()
    await assert.rejects(
      async () => app3.register(auth, options as never),
      (err: unknown) => err instanceof ConfigError && err.problems[0]?.path === path,
    )
    await app3.close()
  }
})

test('fastify register options (prefix, logLevel), which Fastify ignores for this plugin, are refused with the way to do it', async (t) => {
  const app = Fastify()
  t.after(() => app.close())
  await assert.rejects(
    async () => {
      await app.register(auth, { keys, prefix: '/x', logLevel: 'warn' } as never)
      await app.ready()
    },
    (err: unknown) =>
      err instanceof ConfigError &&
      err.problems.map((p) => p.path).join() === '/prefix,/logLevel' &&
      err.problems.every((p) => p.message.includes('register it inside a context of your own')),
  )
})

test('the plaintext key never appears in the logs (trace level, accepted and refused keys)', async (t) => {
  const capture = logCapture()
  const { app } = await build({ keys }, { logger: capture.logger })
  t.after(() => app.close())
  await app.inject({ url: '/v1/whoami', headers: { authorization: `Bearer ${KEY_A}` } })
  await app.inject({ url: '/v1/whoami', headers: { 'x-api-key': 'sk-unknown-key-42424242' } })
  app.llmAuth.update([{ id: 'team-z', key: 'sk-zeta-reloaded-999' }])
  assert.ok(capture.lines.length > 4)
  const all = capture.lines.join('\n')
  for (const secret of [KEY_A, 'sk-unknown-key-42424242', 'sk-zeta-reloaded-999', sha256Hex(KEY_A)])
    assert.ok(!all.includes(secret), secret)
  assert.ok(all.includes(sha256Hex('sk-unknown-key-42424242').slice(0, 8)), 'unknown keys are logged by a short hash prefix')
})
