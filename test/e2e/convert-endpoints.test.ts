// The endpoints around chat that each SDK calls: the model list in each API's shape (`openai` models.list(),
// @anthropic-ai/sdk models.list() with anthropic-version, @google/genai models.list() on /v1beta/models), Anthropic's
// token counting (proxied for an Anthropic-only model, an estimate marked `x-llmproxy-estimated: true` otherwise),
// and authentication the way each SDK sends its key (Bearer, x-api-key, x-goog-api-key).
import assert from 'node:assert/strict'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import { after, before, test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { ApiError } from '@google/genai'
import { expectedContent } from '@llmproxy/mock-upstream'
import OpenAI from 'openai'
import {
  API_KEY,
  anthropicClient,
  ask,
  CLIENT_APIS,
  type ConvertGateway,
  geminiClient,
  openaiClient,
  startConvertGateway,
} from './convert-helpers.js'

/** A stand-in for Anthropic's count_tokens (the mock upstream does not serve it): records what it was sent. */
interface CountTokensServer {
  url: string
  requests: { headers: IncomingHttpHeaders; body: Record<string, unknown> }[]
  close(): Promise<void>
}

async function startCountTokensServer(): Promise<CountTokensServer> {
  const requests: CountTokensServer['requests'] = []
  const server: Server = createServer((req, res) => {
    let text = ''
    req.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8')
    })
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/messages/count_tokens') {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"type":"error","error":{"type":"not_found_error","message":"no"}}')
        return
      }
      requests.push({ headers: req.headers, body: JSON.parse(text) as Record<string, unknown> })
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"input_tokens":1234}')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  return {
    url: `http://127.0.0.1:${address.port}`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

const MODELS = [
  { name: 'claude-sonnet', aliases: ['sonnet'], upstreams: ['claude'], upstreamModel: 'claude-sonnet-4-6' },
  { name: 'qwen', upstreams: ['vllm'], upstreamModel: 'Qwen/Qwen3-8B' },
  { name: 'gemini-flash', upstreams: ['gemini'], upstreamModel: 'gemini-2.5-flash' },
]
const LISTED = ['claude-sonnet', 'sonnet', 'qwen', 'gemini-flash']

let counter: CountTokensServer
let gw: ConvertGateway
/** The same gateway with API keys. */
let authed: ConvertGateway
before(async () => {
  counter = await startCountTokensServer()
  const upstreams = {
    claude: { protocol: 'anthropic' as const, url: counter.url },
    vllm: { protocol: 'vllm' as const },
    gemini: { protocol: 'gemini' as const },
  }
  gw = await startConvertGateway(upstreams, MODELS)
  authed = await startConvertGateway(
    { vllm: { protocol: 'vllm' }, claude: { protocol: 'anthropic' }, gemini: { protocol: 'gemini' } },
    MODELS,
    { auth: { keys: [{ id: 'team-a', key: API_KEY }] } },
  )
})
after(async () => {
  await gw?.close()
  await authed?.close()
  await counter?.close()
})

// ── model lists ─────────────────────────────────────────────────────────────────────────────────

test("models.list() of each SDK reads the gateway's models in its own API's shape", async () => {
  const openaiIds: string[] = []
  for await (const model of openaiClient(gw.url).models.list()) openaiIds.push(model.id)
  assert.deepEqual(openaiIds, LISTED)

  // @anthropic-ai/sdk sends anthropic-version: the list comes in Anthropic's shape.
  const anthropicModels: Anthropic.ModelInfo[] = []
  for await (const model of anthropicClient(gw.url).models.list()) anthropicModels.push(model)
  assert.deepEqual(
    anthropicModels.map((m) => [m.type, m.id, m.display_name]),
    LISTED.map((id) => ['model', id, id]),
  )

  const geminiNames: string[] = []
  for await (const model of await geminiClient(gw.url).models.list()) geminiNames.push(model.name ?? '')
  assert.deepEqual(
    geminiNames,
    LISTED.map((id) => `models/${id}`),
  )
})

test("models.retrieve() / models.get() of each SDK read one model in its own API's shape; an unknown one is its 404", async () => {
  const id = LISTED[0] as string
  const openaiModel = await openaiClient(gw.url).models.retrieve(id)
  assert.deepEqual([openaiModel.id, openaiModel.object], [id, 'model'])
  const anthropicModel = await anthropicClient(gw.url).models.retrieve(id)
  assert.deepEqual([anthropicModel.type, anthropicModel.id], ['model', id])
  const geminiModel = await geminiClient(gw.url).models.get({ model: id })
  assert.equal(geminiModel.name, `models/${id}`)

  // An id with a slash (vLLM's), sent unencoded as some clients do.
  const raw = await fetch(`${gw.url}/v1/models/org/no-such-model`, { headers: { authorization: `Bearer ${API_KEY}` } })
  assert.equal(raw.status, 404)
  assert.equal(((await raw.json()) as { error: { code: string } }).error.code, 'model_not_found')
  await assert.rejects(openaiClient(gw.url).models.retrieve('no-such-model'), (err: unknown) => {
    assert.ok(err instanceof OpenAI.NotFoundError)
    assert.equal(err.code, 'model_not_found')
    return true
  })
  // In Anthropic's error shape, which the SDK reads its error type from.
  await assert.rejects(anthropicClient(gw.url).models.retrieve('no-such-model'), (err: unknown) => {
    assert.ok(err instanceof Anthropic.NotFoundError)
    assert.equal((err.error as { error?: { type?: string } }).error?.type, 'not_found_error')
    return true
  })
  await assert.rejects(geminiClient(gw.url).models.get({ model: 'no-such-model' }), (err: unknown) => {
    assert.ok(err instanceof ApiError)
    assert.equal(err.status, 404)
    return true
  })
})

test('models.list() pages: Anthropic limit / after_id / before_id, Gemini pageSize / pageToken', async () => {
  const anthropic = anthropicClient(gw.url)
  const first = await anthropic.models.list({ limit: 1 })
  assert.deepEqual([first.data.map((m) => m.id), first.has_more, first.last_id], [[LISTED[0]], true, LISTED[0]])
  // The SDK's auto-pagination asks for the next page after last_id until has_more is false.
  const paged: string[] = []
  for await (const model of first) paged.push(model.id)
  assert.deepEqual(paged, LISTED)
  const after = await anthropic.models.list({ after_id: 'sonnet', limit: 1 })
  assert.deepEqual([after.data.map((m) => m.id), after.has_more], [['qwen'], true])
  const before = await anthropic.models.list({ before_id: 'qwen', limit: 1 })
  assert.deepEqual([before.data.map((m) => m.id), before.has_more], [['sonnet'], true])
  await assert.rejects(anthropic.models.list({ after_id: 'no-such-model' }), Anthropic.BadRequestError)
  for (const query of ['limit=0', 'limit=x', 'after_id=qwen&before_id=qwen']) {
    const res = await fetch(`${gw.url}/v1/models?${query}`, { headers: { 'anthropic-version': '2023-06-01' } })
    assert.equal(res.status, 400, query)
  }
  const token = await fetch(`${gw.url}/v1beta/models?pageToken=no-such-model`)
  assert.equal(((await token.json()) as { error: { status: string } }).error.status, 'INVALID_ARGUMENT')

  for (const apiVersion of [undefined, 'v1'] as const) {
    const pager = await geminiClient(gw.url, apiVersion === undefined ? {} : { apiVersion }).models.list({ config: { pageSize: 3 } })
    assert.equal(pager.page.length, 3, apiVersion)
    const names: string[] = []
    for await (const model of pager) names.push(model.name ?? '')
    assert.deepEqual(
      names,
      LISTED.map((id) => `models/${id}`),
      apiVersion,
    )
  }
})

test("@google/genai with apiVersion 'v1' lists and gets the models in Gemini's shape on /v1/models", async () => {
  const v1 = geminiClient(gw.url, { apiVersion: 'v1' })
  const names: string[] = []
  for await (const model of await v1.models.list()) names.push(model.name ?? '')
  assert.deepEqual(
    names,
    LISTED.map((id) => `models/${id}`),
  )
  const model = await v1.models.get({ model: 'qwen' })
  assert.deepEqual([model.name, model.displayName], ['models/qwen', 'qwen'])
  await assert.rejects(v1.models.get({ model: 'no-such-model' }), (err: unknown) => {
    assert.ok(err instanceof ApiError, String(err))
    assert.equal(err.status, 404)
    assert.match(err.message, /"status":"NOT_FOUND"/)
    return true
  })
})

test("the Anthropic and Gemini routes the gateway does not serve are each SDK's 404, in its own API's shape", async () => {
  const anthropic = anthropicClient(gw.url)
  for (const call of [() => anthropic.messages.batches.list(), () => anthropic.beta.files.list()]) {
    await assert.rejects(call(), (err: unknown) => {
      assert.ok(err instanceof Anthropic.NotFoundError, String(err))
      assert.equal((err.error as { error?: { type?: string } }).error?.type, 'not_found_error')
      return true
    })
  }
  const gemini = geminiClient(gw.url)
  for (const call of [() => gemini.caches.list(), () => gemini.files.list()]) {
    await assert.rejects(call(), (err: unknown) => {
      assert.ok(err instanceof ApiError, String(err))
      assert.equal(err.status, 404)
      assert.match(err.message, /"status":"NOT_FOUND"/)
      return true
    })
  }
})

// ── Anthropic token counting ────────────────────────────────────────────────────────────────────

const COUNT_BODY = {
  system: 'You are terse.',
  messages: [{ role: 'user' as const, content: 'How many tokens is this question, roughly?' }],
  tools: [{ name: 'get_time', description: 'The time', input_schema: { type: 'object' as const, properties: {} } }],
}

test('messages.countTokens: proxied to the upstream for an Anthropic-only model (its key, its model name)', async () => {
  counter.requests.length = 0
  const { data, response } = await anthropicClient(gw.url)
    .messages.countTokens({ model: 'sonnet', ...COUNT_BODY })
    .withResponse()
  assert.equal(data.input_tokens, 1234)
  assert.equal(response.headers.get('x-llmproxy-estimated'), null)
  assert.equal(counter.requests.length, 1)
  const seen = counter.requests[0]
  assert.equal(seen?.body.model, 'claude-sonnet-4-6')
  assert.deepEqual(seen?.body.messages, COUNT_BODY.messages)
  assert.equal(seen?.headers['x-api-key'], 'sk-upstream-claude')
  assert.ok(typeof seen?.headers['anthropic-version'] === 'string')
})

test('messages.countTokens: an estimate marked x-llmproxy-estimated for models served by other APIs; no upstream asked', async () => {
  gw.reset()
  for (const model of ['qwen', 'gemini-flash']) {
    const { data, response } = await anthropicClient(gw.url)
      .messages.countTokens({ model, ...COUNT_BODY })
      .withResponse()
    assert.equal(response.headers.get('x-llmproxy-estimated'), 'true', model)
    assert.ok(Number.isInteger(data.input_tokens) && data.input_tokens > 0, `${model}: ${data.input_tokens}`)
  }
  assert.equal(gw.mocks.vllm?.requests.length, 0)
  assert.equal(gw.mocks.gemini?.requests.length, 0)
})

// ── authentication per SDK ──────────────────────────────────────────────────────────────────────

for (const client of CLIENT_APIS) {
  const how = { openai: 'Authorization: Bearer', anthropic: 'x-api-key', gemini: 'x-goog-api-key' }[client]
  test(`auth: the ${client} SDK authenticates with ${how}; a wrong key is its SDK's 401; the key never goes upstream`, async () => {
    authed.reset()
    for (const model of ['qwen', 'claude-sonnet']) {
      const answer = await ask(client, authed.url, model, { stream: false })
      assert.equal(answer.text, expectedContent(5), model)
      const record = await authed.record()
      assert.equal(record.keyId, 'team-a', model)
      authed.records.length = 0
    }
    for (const mock of Object.values(authed.mocks)) {
      for (const request of mock.requests)
        assert.ok(!JSON.stringify(request.headers).includes(API_KEY), "the client's key reached an upstream")
    }
    const err = await wrongKey(client)
    if (client === 'openai') assert.ok(err instanceof OpenAI.AuthenticationError, String(err))
    else if (client === 'anthropic') assert.ok(err instanceof Anthropic.AuthenticationError, String(err))
    else assert.ok(err instanceof ApiError && err.status === 401, String(err))
  })
}

test("auth errors reach the Anthropic and Gemini SDKs in their own API's shape", async () => {
  const anthropic = await wrongKey('anthropic')
  assert.ok(anthropic instanceof Anthropic.AuthenticationError, String(anthropic))
  assert.deepEqual((anthropic.error as { type?: string; error?: { type?: string } }).type, 'error')
  assert.deepEqual((anthropic.error as { error?: { type?: string } }).error?.type, 'authentication_error')
  const gemini = await wrongKey('gemini')
  assert.ok(gemini instanceof ApiError, String(gemini))
  assert.match(gemini.message, /"status":"UNAUTHENTICATED"/)
})

/** A chat request with a key the gateway does not know: the error the SDK raises. */
async function wrongKey(client: (typeof CLIENT_APIS)[number]): Promise<unknown> {
  const apiKey = 'sk-not-a-key-of-this-gateway'
  try {
    switch (client) {
      case 'openai':
        await openaiClient(authed.url, { apiKey }).chat.completions.create({ model: 'qwen', messages: [{ role: 'user', content: 'Hi' }] })
        break
      case 'anthropic':
        await anthropicClient(authed.url, { apiKey }).messages.create({
          model: 'qwen',
          max_tokens: 10,
          messages: [{ role: 'user', content: 'Hi' }],
        })
        break
      case 'gemini':
        await geminiClient(authed.url, { apiKey }).models.generateContent({ model: 'qwen', contents: 'Hi' })
        break
    }
  } catch (err) {
    return err
  }
  assert.fail('a wrong key was accepted')
}
