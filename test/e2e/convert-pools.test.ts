// Pools and fallbacks that mix APIs: a model served by an OpenAI-compatible and an Anthropic upstream, and a vLLM
// model falling back to a Claude model when vLLM answers 503. Each official SDK gets one well-formed answer in its
// own API, and the usage record has the answering upstream's numbers, its protocol and the client's API.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { expectedContent, type MockUpstream, promptTokensFor } from '@llmproxy/mock-upstream'
import {
  ask,
  behave,
  CLIENT_APIS,
  type ConvertGateway,
  FINISH,
  startConvertGateway,
  upstreamBody,
  usageFor,
  usageSeen,
} from './convert-helpers.js'

let gw: ConvertGateway
before(async () => {
  gw = await startConvertGateway(
    {
      'oai-pool': { protocol: 'openai' },
      'claude-pool': { protocol: 'anthropic' },
      vllm: { protocol: 'vllm' },
      claude: { protocol: 'anthropic' },
    },
    [
      { name: 'mixed', upstreams: ['oai-pool', 'claude-pool'], upstreamModel: 'house-model', strategy: 'round-robin' },
      { name: 'qwen', upstreams: ['vllm'], upstreamModel: 'Qwen/Qwen3-8B', fallbacks: ['claude-haiku'] },
      { name: 'claude-haiku', upstreams: ['claude'], upstreamModel: 'claude-haiku-4-5' },
    ],
    // One attempt for the requested model, one for its fallback.
    { retry: { attempts: 2 } },
  )
})
after(() => gw.close())

for (const client of CLIENT_APIS) {
  test(`a pool mixing OpenAI and Anthropic upstreams: the ${client} SDK gets well-formed answers from both, each metered as its upstream`, async () => {
    const seen = new Set<string>()
    for (let i = 0; i < 4; i++) {
      const stream = i % 2 === 1
      const what = `request ${i}${stream ? ', streamed' : ''}`
      gw.reset()
      const answer = await ask(client, gw.url, 'mixed', { stream, headers: behave({ tokens: 6, cachedTokens: 2 }) })
      const record = await gw.record()
      const mock = gw.mocks[record.upstream ?? ''] as MockUpstream
      assert.equal(mock.requests.length, 1, what)
      seen.add(record.upstream ?? '')
      const protocol = record.upstream === 'oai-pool' ? 'openai' : 'anthropic'
      const prompt = promptTokensFor(upstreamBody(mock))
      assert.equal(answer.text, expectedContent(6), what)
      assert.equal(answer.finish, FINISH.stop[client], what)
      assert.deepEqual(
        usageSeen(client, answer.usage),
        usageFor(client, { prompt, cacheRead: 2, cacheWrite: 0, output: 6, reasoning: 0 }),
        what,
      )
      assert.equal(record.protocol, protocol, what)
      assert.equal(record.clientApi, client, what)
      assert.equal(record.model, 'mixed', what)
      assert.equal(record.upstreamModel, 'house-model', what)
      assert.equal(record.promptTokens, prompt, what)
      assert.equal(record.completionTokens, 6, what)
      assert.equal(record.cachedTokens, 2, what)
      assert.equal(record.estimated, false, what)
    }
    assert.deepEqual([...seen].sort(), ['claude-pool', 'oai-pool'], 'round-robin used both upstreams')
  })
}

for (const client of CLIENT_APIS) {
  test(`a vLLM model falls back to a Claude model when vLLM answers 503: the ${client} SDK gets Claude's answer in its own API`, async () => {
    const vllm = gw.mocks.vllm as MockUpstream
    const claude = gw.mocks.claude as MockUpstream
    try {
      for (const stream of [false, true]) {
        const what = stream ? 'streamed' : 'not streamed'
        gw.reset()
        vllm.setDefaults({ status: 503 })
        const answer = await ask(client, gw.url, 'qwen', { stream, headers: behave({ tokens: 7 }) })
        assert.equal(vllm.requests.length, 1, what)
        assert.equal(claude.requests.length, 1, what)
        // The Anthropic client's body reached vLLM converted, then Claude as it came (the conversion left it intact).
        assert.equal(upstreamBody(vllm).model, 'Qwen/Qwen3-8B', what)
        const claudeBody = upstreamBody(claude)
        assert.equal(claudeBody.model, 'claude-haiku-4-5', what)
        assert.deepEqual(
          claudeBody.messages,
          [{ role: 'user', content: client === 'anthropic' ? 'Tell me a story' : [{ type: 'text', text: 'Tell me a story' }] }],
          what,
        )
        const prompt = promptTokensFor(claudeBody)
        assert.equal(answer.text, expectedContent(7), what)
        assert.equal(answer.finish, FINISH.stop[client], what)
        assert.deepEqual(
          usageSeen(client, answer.usage),
          usageFor(client, { prompt, cacheRead: 0, cacheWrite: 0, output: 7, reasoning: 0 }),
          what,
        )
        // An Anthropic client on an Anthropic upstream gets its bytes unchanged; the others a converted answer.
        assert.equal(answer.model, client === 'anthropic' ? 'claude-haiku-4-5' : 'qwen', what)
        const record = await gw.record()
        assert.equal(record.upstream, 'claude', what)
        assert.equal(record.protocol, 'anthropic', what)
        assert.equal(record.clientApi, client, what)
        assert.equal(record.model, 'qwen', what)
        assert.equal(record.upstreamModel, 'claude-haiku-4-5', what)
        assert.equal(record.attempts, 2, what)
        assert.equal(record.status, 200, what)
        assert.equal(record.promptTokens, prompt, what)
        assert.equal(record.completionTokens, 7, what)
        assert.equal(record.estimated, false, what)
      }
    } finally {
      vllm.setDefaults({ tokens: 5 })
    }
  })
}
