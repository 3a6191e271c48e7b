import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import type { FastifyInstance } from 'fastify'
import { buildApp, GATEWAY_RPM } from '../src/app.js'

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

test('the gateway’s metrics are on the app’s /metrics: its requests and tokens by model, its upstreams’ health', async () => {
  const text = (await app.inject('/metrics')).body
  assert.match(text, /^llmproxy_requests_total\{[^}]*model="chat"[^}]*\} [1-9]/m)
  assert.match(text, /^llmproxy_completion_tokens_total\{[^}]*model="chat"[^}]*\} [1-9]/m)
  assert.match(text, /^llmproxy_upstream_up\{upstream="primary"\} 1$/m)
})

test('the app’s own @fastify/rate-limit and LLMProxy’s limits each count their own routes', async () => {
  // The gateway's limit: its headers on its routes, and its 429 once the remaining requests are spent.
  const first = await app.inject(chat())
  assert.equal(first.statusCode, 200)
  assert.equal(first.headers['x-ratelimit-limit-requests'], `${GATEWAY_RPM}`)
  assert.equal(first.headers['x-ratelimit-limit'], undefined, 'the app’s limiter leaves the gateway routes alone')
  const remaining = Number(first.headers['x-ratelimit-remaining-requests'])
  for (let i = 0; i < remaining; i++) assert.equal((await app.inject(chat())).statusCode, 200)
  const limited = await app.inject(chat())
  assert.equal(limited.statusCode, 429)
  assert.equal(limited.json().error.code, 'llmproxy_rate_limited')

  // The app's own route: its own limit of 3, its own headers, untouched by the gateway's spent limit.
  const hello = await app.inject('/hello')
  assert.equal(hello.statusCode, 200)
  assert.equal(hello.headers['x-ratelimit-limit'], '3')
  assert.equal(hello.headers['x-ratelimit-limit-requests'], undefined, 'the gateway’s limits leave the app’s routes alone')
  for (let i = Number(hello.headers['x-ratelimit-remaining']); i > 0; i--) assert.equal((await app.inject('/hello')).statusCode, 200)
  assert.equal((await app.inject('/hello')).statusCode, 429)
})
