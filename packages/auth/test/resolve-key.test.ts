import { strict as assert } from 'node:assert'
import { test } from 'node:test'
import type { FastifyRequest } from 'fastify'
import type { KeyIdentity } from '../src/index.js'
import { build, KEY_A, logCapture, type Seen, sha256Hex } from './helpers.js'

const STORE_KEY = 'sk-store-7d8e9f0a1b2c3d4e5f60'

/** A resolveKey over a Map, counting its calls. */
function store(entries: Record<string, KeyIdentity>) {
  const calls: string[] = []
  const resolveKey = async (_request: FastifyRequest, key: string): Promise<KeyIdentity | null> => {
    calls.push(key)
    return entries[key] ?? null
  }
  return { calls, resolveKey }
}

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })

test('resolveKey finds keys not in `keys`; its identity is used and cached (one call for repeated requests)', async (t) => {
  const s = store({
    [STORE_KEY]: { id: 'db-1', models: ['qwen-7b'], limits: { rpm: 5, quota: { tokens: 100, per: 'day' } }, metadata: { plan: 'pro' } },
  })
  const { app, served } = await build({ keys: [{ id: 'cfg', key: KEY_A }], resolveKey: s.resolveKey })
  t.after(() => app.close())
  for (let i = 0; i < 3; i++) {
    const res = await app.inject({ url: '/v1/whoami', headers: bearer(STORE_KEY) })
    assert.equal(res.statusCode, 200)
    assert.deepEqual(res.json<Seen>(), {
      keyId: 'db-1',
      allowedModels: ['qwen-7b'],
      keyLimits: { rpm: 5, quota: { tokens: 100, per: 'day' } },
      llmKey: { id: 'db-1', models: ['qwen-7b'], limits: { rpm: 5, quota: { tokens: 100, per: 'day' } }, metadata: { plan: 'pro' } },
    })
  }
  assert.deepEqual(s.calls, [STORE_KEY], 'called once, with the presented key')
  assert.equal(served[0]?.[0], served[2]?.[0], 'the allowed-model Set is built once per cached identity')
  // Configured keys never reach resolveKey.
  assert.equal((await app.inject({ url: '/v1/whoami', headers: bearer(KEY_A) })).json<Seen>().keyId, 'cfg')
  assert.equal(s.calls.length, 1)
})

test('positive results expire after cache.ttlMs, unknown keys after cache.negativeTtlMs', async (t) => {
  t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 })
  const s = store({ [STORE_KEY]: { id: 'db-1' } })
  const { app, rejections } = await build({ resolveKey: s.resolveKey, cache: { ttlMs: 60_000, negativeTtlMs: 5_000 } })
  t.after(() => app.close())
  const status = async (key: string) => (await app.inject({ url: '/v1/whoami', headers: bearer(key) })).statusCode
  const unknown = 'sk-unknown-0000000000000'
  assert.equal(await status(unknown), 401)
  assert.equal(await status(unknown), 401)
  assert.equal(await status(STORE_KEY), 200)
  assert.equal(await status(STORE_KEY), 200)
  assert.deepEqual(s.calls, [unknown, STORE_KEY])
  assert.equal(rejections.length, 2)
  assert.deepEqual(rejections[1], { reason: 'auth', keyId: null, statusCode: 401 })

  t.mock.timers.tick(5_001)
  assert.equal(await status(unknown), 401)
  assert.equal(await status(STORE_KEY), 200)
  assert.deepEqual(s.calls, [unknown, STORE_KEY, unknown], 'the negative entry expired, the positive one did not')

  t.mock.timers.tick(55_000)
  assert.equal(await status(STORE_KEY), 200)
  assert.deepEqual(s.calls, [unknown, STORE_KEY, unknown, STORE_KEY])
})

test('cache.ttlMs 0 disables the cache; cache.max evicts the least recently used key', async (t) => {
  const keys = { 'sk-one-1111111111': { id: 'one' }, 'sk-two-2222222222': { id: 'two' }, 'sk-three-3333333333': { id: 'three' } }
  const uncached = store(keys)
  const small = store(keys)
  const a = await build({ resolveKey: uncached.resolveKey, cache: { ttlMs: 0, negativeTtlMs: 0 } })
  const b = await build({ resolveKey: small.resolveKey, cache: { max: 2 } })
  t.after(() => Promise.all([a.app.close(), b.app.close()]))

  await a.app.inject({ url: '/v1/whoami', headers: bearer('sk-one-1111111111') })
  await a.app.inject({ url: '/v1/whoami', headers: bearer('sk-one-1111111111') })
  assert.equal(uncached.calls.length, 2)

  const hit = async (key: string) => assert.equal((await b.app.inject({ url: '/v1/whoami', headers: bearer(key) })).statusCode, 200)
  await hit('sk-one-1111111111')
  await hit('sk-two-2222222222')
  await hit('sk-one-1111111111') // one is now the most recently used
  await hit('sk-three-3333333333') // evicts two
  assert.equal(small.calls.length, 3)
  await hit('sk-one-1111111111')
  assert.equal(small.calls.length, 3, 'one stayed cached')
  await hit('sk-two-2222222222')
  assert.deepEqual(small.calls, ['sk-one-1111111111', 'sk-two-2222222222', 'sk-three-3333333333', 'sk-two-2222222222'])
})

test('concurrent requests with the same unknown key share one resolveKey call', async (t) => {
  let calls = 0
  let arrived = 0
  let open = () => {}
  const gate = new Promise<void>((resolve) => {
    open = resolve
  })
  const { app } = await build({
    // skip runs in the auth hook just before the lookup: it counts the requests that reached it.
    skip: () => {
      arrived++
      return false
    },
    resolveKey: async (_request, key) => {
      calls++
      await gate
      return key === STORE_KEY ? { id: 'db-1' } : null
    },
  })
  t.after(() => app.close())
  const pending = Array.from({ length: 5 }, () => app.inject({ url: '/v1/whoami', headers: bearer(STORE_KEY) }))
  const other = app.inject({ url: '/v1/whoami', headers: bearer('sk-other-key-99999999') })
  while (arrived < 6) await new Promise((resolve) => setImmediate(resolve))
  open()
  const responses = await Promise.all(pending)
  for (const res of responses) assert.equal(res.json<Seen>().keyId, 'db-1')
  assert.equal((await other).statusCode, 401)
  assert.equal(calls, 2, 'one call per distinct key')
})

for (const [name, resolveKey] of [
  [
    'throws',
    (_request: FastifyRequest, key: string) => {
      throw new Error(`lookup failed for ${key}`)
    },
  ],
  ['rejects', async (_request: FastifyRequest, key: string) => Promise.reject(new Error(`db timeout looking up ${key}`))],
] as const) {
  test(`a resolveKey that ${name} → 500 server_error in the OpenAI shape; the key leaks neither to the client nor to the logs`, async (t) => {
    const capture = logCapture()
    const { app } = await build({ resolveKey }, { logger: capture.logger })
    t.after(() => app.close())
    for (let i = 0; i < 2; i++) {
      const res = await app.inject({ url: '/v1/whoami', headers: { 'x-api-key': STORE_KEY } })
      assert.equal(res.statusCode, 500)
      assert.deepEqual(res.json(), {
        error: { message: 'Internal gateway error.', type: 'server_error', param: null, code: 'llmproxy_internal_error' },
      })
      assert.ok(!res.body.includes(STORE_KEY))
    }
    const all = capture.lines.join('\n')
    const failures = capture.lines.filter((line) => line.includes('resolveKey failed'))
    assert.equal(failures.length, 2, 'failures are logged and not cached')
    assert.match(failures[0] ?? '', /\[redacted\]/)
    assert.ok(!all.includes(STORE_KEY))
    assert.ok(!all.includes(sha256Hex(STORE_KEY)))
  })
}

test('a resolveKey returning something that is not an identity → 500', async (t) => {
  const { app } = await build({ resolveKey: () => ({ id: '' }) })
  t.after(() => app.close())
  const res = await app.inject({ url: '/v1/whoami', headers: bearer(STORE_KEY) })
  assert.equal(res.statusCode, 500)
  assert.equal(res.json().error.code, 'llmproxy_internal_error')
})

test('a synchronous resolveKey works, and fastify.llmAuth.clearCache() forgets its results', async (t) => {
  let calls = 0
  const { app } = await build({
    resolveKey: (_request, key) => {
      calls++
      return key === STORE_KEY ? { id: 'sync', models: ['*'] } : null
    },
  })
  t.after(() => app.close())
  const first = await app.inject({ url: '/v1/whoami', headers: bearer(STORE_KEY) })
  assert.deepEqual(first.json<Seen>(), { keyId: 'sync', allowedModels: null, keyLimits: null, llmKey: { id: 'sync', models: ['*'] } })
  await app.inject({ url: '/v1/whoami', headers: bearer(STORE_KEY) })
  assert.equal(calls, 1)
  app.llmAuth.clearCache()
  await app.inject({ url: '/v1/whoami', headers: bearer(STORE_KEY) })
  assert.equal(calls, 2)
})
