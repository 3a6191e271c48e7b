// Issue 14: a stream that fails after its first byte is finished on another upstream and spliced into the same
// client stream — the complete answer exactly once, in one well-formed stream — or it ends with a clean in-band
// error; never a stitched answer, never a hang. Real sockets, real mocks, the official SDKs where a client reads it.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { estimateTokensFromBytes, type UsageRecord } from '@llmproxy/core'
import { expectedContent, type MockBehavior } from '@llmproxy/mock-upstream'
import OpenAI from 'openai'
import { type Cluster, chatBody, generations, readAnswer, send, startCluster } from './failover-helpers.js'
import { eventually, parseSse } from './helpers.js'

const TOKENS = 12
const FULL = expectedContent(TOKENS)
const ROUTER = { timeouts: { firstTokenMs: 2000, idleMs: 300 }, retry: { attempts: 3, backoffMs: 20 } }

/** `behavior` for the first generation request of the mock, then its defaults. */
function once(c: Cluster, name: string, behavior: MockBehavior): void {
  let seen = 0
  c.mock(name).program(() => (seen++ === 0 ? behavior : undefined))
}

/** The chat chunks of an OpenAI stream (not [DONE], not comments). */
function chunks(text: string): { id: string; choices: { delta: { role?: string; content?: string }; finish_reason: string | null }[] }[] {
  return parseSse(text)
    .filter((e) => e.data !== '[DONE]' && e.event === null)
    .map((e) => JSON.parse(e.data))
}

describe('OpenAI-compatible pool (vLLM: prefill by continue_final_message)', () => {
  let c: Cluster
  before(async () => {
    c = await startCluster({
      mocks: { a: { protocol: 'vllm', behavior: { tokens: TOKENS } }, b: { protocol: 'vllm', behavior: { tokens: TOKENS } } },
      models: [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered', upstreamModel: 'pool-model' }],
      router: ROUTER,
    })
  })
  after(() => c.close())

  const faults: [string, MockBehavior][] = [
    ['cut after 4 tokens', { fault: 'cut', faultAfter: 4 }],
    ['stall after 4 tokens (idle timeout)', { fault: 'stall', faultAfter: 4 }],
    ['a malformed event after 4 tokens', { fault: 'malformed', faultAfter: 4 }],
    ['an error event after 4 tokens', { fault: 'error-event', faultAfter: 4 }],
  ]
  for (const [name, fault] of faults) {
    test(`${name}: the answer is finished on the other upstream, exactly once, in one stream`, async () => {
      c.reset()
      once(c, 'a', fault)
      const res = await send(c.url, chatBody('m', { stream: true }))
      assert.equal(res.status, 200)
      const answer = readAnswer(res)
      assert.equal(answer.streamError, null, res.text)
      assert.equal(answer.content, FULL, 'the whole answer, no text twice')
      assert.equal(answer.complete, true)
      const parts = chunks(res.text)
      assert.equal(parts.filter((p) => p.choices[0]?.delta.role === 'assistant').length, 1, 'one role chunk')
      assert.equal(parts.filter((p) => p.choices[0]?.finish_reason != null).length, 1, 'one finish')
      assert.equal(new Set(parts.map((p) => p.id)).size, 1, 'one id for the whole stream')
      assert.equal(parseSse(res.text).filter((e) => e.data === '[DONE]').length, 1)
      // b was asked to continue the text a sent (vLLM's prefill), for the tokens left.
      const continued = generations(c.mock('b'))[0]?.body as {
        messages: { role: string; content: string }[]
        continue_final_message?: boolean
      }
      assert.equal(continued.continue_final_message, true)
      assert.deepEqual(continued.messages.at(-1), { role: 'assistant', content: expectedContent(4) })
      await eventually(() => c.records.length === 1, 3000, 'usage record')
      const record = c.records[0]
      assert.equal(record?.resumed, true)
      assert.equal(record?.attempts, 2)
      assert.equal(record?.error, undefined)
      assert.equal(record?.upstream, 'b')
      // The tokens of both parts: a's (estimated: it was cut before its usage) and b's reported ones.
      assert.ok((record?.completionTokens ?? 0) >= TOKENS, `completion tokens ${record?.completionTokens}`)
      assert.equal(record?.estimated, true)
    })
  }

  test('the official openai client reads a resumed stream as one normal answer', async () => {
    c.reset()
    once(c, 'a', { fault: 'cut', faultAfter: 5 })
    const client = new OpenAI({ baseURL: `${c.url}/v1`, apiKey: 'unused', maxRetries: 0 })
    const stream = await client.chat.completions.create({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] })
    let text = ''
    let finish: string | null = null
    for await (const part of stream) {
      text += part.choices[0]?.delta.content ?? ''
      finish = part.choices[0]?.finish_reason ?? finish
    }
    assert.equal(text, FULL)
    assert.equal(finish, 'stop')
  })

  test("a client's own prefill, cut before any text: the continuation goes on from the prefill too, nothing repeated", async () => {
    c.reset()
    // The client has message_start (from a's role chunk) and no text when a is cut.
    once(c, 'a', { fault: 'cut', faultAfter: 0 })
    const client = new Anthropic({ baseURL: c.url, apiKey: 'unused', maxRetries: 0 })
    const message = await client.messages
      .stream({
        model: 'm',
        max_tokens: 100,
        messages: [
          { role: 'user', content: 'hi' },
          { role: 'assistant', content: 'lorem' },
        ],
      })
      .finalMessage()
    assert.equal(message.content[0]?.type === 'text' ? message.content[0].text : '', FULL.slice('lorem'.length))
    assert.equal(message.stop_reason, 'end_turn')
    const continued = generations(c.mock('b'))[0]?.body as { messages: unknown[]; continue_final_message?: boolean }
    assert.deepEqual(continued.messages.at(-1), { role: 'assistant', content: 'lorem' })
    assert.equal(continued.continue_final_message, true, 'asked to continue the prefill, as the first attempt was')
    await eventually(() => c.records.length === 1, 3000, 'usage record')
    assert.equal(c.records[0]?.resumed, true)
  })

  test('a tool call partly streamed is not continued: a clean in-band error', async () => {
    c.reset()
    once(c, 'a', {
      tokens: 1,
      toolCalls: [{ name: 'lookup', arguments: { query: 'a rather long argument to cut' } }],
      fault: 'cut',
      faultAfter: 3,
    })
    const res = await send(c.url, chatBody('m', { stream: true }))
    const answer = readAnswer(res)
    assert.equal(answer.streamError?.code, 'llmproxy_upstream_error')
    assert.equal(answer.complete, false)
    assert.equal(generations(c.mock('b')).length, 0)
  })

  test('nothing to continue on (every upstream fails): the stream ends with the failure that cut it', async () => {
    c.reset()
    let seen = 0
    c.mock('a').program(() => (seen++ === 0 ? { fault: 'cut', faultAfter: 4 } : { status: 503 }))
    c.mock('b').program(() => ({ status: 503 }))
    const res = await send(c.url, chatBody('m', { stream: true }))
    const answer = readAnswer(res)
    assert.equal(answer.complete, false)
    assert.equal(answer.content, expectedContent(4))
    assert.equal(answer.streamError?.code, 'llmproxy_upstream_error')
    assert.match(answer.streamError?.message ?? '', /mid-stream/, 'the cut is reported, not what the continuation met')
    // The record says what the client got: a 200 with an in-band error, not the continuations' 503s.
    await eventually(() => c.records.length === 1, 3000, 'usage record')
    assert.equal(c.records[0]?.status, 200)
    assert.equal(c.records[0]?.error?.code, 'llmproxy_upstream_error')
  })
})

describe('replay with a prefix check (no prefill)', () => {
  let c: Cluster
  before(async () => {
    c = await startCluster({
      mocks: {
        a: { protocol: 'vllm', behavior: { tokens: TOKENS } },
        // An Anthropic-style refusal of prefills, then the request replayed and its prefix checked.
        refuses: { protocol: 'vllm', behavior: { tokens: TOKENS, rejectPrefill: true } },
        // No prefill configured (OpenAI's own API answers a trailing assistant turn afresh).
        hosted: { protocol: 'openai', behavior: { tokens: TOKENS } },
        fresh: { protocol: 'openai', behavior: { tokens: TOKENS } },
      },
      models: [
        { name: 'refusing', upstreams: ['a', 'refuses'], strategy: 'ordered' },
        { name: 'hosted', upstreams: ['a', 'hosted'], strategy: 'ordered' },
        // The refusing upstream as the fallback, which the planner keeps one attempt for.
        { name: 'falling', upstreams: ['a'], fallbacks: ['refuser'] },
        { name: 'refuser', upstreams: ['refuses'] },
        // A hosted upstream cut twice, the replay within the text the client has, then the fallback's replay.
        { name: 'twice-cut', upstreams: ['hosted'], fallbacks: ['fresh'] },
        { name: 'fresh', upstreams: ['fresh'] },
      ],
      router: ROUTER,
    })
  })
  after(() => c.close())

  test('a prefill refused with a 4xx: the request is replayed, the prefix dropped, one whole answer; the refusal is no error', async () => {
    c.reset()
    once(c, 'a', { fault: 'cut', faultAfter: 4 })
    const res = await send(c.url, chatBody('refusing', { stream: true }))
    const answer = readAnswer(res)
    assert.equal(answer.streamError, null, res.text)
    assert.equal(answer.content, FULL)
    const asked = generations(c.mock('refuses'))
    assert.equal(asked.length, 2, 'the prefill, then the replay')
    assert.equal((asked[1]?.body as { messages?: unknown[] } | undefined)?.messages?.length, 1, 'the replay is the original request')
    await eventually(() => c.records.length === 1, 3000, 'usage record')
    assert.equal(c.records[0]?.resumed, true)
    assert.equal(c.records[0]?.error, undefined)
  })

  test('a fallback that refuses the prefill gets the replay: the refusal does not spend the attempt kept for it', async () => {
    c.reset()
    let seen = 0
    c.mock('a').program(() => (seen++ === 0 ? { fault: 'cut', faultAfter: 4 } : { status: 503 }))
    const res = await send(c.url, chatBody('falling', { stream: true }))
    const answer = readAnswer(res)
    assert.equal(answer.streamError, null, res.text)
    assert.equal(answer.content, FULL)
    assert.equal(generations(c.mock('refuses')).length, 2, 'the prefill, then the replay')
    await eventually(() => c.records.length === 1, 3000, 'usage record')
    assert.equal(c.records[0]?.resumed, true)
    assert.equal(c.records[0]?.attempts, 3, 'the cut, the retry on a, the replay (the refused prefill is no attempt)')
  })

  test('a replay cut before it got past what the client has is metered too: every generation counts', async () => {
    c.reset()
    // The fallback's own report for this prompt, from a request of its own.
    await send(c.url, chatBody('fresh', { stream: true }))
    await eventually(() => c.records.length === 1, 3000, 'usage record')
    const freshPrompt = (c.records[0] as UsageRecord).promptTokens
    c.reset()
    c.mock('hosted').program(() => ({ fault: 'cut', faultAfter: 4 }))
    const res = await send(c.url, chatBody('twice-cut', { stream: true }))
    assert.equal(readAnswer(res).content, FULL)
    assert.equal(generations(c.mock('hosted')).length, 2, 'the cut answer, then its replay, cut again')
    await eventually(() => c.records.length === 1, 3000, 'usage record')
    const record = c.records[0] as UsageRecord
    // Each cut answer is estimated (no report came): its prompt from the bytes sent, one token per event streamed
    // (the role chunk and 4 tokens); the fallback's is reported.
    const cutPrompt = estimateTokensFromBytes(Buffer.byteLength(JSON.stringify(generations(c.mock('hosted'))[0]?.body)))
    assert.equal(record.promptTokens, 2 * cutPrompt + freshPrompt)
    assert.equal(record.completionTokens, 2 * (1 + 4) + TOKENS)
    assert.equal(record.estimated, true)
    // A warn line for each failed attempt, naming its upstream: the cut, then the replay's failure.
    assert.deepEqual(
      c.logs.filter((line) => line.msg === 'upstream attempt failed').map((line) => [line.upstream, line.failure]),
      [
        ['hosted', 'cut'],
        ['hosted', 'error'],
      ],
    )
  })

  test('a replay that does not match what the client received ends with the in-band error, never a stitched answer', async () => {
    c.reset()
    let seen = 0
    c.mock('a').program(() => (seen++ === 0 ? { fault: 'cut', faultAfter: 4 } : { status: 503 }))
    c.mock('hosted').program(() => ({ shift: 3 }))
    const res = await send(c.url, chatBody('hosted', { stream: true }))
    const answer = readAnswer(res)
    assert.equal(answer.content, expectedContent(4), 'nothing of the other answer reached the client')
    assert.equal(answer.complete, false)
    assert.equal(answer.streamError?.code, 'llmproxy_upstream_error')
    await eventually(() => c.records.length === 1, 3000, 'usage record')
    assert.equal(c.records[0]?.resumed, false)
    assert.ok(c.records[0]?.error !== undefined)
  })

  test('a replay that matches: the prefix is dropped, the rest spliced in', async () => {
    c.reset()
    once(c, 'a', { fault: 'cut', faultAfter: 6 })
    const res = await send(c.url, chatBody('hosted', { stream: true }))
    const answer = readAnswer(res)
    assert.equal(answer.streamError, null, res.text)
    assert.equal(answer.content, FULL)
  })
})

describe('Anthropic clients on an Anthropic pool', () => {
  let c: Cluster
  before(async () => {
    c = await startCluster({
      mocks: { a: { protocol: 'anthropic', behavior: { tokens: TOKENS } }, b: { protocol: 'anthropic', behavior: { tokens: TOKENS } } },
      models: [{ name: 'claude', upstreams: ['a', 'b'], strategy: 'ordered', upstreamModel: 'claude-model' }],
      router: ROUTER,
    })
  })
  after(() => c.close())

  test('the official Anthropic client reads a resumed stream as one normal message', async () => {
    c.reset()
    once(c, 'a', { fault: 'cut', faultAfter: 5 })
    const client = new Anthropic({ baseURL: c.url, apiKey: 'unused', maxRetries: 0 })
    const message = await client.messages
      .stream({ model: 'claude', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] })
      .finalMessage()
    assert.equal(message.content.length, 1)
    assert.equal(message.content[0]?.type === 'text' ? message.content[0].text : '', FULL)
    assert.equal(message.stop_reason, 'end_turn')
    const prefill = generations(c.mock('b'))[0]?.body as { messages: { role: string; content: unknown }[] }
    assert.equal(prefill.messages.at(-1)?.role, 'assistant', 'continued by a prefill')
    await eventually(() => c.records.length === 1, 3000, 'usage record')
    assert.equal(c.records[0]?.resumed, true)
  })
})

describe('across APIs: an OpenAI client on an Anthropic pool', () => {
  let c: Cluster
  before(async () => {
    c = await startCluster({
      mocks: { a: { protocol: 'anthropic', behavior: { tokens: TOKENS } }, b: { protocol: 'anthropic', behavior: { tokens: TOKENS } } },
      models: [{ name: 'claude', upstreams: ['a', 'b'], strategy: 'ordered', upstreamModel: 'claude-model' }],
      router: ROUTER,
    })
  })
  after(() => c.close())

  test('a converted stream cut mid-way is finished by the other upstream', async () => {
    c.reset()
    once(c, 'a', { fault: 'cut', faultAfter: 3 })
    const client = new OpenAI({ baseURL: `${c.url}/v1`, apiKey: 'unused', maxRetries: 0 })
    const stream = await client.chat.completions.create({ model: 'claude', stream: true, messages: [{ role: 'user', content: 'hi' }] })
    let text = ''
    let roles = 0
    for await (const part of stream) {
      text += part.choices[0]?.delta.content ?? ''
      if (part.choices[0]?.delta.role === 'assistant') roles++
    }
    assert.equal(text, FULL)
    assert.equal(roles, 1)
  })
})
