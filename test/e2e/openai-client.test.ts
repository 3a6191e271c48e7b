// The official `openai` npm client works unchanged against the gateway, streamed and not.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { UsageRecord } from '@llmproxy/core'
import { eventually, expectedContent } from '@llmproxy/mock-upstream'
import OpenAI from 'openai'
import { startGatewayWithMock, type TestGateway } from './helpers.js'

let gw: TestGateway
before(async () => {
  gw = await startGatewayWithMock({
    auth: { keys: [{ id: 'team-a', key: 'sk-team-a-test-key-000000' }] },
  })
})
after(() => gw.close())

const client = () => new OpenAI({ apiKey: 'sk-team-a-test-key-000000', baseURL: `${gw.url}/v1`, maxRetries: 0 })

test('chat completion, not streamed', async () => {
  const completion = await client().chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'Hello' }] })
  assert.equal(completion.choices[0]?.message.content, expectedContent(5))
  assert.equal(completion.usage?.completion_tokens, 5)
})

test('chat completion, streamed', async () => {
  const stream = await client().chat.completions.create({ model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'Hello' }] })
  let text = ''
  let usageChunks = 0
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? ''
    if (chunk.usage) usageChunks++
  }
  assert.equal(text, expectedContent(5))
  assert.equal(usageChunks, 0, 'the client did not ask for usage, so it gets none')
})

test('streamed with include_usage, the client gets usage', async () => {
  const stream = await client().chat.completions.create({
    model: 'gpt-test',
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'Hello' }],
  })
  let completionTokens = 0
  for await (const chunk of stream) if (chunk.usage) completionTokens = chunk.usage.completion_tokens
  assert.equal(completionTokens, 5)
})

test('embeddings and models', async () => {
  const embedding = await client().embeddings.create({ model: 'gpt-test', input: 'hello' })
  assert.ok(embedding.data[0]?.embedding.length)
  const models = await client().models.list()
  assert.deepEqual(
    models.data.map((m) => m.id),
    ['gpt-test', 'alias-test'],
  )
})

test('errors surface as typed client errors', async () => {
  await assert.rejects(client().chat.completions.create({ model: 'no-such-model', messages: [] }), (err: unknown) => {
    assert.ok(err instanceof OpenAI.NotFoundError)
    assert.equal(err.code, 'model_not_found')
    assert.equal(err.param, null) // as OpenAI sends it: null, not missing
    return true
  })
  const anonymous = new OpenAI({ apiKey: 'sk-wrong', baseURL: `${gw.url}/v1`, maxRetries: 0 })
  await assert.rejects(anonymous.chat.completions.create({ model: 'gpt-test', messages: [] }), OpenAI.AuthenticationError)
})

test('a stream cut mid-way surfaces as an error in the client, not as a complete answer', async () => {
  const stream = await client().chat.completions.create(
    { model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'Hello' }] },
    // programs the mock upstream; the gateway forwards the header unchanged
    { headers: { 'x-mock-behavior': JSON.stringify({ fault: 'cut', faultAfter: 2 }) } },
  )
  await assert.rejects(async () => {
    for await (const _chunk of stream) {
      // drain
    }
  })
})

/** The usage records the gateway emits from here on (the SDK calls of one test at a time). */
function usageRecords(): UsageRecord[] {
  const records: UsageRecord[] = []
  gw.app.llm.addHook('onUsage', (record) => {
    records.push(record)
  })
  return records
}

test('a Responses stream runs to its end whatever the request or the answer says: a last event name as text ends nothing', async () => {
  const records = usageRecords()
  const cases: { name: string; request: Record<string, unknown>; behavior?: Record<string, unknown>; text: string }[] = [
    // OpenAI echoes instructions and metadata in response.created: the client's own words ride in the stream.
    { name: 'metadata value', request: { metadata: { last_event: 'response.completed' } }, text: expectedContent(5) },
    { name: 'metadata key type', request: { metadata: { type: 'response.incomplete' } }, text: expectedContent(5) },
    { name: 'instructions', request: { instructions: 'response.failed' }, text: expectedContent(5) },
    // The whole answer is the word: it comes whole in output_text.done, content_part.done and output_item.done.
    { name: 'answer text', request: {}, behavior: { text: 'response.completed' }, text: 'response.completed' },
  ]
  for (const { name, request, behavior, text } of cases) {
    const headers = behavior === undefined ? {} : { 'x-mock-behavior': JSON.stringify(behavior) }
    const stream = await client().responses.create({ model: 'gpt-test', input: 'Hello', stream: true, ...request }, { headers })
    const types: string[] = []
    let deltas = ''
    for await (const event of stream) {
      types.push(event.type)
      if (event.type === 'response.output_text.delta') deltas += event.delta
    }
    assert.equal(types.at(-1), 'response.completed', `${name}: ${types.join(',')}`)
    assert.equal(deltas, text, name)
    const final = await client()
      .responses.stream({ model: 'gpt-test', input: 'Hello', ...request }, { headers })
      .finalResponse()
    assert.equal(final.status, 'completed', name)
    assert.equal(final.output_text, text, name)
  }
  await eventually(() => records.length === cases.length * 2, 3000, 'the usage records')
  for (const record of records) {
    assert.equal(record.error, undefined)
    assert.equal(record.estimated, false, 'the usage of response.completed was read')
  }
})

test('a background response is refused with a 400 on background: its generation could never be metered nor fetched here', async () => {
  gw.mock.reset()
  await assert.rejects(client().responses.create({ model: 'gpt-test', input: 'Hello', background: true }), (err: unknown) => {
    assert.ok(err instanceof OpenAI.BadRequestError)
    assert.equal(err.param, 'background')
    assert.equal(err.code, 'llmproxy_invalid_request')
    assert.match(err.message, /Background responses are not served/)
    return true
  })
  assert.equal(gw.mock.requests.length, 0, 'nothing reached the upstream')
  // background: false is the default: served.
  const response = await client().responses.create({ model: 'gpt-test', input: 'Hello', background: false })
  assert.equal(response.status, 'completed')
})
