import { strict as assert } from 'node:assert'
import { test } from 'node:test'
import { request } from 'undici'
import { build, KEY_A, type Seen } from './helpers.js'

test('over a real socket: 127.0.0.1 is allowed, the key is read from the headers, 401s carry WWW-Authenticate', async (t) => {
  const { app } = await build({ keys: [{ id: 'team-a', key: KEY_A }], ipAllowlist: ['127.0.0.0/8', '::1'] })
  t.after(() => app.close())
  const address = await app.listen({ port: 0, host: '127.0.0.1' })

  const ok = await request(`${address}/v1/whoami`, { headers: { authorization: `Bearer ${KEY_A}` } })
  assert.equal(ok.statusCode, 200)
  assert.equal(((await ok.body.json()) as Seen).keyId, 'team-a')

  const anthropic = await request(`${address}/v1/whoami`, { headers: { 'x-api-key': KEY_A } })
  assert.equal(anthropic.statusCode, 200)
  await anthropic.body.dump()

  const denied = await request(`${address}/v1/whoami?api_key=${KEY_A}`)
  assert.equal(denied.statusCode, 401)
  assert.equal(denied.headers['www-authenticate'], 'Bearer realm="llmproxy"')
  assert.deepEqual(((await denied.body.json()) as { error: { code: string } }).error.code, 'llmproxy_missing_api_key')

  const health = await request(`${address}/health`)
  assert.equal(health.statusCode, 200)
  await health.body.dump()
})

test('over a real socket: an address outside the allowlist gets 403', async (t) => {
  const { app } = await build({ keys: [{ id: 'team-a', key: KEY_A }], ipAllowlist: ['10.0.0.0/8'] })
  t.after(() => app.close())
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  const res = await request(`${address}/v1/whoami`, { headers: { authorization: `Bearer ${KEY_A}` } })
  assert.equal(res.statusCode, 403)
  assert.equal(((await res.body.json()) as { error: { code: string } }).error.code, 'llmproxy_ip_denied')
})
