// An OpenAI-compatible upstream (OpenAI, vLLM) that hits the output cap inside a tool call's arguments ends with
// `finish_reason: "length"` and arguments cut short (`{"city":"Par`). That is a truncation, not a malformed call:
// Anthropic clients get `max_tokens`, Gemini clients `MAX_TOKENS`, the usage record no error, and no SDK helper runs
// the tool with half its arguments or resends the capped request. Real sockets, a scripted upstream, the official SDKs.
import assert from 'node:assert/strict'
import { after, before, beforeEach, test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { betaTool } from '@anthropic-ai/sdk/helpers/beta/json-schema'
import { type GenerateContentResponse, GoogleGenAI } from '@google/genai'
import { eventually } from './helpers.js'
import { DONE, role, type Scripted, type ScriptedUpstream, scripted, sse, upstream, usageChunk } from './scripted.js'

const chunk = (fields: Record<string, unknown>) =>
  `data: ${JSON.stringify({ id: 'up1', object: 'chat.completion.chunk', created: 1, model: 'm', ...fields })}\n\n`
const call = (fields: Record<string, unknown>) => chunk({ choices: [{ index: 0, delta: { tool_calls: [{ index: 0, ...fields }] } }] })

/** Streamed and not, the same answer: a get_weather call cut at `{"city":"Par`, 10 prompt and 16 output tokens. */
const capped: ScriptedUpstream = upstream('o', 'openai', (res, body) => {
  if ((JSON.parse(body) as { stream?: boolean }).stream === true) {
    sse(res)
    res.end(
      role +
        call({ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":' } }) +
        call({ function: { arguments: '"Par' } }) +
        chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'length' }] }) +
        usageChunk(10, 16) +
        DONE,
    )
    return
  }
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end(
    JSON.stringify({
      id: 'up1',
      object: 'chat.completion',
      created: 1,
      model: 'm',
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: null,
            tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Par' } }],
          },
          finish_reason: 'length',
        },
      ],
      usage: { prompt_tokens: 10, completion_tokens: 16, total_tokens: 26 },
    }),
  )
})

const WEATHER = { type: 'object' as const, properties: { city: { type: 'string' as const } }, required: ['city'] }
const question = [{ role: 'user' as const, content: 'The weather in Paris?' }]

let g: Scripted
before(async () => {
  g = await scripted([capped], [{ name: 'm', upstreams: ['o'] }])
})
after(() => g.close())
beforeEach(() => {
  capped.bodies.length = 0
  g.records.length = 0
})

/** The one usage record of the request just made, as [status, prompt, completion, error code]. */
async function recordRow(): Promise<unknown[]> {
  await eventually(() => g.records.length === 1, 2000, 'the usage record')
  const record = g.records[0]
  return [record?.status, record?.promptTokens, record?.completionTokens, record?.error?.code]
}

test('Anthropic SDK, streamed: max_tokens, the tool_use block closed as it is (its unfinished value dropped by the SDK)', async () => {
  const client = new Anthropic({ baseURL: g.url, apiKey: 'k' })
  const message = await client.messages
    .stream({ model: 'm', max_tokens: 16, messages: question, tools: [{ name: 'get_weather', input_schema: WEATHER }] })
    .finalMessage()
  assert.equal(message.stop_reason, 'max_tokens')
  assert.deepEqual(message.content, [{ type: 'tool_use', id: 'call_1', name: 'get_weather', input: {} }])
  assert.deepEqual(await recordRow(), [200, 10, 16, undefined])
})

test('Anthropic SDK, not streamed, with its default retries: one max_tokens answer without the cut call, one generation', async () => {
  const client = new Anthropic({ baseURL: g.url, apiKey: 'k' })
  const message = await client.messages.create({
    model: 'm',
    max_tokens: 16,
    messages: question,
    tools: [{ name: 'get_weather', input_schema: WEATHER }],
  })
  assert.equal(message.stop_reason, 'max_tokens')
  assert.deepEqual(message.content, [])
  assert.equal(capped.bodies.length, 1, 'the capped request is not sent again')
  assert.deepEqual(await recordRow(), [200, 10, 16, undefined])
})

for (const stream of [true, false]) {
  test(`Anthropic toolRunner, stream ${stream}: the loop ends on max_tokens without running the cut call`, async () => {
    const runs: unknown[] = []
    const weather = betaTool({
      name: 'get_weather',
      description: 'The weather in a city',
      inputSchema: WEATHER,
      run: (input) => {
        runs.push(input)
        return 'sunny'
      },
    })
    const runner = new Anthropic({ baseURL: g.url, apiKey: 'k', maxRetries: 0 }).beta.messages.toolRunner({
      model: 'm',
      max_tokens: 16,
      messages: question,
      tools: [weather],
      stream,
      ...(stream ? { runToolsEagerly: true } : {}),
      max_iterations: 3,
    })
    const last = await runner.runUntilDone()
    assert.equal(last.stop_reason, 'max_tokens')
    assert.deepEqual(runs, [])
    assert.equal(capped.bodies.length, 1)
    assert.deepEqual(await recordRow(), [200, 10, 16, undefined])
  })
}

for (const stream of [true, false]) {
  test(`Gemini SDK, stream ${stream}: MAX_TOKENS, the cut call left out (Gemini sends no partial functionCall)`, async () => {
    const client = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: g.url, retryOptions: { attempts: 1 } } })
    const request = {
      model: 'm',
      contents: 'The weather in Paris?',
      config: { maxOutputTokens: 16, tools: [{ functionDeclarations: [{ name: 'get_weather', parametersJsonSchema: WEATHER }] }] },
    }
    const chunks: GenerateContentResponse[] = []
    if (stream) for await (const chunk of await client.models.generateContentStream(request)) chunks.push(chunk)
    else chunks.push(await client.models.generateContent(request))
    assert.equal(chunks.at(-1)?.candidates?.[0]?.finishReason, 'MAX_TOKENS')
    assert.deepEqual(
      chunks.flatMap((chunk) => chunk.functionCalls ?? []),
      [],
    )
    assert.deepEqual(await recordRow(), [200, 10, 16, undefined])
  })
}
