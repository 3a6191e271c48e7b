import { strict as assert } from 'node:assert'
import { test } from 'node:test'
import { buildApp, KeyDatabase } from '../src/app.js'

const KEY = 'sk-example-1f2e3d4c5b6a7980'

test('custom key store example: health is open, keys come from the store, lookups are cached', async (t) => {
  const db = new KeyDatabase()
  await db.insert(KEY, { id: 'acme', plan: 'free', models: ['qwen-7b'], revoked: false })
  const app = await buildApp(db)
  t.after(() => app.close())

  assert.equal((await app.inject({ url: '/health' })).statusCode, 200)

  for (let i = 0; i < 3; i++) {
    const me = await app.inject({ url: '/v1/me', headers: { authorization: `Bearer ${KEY}` } })
    assert.equal(me.statusCode, 200)
    assert.deepEqual(me.json(), { id: 'acme', plan: 'free', limits: { rpm: 10, quota: { tokens: 100_000, per: 'day' } } })
  }
  assert.equal(db.lookups, 1, 'the store was asked once')

  const unknown = await app.inject({ url: '/v1/me', headers: { 'x-api-key': 'sk-nope' } })
  assert.equal(unknown.statusCode, 401)
  assert.equal(unknown.json().error.code, 'llmproxy_invalid_api_key')

  await db.revoke('acme')
  app.llmAuth.clearCache()
  assert.equal((await app.inject({ url: '/v1/me', headers: { authorization: `Bearer ${KEY}` } })).statusCode, 401)
})
