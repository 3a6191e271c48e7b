// @anthropic-ai/sdk's message threads (beta.messages.thread(), and toolRunner(), which threads by default): after its
// first turn a thread sends only the new messages with `thread: {type: "continue"}` and leaves `system` and `tools`
// out. A model served over another API gets the gateway's thread_not_found for that, and the SDK sends the whole
// conversation again: the upstream sees every turn with the system prompt and the tools. An Anthropic upstream keeps
// its threads: `thread` goes to it as sent.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type Anthropic from '@anthropic-ai/sdk'
import { betaTool } from '@anthropic-ai/sdk/helpers/beta/json-schema'
import { expectedContent, type RecordedRequest } from '@llmproxy/mock-upstream'
import { anthropicClient, type ConvertGateway, recordingFetch, startConvertGateway } from './convert-helpers.js'

const MODELS = [
  { name: 'qwen', upstreams: ['vllm'], upstreamModel: 'Qwen/Qwen3-8B' },
  { name: 'claude', upstreams: ['claude'], upstreamModel: 'claude-sonnet-4-6' },
]
const SYSTEM = 'You are a pirate.'

let gw: ConvertGateway
before(async () => {
  gw = await startConvertGateway({ vllm: { protocol: 'vllm' }, claude: { protocol: 'anthropic' } }, MODELS)
})
after(async () => {
  await gw?.close()
})

const bodies = (requests: RecordedRequest[]) => requests.map((r) => r.body as Record<string, unknown>)

test('thread.send() twice on an OpenAI upstream: the second turn reaches it with the whole conversation and the system prompt', async () => {
  gw.reset()
  const recording = recordingFetch()
  const thread = anthropicClient(gw.url, { fetch: recording.fetch }).beta.messages.thread({ model: 'qwen', max_tokens: 50, system: SYSTEM })
  const first = await thread.send({ role: 'user', content: 'My name is Ann.' })
  const second = await thread.send({ role: 'user', content: 'What is my name?' })
  for (const reply of [first, second]) assert.deepEqual(reply.content, [{ type: 'text', text: expectedContent(5) }])

  const sent = bodies(gw.mocks.vllm?.requests ?? [])
  assert.deepEqual(
    sent.map((body) => body.messages),
    [
      [
        { role: 'system', content: SYSTEM },
        { role: 'user', content: 'My name is Ann.' },
      ],
      [
        { role: 'system', content: SYSTEM },
        { role: 'user', content: 'My name is Ann.' },
        { role: 'assistant', content: expectedContent(5) },
        { role: 'user', content: 'What is my name?' },
      ],
    ],
  )
  // The continue was answered by the gateway itself, in the shape the SDK recovers from; the replay then went upstream.
  const answers = await Promise.all(recording.bodies)
  assert.equal(answers.length, 3)
  assert.deepEqual(JSON.parse(answers[1] as string), {
    type: 'error',
    error: {
      type: 'not_found_error',
      message:
        'No such message thread: the gateway keeps no message threads for this model (it is served over another API); send the whole conversation without `thread`.',
      code: 'llmproxy_thread_not_kept',
      details: { error_code: 'thread_not_found' },
    },
  })
})

for (const stream of [false, true]) {
  test(`toolRunner() with its default thread, stream ${stream}, on an OpenAI upstream: the tool loop completes with the whole history`, async () => {
    gw.reset()
    // The mock calls the tool until the conversation ends with its result.
    gw.mocks.vllm?.program((req) => {
      const last = ((req.body as { messages: { role: string }[] }).messages ?? []).at(-1)
      return last?.role === 'tool'
        ? { text: 'It is sunny in Paris.' }
        : { toolCalls: [{ name: 'get_weather', arguments: { city: 'Paris' } }] }
    })
    const cities: string[] = []
    const weather = betaTool({
      name: 'get_weather',
      description: 'The weather in a city',
      inputSchema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
      run: async ({ city }) => {
        cities.push(city)
        return `Sunny in ${city}`
      },
    })
    const runner = anthropicClient(gw.url).beta.messages.toolRunner({
      model: 'qwen',
      max_tokens: 200,
      system: SYSTEM,
      messages: [{ role: 'user', content: 'The weather in Paris?' }],
      tools: [weather],
      stream,
      max_iterations: 5,
    })
    const last: Anthropic.Beta.BetaMessage = await runner.runUntilDone()
    assert.deepEqual(
      last.content.map((block) => (block.type === 'text' ? block.text : block.type)),
      ['It is sunny in Paris.'],
    )
    assert.deepEqual(cities, ['Paris'])

    const sent = bodies(gw.mocks.vllm?.requests ?? [])
    assert.equal(sent.length, 2)
    const replay = sent[1] as { messages: { role: string; content?: unknown; tool_calls?: unknown }[]; tools?: unknown[] }
    assert.deepEqual(
      replay.messages.map((m) => [m.role, m.role === 'assistant' ? Array.isArray(m.tool_calls) : m.content]),
      [
        ['system', SYSTEM],
        ['user', 'The weather in Paris?'],
        ['assistant', true],
        ['tool', 'Sunny in Paris'],
      ],
    )
    assert.equal(replay.tools?.length, 1)
  })
}

test('an Anthropic upstream keeps its threads: the continue goes to it as the SDK sent it', async () => {
  gw.reset()
  const thread = anthropicClient(gw.url).beta.messages.thread({ model: 'claude', max_tokens: 50, system: SYSTEM })
  const first = await thread.send({ role: 'user', content: 'My name is Ann.' })
  await thread.send({ role: 'user', content: 'What is my name?' })
  const sent = bodies(gw.mocks.claude?.requests ?? [])
  assert.equal(sent.length, 2)
  assert.deepEqual(sent[0]?.thread, { type: 'create' })
  assert.deepEqual(sent[1]?.thread, { type: 'continue', previous_message_id: first.id })
  assert.deepEqual(sent[1]?.messages, [{ role: 'user', content: 'What is my name?' }])
  assert.equal(sent[1]?.system, undefined)
})
