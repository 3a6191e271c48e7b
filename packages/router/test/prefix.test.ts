// The gateway mounted under a prefix in an app's own context (`register(…, { prefix: '/llm' })`): every client
// still gets answers and errors in its own API's shape, as the official SDKs read them.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { GoogleGenAI } from '@google/genai'
import { startMockUpstream } from '@llmproxy/mock-upstream'
import { upstreams } from '@llmproxy/upstreams'
import Fastify, { type FastifyInstance } from 'fastify'
import { router } from '../src/index.js'

let app: FastifyInstance
let url: string
let close: () => Promise<void>
before(async () => {
  const mock = await startMockUpstream({ defaults: { tokens: 3 } })
  app = Fastify({ logger: false })
  await app.register(
    async (gateway) => {
      await gateway.register(upstreams, {
        upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
        healthChecks: { enabled: false },
      })
      await gateway.register(router, { models: [{ name: 'm', upstreams: ['mock'], upstreamModel: 'mock-model' }] })
    },
    { prefix: '/llm' },
  )
  url = `${await app.listen({ port: 0, host: '127.0.0.1' })}/llm`
  close = async () => {
    await app.close()
    await mock.close()
  }
})
after(() => close())

test('under a prefix: Anthropic clients get Anthropic answers, errors and model lists', async () => {
  const client = new Anthropic({ baseURL: url, apiKey: 'unused', maxRetries: 0 })
  const message = await client.messages.create({ model: 'm', max_tokens: 16, messages: [{ role: 'user', content: 'Hi' }] })
  assert.equal(message.type, 'message')
  const missing = await client.messages.create({ model: 'nope', max_tokens: 16, messages: [{ role: 'user', content: 'Hi' }] }).then(
    () => null,
    (err: unknown) => err,
  )
  assert.ok(missing instanceof Anthropic.NotFoundError, String(missing))
  assert.equal((missing.error as { error?: { type?: string } }).error?.type, 'not_found_error')
  const models = await client.models.list()
  assert.deepEqual(
    models.data.map((m) => [m.type, m.id, typeof m.display_name]),
    [['model', 'm', 'string']],
  )
})

test('a prefix given to the plugin itself, which Fastify would ignore (the routes at the root), is refused with the way to do it', async () => {
  const bare = Fastify({ logger: false })
  await assert.rejects(async () => {
    await bare.register(upstreams, {
      upstreams: [{ name: 'mock', url: 'http://127.0.0.1:1', protocol: 'openai' }],
      healthChecks: { enabled: false },
    })
    await bare.register(router, { models: [{ name: 'm', upstreams: ['mock'] }], prefix: '/llm' } as never)
    await bare.ready()
  }, /\/prefix: is ignored by Fastify for this plugin .* register it inside a context of your own/)
  await bare.close()
})

test('under a prefix: Gemini clients get Gemini errors', async () => {
  const client = new GoogleGenAI({ apiKey: 'unused', httpOptions: { baseUrl: url } })
  const missing = await client.models.generateContent({ model: 'nope', contents: 'Hi' }).then(
    () => null,
    (err: unknown) => err,
  )
  assert.ok(missing instanceof Error, String(missing))
  // The SDK shows the body it got: Gemini's error has a `status` (OpenAI's has none).
  assert.match(missing.message, /"status":\s*"NOT_FOUND"/)
})
