// A converted stream whose upstream streams only what the client does not see (Anthropic pings to an OpenAI or Gemini
// client, reasoning to an Anthropic client that did not ask for thinking) is not silent for the client: it gets its
// format's heartbeat every few seconds, as a same-format client gets the upstream's own bytes, and a proxy's idle
// timeout does not cut it. Real sockets, the official SDKs reading the stream (their fetch timed chunk by chunk).
import assert from 'node:assert/strict'
import type { ServerResponse } from 'node:http'
import { test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import OpenAI from 'openai'
import { DONE, role, scripted, sleep, sse, text, upstream, usageChunk } from './scripted.js'
import { type Seen, timedFetch } from './sdk-streams.js'

/** The gateway's heartbeat interval (timeouts.heartbeatMs), and how long the upstream streams nothing the client sees. */
const HEARTBEAT_MS = 1000
const HIDDEN_MS = 2500
const EVERY_MS = 200

/** The longest time between two chunks the client got. */
function longestGap(seen: { at: number }[]): number {
  let gap = 0
  for (let i = 1; i < seen.length; i++) gap = Math.max(gap, (seen[i] as { at: number }).at - (seen[i - 1] as { at: number }).at)
  return gap
}

const event = (name: string, data: Record<string, unknown>) => `event: ${name}\ndata: ${JSON.stringify({ type: name, ...data })}\n\n`

const textDelta = (t: string) => event('content_block_delta', { index: 0, delta: { type: 'text_delta', text: t } })

/**
 * An Anthropic upstream: the answer's first word, pings for HIDDEN_MS, then the rest. (The first word first: this is
 * a stream under way; one held open before its first token is first-token-heartbeat.test.ts's.)
 */
async function pinging(res: ServerResponse): Promise<void> {
  sse(res)
  res.write(
    event('message_start', {
      message: { id: 'msg_1', type: 'message', role: 'assistant', model: 'c', content: [], usage: { input_tokens: 5, output_tokens: 1 } },
    }) +
      event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }) +
      textDelta('Awa'),
  )
  for (let waited = 0; waited < HIDDEN_MS; waited += EVERY_MS) {
    await sleep(EVERY_MS)
    res.write(event('ping', {}))
  }
  res.end(
    textDelta('ke.') +
      event('content_block_stop', { index: 0 }) +
      event('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 2 } }) +
      event('message_stop', {}),
  )
}

/** A vLLM reasoning model: reasoning deltas for HIDDEN_MS, then the answer. */
async function reasoning(res: ServerResponse): Promise<void> {
  sse(res)
  res.write(role)
  const delta = `data: ${JSON.stringify({ id: 'up1', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { reasoning_content: 'hmm ' }, finish_reason: null }] })}\n\n`
  for (let waited = 0; waited < HIDDEN_MS; waited += EVERY_MS) {
    await sleep(EVERY_MS)
    res.write(delta)
  }
  const stop = `data: ${JSON.stringify({ id: 'up1', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`
  res.end(text('Awake.') + stop + usageChunk(5, 40) + DONE)
}

test('hidden upstream output: each converted client gets its heartbeat within the interval, and reads the answer as usual', async () => {
  const g = await scripted(
    [upstream('anthropic', 'anthropic', pinging), upstream('vllm', 'vllm', reasoning)],
    [
      { name: 'pings', upstreams: ['anthropic'] },
      { name: 'thinks', upstreams: ['vllm'] },
    ],
    { timeouts: { idleMs: 30_000, heartbeatMs: HEARTBEAT_MS } },
  )
  try {
    const toOpenai = async () => {
      const seen: Seen[] = []
      const client = new OpenAI({ baseURL: `${g.url}/v1`, apiKey: 'k', maxRetries: 0, fetch: timedFetch(seen) })
      let answer = ''
      const stream = await client.chat.completions.create({ model: 'pings', stream: true, messages: [{ role: 'user', content: 'hi' }] })
      for await (const part of stream) answer += part.choices[0]?.delta.content ?? ''
      return { answer, seen }
    }
    const toAnthropic = async () => {
      const seen: Seen[] = []
      const client = new Anthropic({ baseURL: g.url, apiKey: 'k', maxRetries: 0, fetch: timedFetch(seen) })
      const message = await client.messages
        .stream({ model: 'thinks', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] })
        .finalMessage()
      return { answer: message.content.map((block) => (block.type === 'text' ? block.text : `<${block.type}>`)).join(''), seen }
    }
    const toGeminiArray = async () => {
      const seen: Seen[] = []
      const res = await timedFetch(seen)(`${g.url}/v1beta/models/pings:streamGenerateContent`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
      })
      const chunks = JSON.parse(await res.text()) as { candidates: { content: { parts: { text: string }[] } }[] }[]
      return { answer: chunks.map((c) => c.candidates[0]?.content.parts.map((p) => p.text).join('')).join(''), seen }
    }
    const [openai, anthropic, array] = await Promise.all([toOpenai(), toAnthropic(), toGeminiArray()])
    assert.equal(openai.answer, 'Awake.')
    assert.equal(anthropic.answer, 'Awake.', 'no thinking block: the client did not ask for one')
    assert.equal(array.answer, 'Awake.')
    assert.ok(openai.seen.some((part) => part.bytes.includes(': keep-alive\n\n')))
    assert.ok(anthropic.seen.some((part) => part.bytes.includes('event: ping\ndata: {"type":"ping"}\n\n')))
    assert.ok(array.seen.some((part) => part.bytes === '\n'))
    for (const { seen } of [openai, anthropic, array]) {
      // Silent for HIDDEN_MS without the heartbeat; with it, a beat HEARTBEAT_MS after the last bytes (at the next
      // upstream chunk).
      assert.ok(longestGap(seen) < HEARTBEAT_MS + 4 * EVERY_MS, `longest silence ${Math.round(longestGap(seen))} ms`)
    }
  } finally {
    await g.close()
  }
})
