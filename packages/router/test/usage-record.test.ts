// The usage record (what onUsage and the usage webhook get) against what the client is shown, for an Anthropic
// upstream reporting its reasoning (`usage.output_tokens_details.thinking_tokens`, in the body and in the stream's
// cumulative message_delta, as @anthropic-ai/sdk 1.17 types them): the record counts it as reasoning tokens for a
// converted OpenAI client and for an Anthropic client alike. The official SDKs, a scripted upstream on a real socket.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import type { UsageRecord } from '@llmproxy/core'
import OpenAI from 'openai'
import { eventually } from './helpers.js'
import { type Scripted, scripted, sse, upstream } from './scripted.js'

/** 10 input tokens, 100 read from the cache; 300 output tokens, 250 of them thinking. */
const USAGE = { input_tokens: 10, cache_creation_input_tokens: 0, cache_read_input_tokens: 100, output_tokens: 300 }
const DETAILS = { output_tokens_details: { thinking_tokens: 250 } }
const MESSAGE = { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-x', stop_sequence: null }

const event = (type: string, data: Record<string, unknown>) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`

let gateway: Scripted
before(async () => {
  gateway = await scripted(
    [
      upstream('claude', 'anthropic', (res, body) => {
        if (JSON.parse(body).stream !== true) {
          res.writeHead(200, { 'content-type': 'application/json' })
          res.end(
            JSON.stringify({
              ...MESSAGE,
              content: [{ type: 'text', text: 'Hello.' }],
              stop_reason: 'end_turn',
              usage: { ...USAGE, ...DETAILS },
            }),
          )
          return
        }
        sse(res)
        res.end(
          event('message_start', { message: { ...MESSAGE, content: [], stop_reason: null, usage: { ...USAGE, output_tokens: 1 } } }) +
            event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }) +
            event('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'Hello.' } }) +
            event('content_block_stop', { index: 0 }) +
            event('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { ...USAGE, ...DETAILS } }) +
            event('message_stop', {}),
        )
      }),
    ],
    [{ name: 'm', upstreams: ['claude'] }],
  )
})
after(() => gateway.close())

const EXPECTED = { promptTokens: 110, completionTokens: 300, totalTokens: 410, cachedTokens: 100, reasoningTokens: 250 }

async function record(): Promise<Pick<UsageRecord, keyof typeof EXPECTED>> {
  await eventually(() => gateway.records.length === 1, 5000, 'the usage record')
  const { promptTokens, completionTokens, totalTokens, cachedTokens, reasoningTokens, ttftMs } = gateway.records.pop() as UsageRecord
  // Every answer here comes in one upstream chunk: its first token's time is recorded all the same.
  assert.equal(typeof ttftMs, 'number')
  return { promptTokens, completionTokens, totalTokens, cachedTokens, reasoningTokens }
}

const openai = () => new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'unused', maxRetries: 0 })
const anthropic = () => new Anthropic({ baseURL: gateway.url, apiKey: 'unused', maxRetries: 0 })
const messages = [{ role: 'user' as const, content: 'hi' }]

test('an OpenAI client on an Anthropic upstream: the record has the reasoning tokens the client is shown, streamed and not', async () => {
  const answer = await openai().chat.completions.create({ model: 'm', messages })
  assert.equal(answer.usage?.completion_tokens_details?.reasoning_tokens, 250)
  assert.deepEqual(await record(), EXPECTED)

  const stream = await openai().chat.completions.create({ model: 'm', messages, stream: true, stream_options: { include_usage: true } })
  let reasoning: number | undefined
  for await (const chunk of stream) reasoning = chunk.usage?.completion_tokens_details?.reasoning_tokens ?? reasoning
  assert.equal(reasoning, 250)
  assert.deepEqual(await record(), EXPECTED)
})

test("an Anthropic client: the record has the upstream's thinking tokens as reasoning tokens, streamed and not", async () => {
  const answer = await anthropic().messages.create({ model: 'm', max_tokens: 400, messages })
  assert.equal(answer.usage.output_tokens_details?.thinking_tokens, 250)
  assert.deepEqual(await record(), EXPECTED)

  const streamed = await anthropic().messages.stream({ model: 'm', max_tokens: 400, messages }).finalMessage()
  assert.equal(streamed.usage.output_tokens_details?.thinking_tokens, 250)
  assert.deepEqual(await record(), EXPECTED)
})
