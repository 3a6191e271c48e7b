// The usage a client sees on a continued stream whose first part went to it byte for byte (an upstream of its own
// API): it adds up what each part reported, as a converted first part's does, also when the continuation is cut
// after its finish and before its usage. The official SDKs, scripted upstreams on real sockets.
import assert from 'node:assert/strict'
import type { ServerResponse } from 'node:http'
import { describe, test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { GoogleGenAI } from '@google/genai'
import OpenAI from 'openai'
import { DONE, finish, role, type Scripted, scripted, sleep, sse, text, upstream, usageChunk } from './scripted.js'

const ROUTER = { timeouts: { firstTokenMs: 1000, idleMs: 400 }, retry: { attempts: 3, backoffMs: 10 } }
const models = [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered' }]

/** What the first part reports before its cut: a prompt of 20 tokens, 1 token generated. */
const FIRST = { prompt: 20, output: 1 }
/** What the continuation reports in its usage chunk. */
const SECOND = { prompt: 30, output: 2 }

/** The first part, in the client's own API: `Hello` with its usage report, then the connection is cut. */
const firstParts = {
  openai: [
    role,
    // vLLM's continuous usage (`continuous_usage_stats`): a running report on every chunk.
    `data: ${JSON.stringify({
      id: 'up1',
      object: 'chat.completion.chunk',
      created: 1,
      model: 'm',
      choices: [{ index: 0, delta: { content: 'Hello' }, finish_reason: null }],
      usage: { prompt_tokens: FIRST.prompt, completion_tokens: FIRST.output, total_tokens: FIRST.prompt + FIRST.output },
    })}\n\n`,
  ].join(''),
  anthropic: [
    ['message_start', { type: 'message_start', message: messageOf({ input_tokens: FIRST.prompt, output_tokens: FIRST.output }) }],
    ['content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }],
    ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hello' } }],
  ]
    .map(([event, data]) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
    .join(''),
  gemini: `data: ${JSON.stringify({
    candidates: [{ content: { role: 'model', parts: [{ text: 'Hello' }] }, index: 0 }],
    usageMetadata: { promptTokenCount: FIRST.prompt, candidatesTokenCount: FIRST.output, totalTokenCount: FIRST.prompt + FIRST.output },
    modelVersion: 'm',
    responseId: 'r1',
  })}\n\n`,
}

function messageOf(usage: Record<string, number>): Record<string, unknown> {
  return { id: 'msg_up', type: 'message', role: 'assistant', model: 'm', content: [], stop_reason: null, stop_sequence: null, usage }
}

type Api = keyof typeof firstParts

/** A gateway whose first upstream (the client's API) is cut after `Hello`; the second (vLLM) goes on with ` world`. */
async function gatewayFor(api: Api, continuation: (res: ServerResponse) => Promise<void> | void): Promise<Scripted> {
  const a = upstream('a', api === 'openai' ? 'vllm' : api, async (res) => {
    sse(res)
    res.write(firstParts[api])
    await sleep(20)
    res.socket?.destroy()
  })
  return scripted([a, upstream('b', 'vllm', continuation)], models, ROUTER)
}

/** The continuation's whole answer, with its usage chunk. */
function whole(res: ServerResponse): void {
  sse(res)
  res.end(role + text(' world') + finish() + usageChunk(SECOND.prompt, SECOND.output) + DONE)
}

/** The continuation cut right after its finish chunk: its usage chunk never comes (the answer is complete all the same). */
async function cutBeforeUsage(res: ServerResponse): Promise<void> {
  sse(res)
  res.write(role + text(' world') + finish())
  await sleep(20)
  res.socket?.destroy()
}

/** The streamed answer's text and the last usage the official SDK of `api` reports: [prompt, output] tokens. */
async function ask(api: Api, url: string): Promise<{ text: string; usage: [number, number] }> {
  const messages = [{ role: 'user' as const, content: 'hi' }]
  if (api === 'openai') {
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 })
    const completion = await client.chat.completions
      .stream({ model: 'm', messages, stream_options: { include_usage: true } })
      .finalChatCompletion()
    const usage = completion.usage
    return { text: completion.choices[0]?.message.content ?? '', usage: [usage?.prompt_tokens ?? -1, usage?.completion_tokens ?? -1] }
  }
  if (api === 'anthropic') {
    const client = new Anthropic({ baseURL: url, apiKey: 'unused', maxRetries: 0 })
    const message = await client.messages.stream({ model: 'm', max_tokens: 100, messages }).finalMessage()
    const block = message.content[0]
    return { text: block?.type === 'text' ? block.text : '', usage: [message.usage.input_tokens, message.usage.output_tokens] }
  }
  const client = new GoogleGenAI({ apiKey: 'unused', httpOptions: { baseUrl: url } })
  let answer = ''
  let usage: [number, number] = [-1, -1]
  for await (const chunk of await client.models.generateContentStream({ model: 'm', contents: 'hi' })) {
    answer += chunk.text ?? ''
    const reported = chunk.usageMetadata
    if (reported !== undefined) usage = [reported.promptTokenCount ?? -1, reported.candidatesTokenCount ?? -1]
  }
  return { text: answer, usage }
}

for (const api of ['openai', 'anthropic', 'gemini'] as const) {
  describe(`${api} client, its first part relayed unconverted`, () => {
    test('the usage it sees adds up what the cut part and the continuation reported', async () => {
      const g = await gatewayFor(api, whole)
      try {
        const answer = await ask(api, g.url)
        assert.equal(answer.text, 'Hello world')
        assert.deepEqual(answer.usage, [FIRST.prompt + SECOND.prompt, FIRST.output + SECOND.output])
        assert.equal(g.records[0]?.resumed, true)
      } finally {
        await g.close()
      }
    })

    test('a continuation cut after its finish, before its usage: it ends complete, with what the first part reported', async () => {
      const g = await gatewayFor(api, cutBeforeUsage)
      try {
        const answer = await ask(api, g.url)
        assert.equal(answer.text, 'Hello world')
        assert.deepEqual(answer.usage, [FIRST.prompt, FIRST.output], 'not 0/0: the first part reported these')
        assert.equal(g.records[0]?.error, undefined)
      } finally {
        await g.close()
      }
    })
  })
}
