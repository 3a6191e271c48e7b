// Any client API on any upstream (issue #13): each official SDK (openai, @anthropic-ai/sdk, @google/genai) asks a
// model served by an OpenAI-compatible, an Anthropic and a Gemini upstream, streamed and not, and gets the mock's
// exact text, its finish reason and its exact usage in the client's own terms (cache reads and writes included), and
// the model name it asked for. Same-API pairs pass the upstream's bytes through unchanged.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { expectedContent, type MockUpstream, promptTokensFor } from '@llmproxy/mock-upstream'
import {
  ask,
  behave,
  CLIENT_APIS,
  type ClientApi,
  type ConvertGateway,
  FINISH,
  openaiClient,
  recordingFetch,
  startConvertGateway,
  upstreamBody,
  usageFor,
  usageSeen,
} from './convert-helpers.js'

/** Upstream kind → the model clients ask for and the name its upstream knows it by. */
const MODELS: Record<ClientApi, { name: string; upstreamModel: string; protocol: 'openai' | 'anthropic' | 'gemini' }> = {
  openai: { name: 'gpt-4o', upstreamModel: 'gpt-4o-2024-08-06', protocol: 'openai' },
  anthropic: { name: 'claude-sonnet', upstreamModel: 'claude-sonnet-4-6', protocol: 'anthropic' },
  gemini: { name: 'gemini-flash', upstreamModel: 'gemini-2.5-flash', protocol: 'gemini' },
}

let gw: ConvertGateway
before(async () => {
  gw = await startConvertGateway(
    {
      openai: { protocol: 'openai', recorded: true },
      anthropic: { protocol: 'anthropic', recorded: true },
      gemini: { protocol: 'gemini', recorded: true },
    },
    CLIENT_APIS.map((kind) => ({ name: MODELS[kind].name, upstreams: [kind], upstreamModel: MODELS[kind].upstreamModel })),
  )
})
after(() => gw.close())

const CACHE_READ = 3
const CACHE_WRITE = 2

for (const client of CLIENT_APIS) {
  for (const upstream of CLIENT_APIS) {
    const passthrough = client === upstream
    test(`${client} SDK → ${upstream} upstream${passthrough ? ' (passthrough)' : ''}: text, finish, usage with cache tokens, model, record`, async () => {
      const model = MODELS[upstream]
      for (const stream of [false, true]) {
        for (const finish of ['stop', 'length'] as const) {
          const what = `${stream ? 'streamed' : 'not streamed'}, ${finish}`
          gw.reset()
          const tokens = finish === 'length' ? 4 : 6
          const answer = await ask(client, gw.url, model.name, {
            stream,
            ...(finish === 'length' ? { cap: 4 } : {}),
            headers: behave({ tokens: 6, cachedTokens: CACHE_READ, cacheWriteTokens: CACHE_WRITE }),
          })
          const mock = gw.mocks[upstream]
          assert.equal(mock?.requests.length, 1, what)
          const prompt = promptTokensFor(upstreamBody(mock))
          // Only Anthropic reports cache writes; the others count them in the prompt.
          const cacheWrite = upstream === 'anthropic' ? CACHE_WRITE : 0
          assert.equal(answer.text, expectedContent(tokens), what)
          assert.equal(answer.finish, FINISH[finish][client], what)
          assert.deepEqual(
            usageSeen(client, answer.usage),
            usageFor(client, { prompt, cacheRead: CACHE_READ, cacheWrite, output: tokens, reasoning: 0 }),
            what,
          )
          // A converted answer names the model the client asked for; a passthrough one is the upstream's bytes.
          assert.equal(answer.model, passthrough ? model.upstreamModel : model.name, what)
          const record = await gw.record()
          assert.equal(record.clientApi, client, what)
          assert.equal(record.protocol, model.protocol, what)
          assert.equal(record.model, model.name, what)
          assert.equal(record.upstreamModel, model.upstreamModel, what)
          assert.equal(record.stream, stream, what)
          assert.equal(record.status, 200, what)
          assert.equal(record.promptTokens, prompt, what)
          assert.equal(record.completionTokens, tokens, what)
          assert.equal(record.totalTokens, prompt + tokens, what)
          assert.equal(record.cachedTokens, CACHE_READ, what)
          assert.equal(record.estimated, false, what)
        }
      }
    })
  }
}

for (const api of CLIENT_APIS) {
  test(`${api} SDK on an ${api} upstream: the streamed bytes the client receives are the upstream's, unchanged`, async () => {
    gw.reset()
    const recording = recordingFetch()
    const answer = await ask(api, gw.url, MODELS[api].name, { stream: true, fetch: recording.fetch, headers: behave({ tokens: 7 }) })
    assert.equal(answer.text, expectedContent(7))
    assert.equal(recording.bodies.length, 1)
    const received = await recording.bodies[0]
    const sent = await gw.recorders[api]?.bodies[0]
    assert.ok(sent !== undefined && sent.length > 0)
    assert.equal(received, sent)
  })
}

test('OpenAI SDK: data: URLs OpenAI takes (image/jpg, parameters) reach Claude and Gemini with the media type they take', async () => {
  const png = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=='
  const openai = openaiClient(gw.url)
  for (const [url, mediaType] of [
    [`data:image/jpg;base64,${png}`, 'image/jpeg'],
    [`data:image/png;name=cat.png;base64,${png}`, 'image/png'],
  ] as const) {
    const content = [
      { type: 'text' as const, text: 'What is this?' },
      { type: 'image_url' as const, image_url: { url } },
    ]
    gw.reset()
    await openai.chat.completions.create({ model: MODELS.anthropic.name, messages: [{ role: 'user', content }] })
    const claude = upstreamBody(gw.mocks.anthropic as MockUpstream).messages as { content: unknown[] }[]
    assert.deepEqual(claude[0]?.content[1], { type: 'image', source: { type: 'base64', media_type: mediaType, data: png } }, url)
    await openai.chat.completions.create({ model: MODELS.gemini.name, messages: [{ role: 'user', content }] })
    const gemini = upstreamBody(gw.mocks.gemini as MockUpstream).contents as { parts: unknown[] }[]
    assert.deepEqual(gemini[0]?.parts[1], { inlineData: { mimeType: mediaType, data: png } }, url)
  }
})

test('OpenAI SDK: a final assistant message ending in a space (a prefill) reaches Claude trimmed, which it takes', async () => {
  gw.reset()
  await openaiClient(gw.url).chat.completions.create({
    model: MODELS.anthropic.name,
    messages: [
      { role: 'user', content: 'List 3 fruits' },
      { role: 'assistant', content: 'Sure, here they are: ' },
    ],
  })
  const claude = upstreamBody(gw.mocks.anthropic as MockUpstream).messages as unknown[]
  assert.deepEqual(claude.at(-1), { role: 'assistant', content: [{ type: 'text', text: 'Sure, here they are:' }] })
})
