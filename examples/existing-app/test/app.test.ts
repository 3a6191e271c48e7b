import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.js'

let primary: MockUpstream
let backup: MockUpstream
let app: FastifyInstance

before(async () => {
  primary = await startMockUpstream({ defaults: { tokens: 4 } })
  backup = await startMockUpstream({ defaults: { tokens: 4 } })
  app = await buildApp({ primary: primary.url, backup: backup.url })
  await app.listen({ port: 0, host: '127.0.0.1' })
})
after(async () => {
  await app.close()
  await primary.close()
  await backup.close()
})

const chat = () => ({
  method: 'POST' as const,
  url: '/v1/chat/completions',
  payload: { model: 'chat', messages: [{ role: 'user', content: 'hi' }] },
})

test('the existing routes still work next to the gateway routes', async () => {
  assert.deepEqual((await app.inject('/hello')).json(), { hello: 'world' })
})

test('the custom strategy sends traffic to the primary, and the backup answers when it fails', async () => {
  for (let i = 0; i < 3; i++) assert.equal((await app.inject(chat())).statusCode, 200)
  assert.equal(primary.requests.length, 3)
  assert.equal(backup.requests.length, 0)
  primary.setDefaults({ status: 503 })
  assert.equal((await app.inject(chat())).statusCode, 200)
  assert.equal(backup.requests.length, 1)
})

test('the custom usage hook tallies tokens', async () => {
  const usage = (await app.inject('/usage')).json() as Record<string, number>
  assert.ok((usage.chat ?? 0) > 0)
})
