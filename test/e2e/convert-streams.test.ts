// Converted streams: zero buffering (each converted event reaches the client before the upstream sends the next); one
// test for each bug other gateways shipped in their converters (usage 0 on translated streams, cached tokens lost or
// billed twice, content filters turned into normal stops, Gemini's MALFORMED_FUNCTION_CALL turned into a stop); every
// framing upstreams use; a client going away mid-stream.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import {
  eventually,
  expectedContent,
  expectedReasoning,
  type MockBehavior,
  type MockUpstream,
  promptTokensFor,
} from '@llmproxy/mock-upstream'
import OpenAI from 'openai'
import {
  anthropicClient,
  ask,
  behave,
  CLIENT_APIS,
  type ClientApi,
  type ConvertGateway,
  drain,
  FINISH,
  geminiClient,
  openaiClient,
  startConvertGateway,
  upstreamBody,
  usageFor,
  usageSeen,
} from './convert-helpers.js'

/** Every converted pair, with an upstream (and a mock) of its own so that the pairs can stream at the same time. */
const PAIRS = CLIENT_APIS.flatMap((client) => CLIENT_APIS.filter((u) => u !== client).map((upstream) => ({ client, upstream })))
const pairName = (client: ClientApi, upstream: ClientApi) => `${client}-on-${upstream}`

let gw: ConvertGateway
before(async () => {
  const upstreams = Object.fromEntries(PAIRS.map(({ client, upstream }) => [pairName(client, upstream), { protocol: upstream }]))
  const models = PAIRS.map(({ client, upstream }) => ({ name: pairName(client, upstream), upstreams: [pairName(client, upstream)] }))
  gw = await startConvertGateway(upstreams, models, { retry: { attempts: 1 } })
})
after(() => gw.close())

function mockOf(client: ClientApi, upstream: ClientApi): MockUpstream {
  return gw.mocks[pairName(client, upstream)] as MockUpstream
}

test('zero buffering: each converted text event reaches the SDK before the upstream sends the next (all six pairs)', async () => {
  // One pair at a time, with a wide gap: the streams share one process with the gateway and the mocks.
  const GAP_MS = 200
  const TOKENS = 4
  for (const { client, upstream } of PAIRS) {
    const what = `${client} SDK on ${upstream}`
    gw.reset()
    const answer = await ask(client, gw.url, pairName(client, upstream), {
      stream: true,
      headers: behave({ tokens: TOKENS, gapMs: GAP_MS }),
    })
    assert.equal(answer.text, expectedContent(TOKENS), what)
    const sent = mockOf(client, upstream).requests[0]?.chunkTimes ?? []
    assert.equal(sent.length, TOKENS, what)
    assert.equal(answer.textTimes.length, TOKENS, `${what}: one text delta per upstream token`)
    for (let k = 0; k + 1 < TOKENS; k++) {
      const arrived = answer.textTimes[k] as number
      const next = sent[k + 1] as number
      assert.ok(
        arrived < next,
        `${what}: token ${k} arrived at ${arrived.toFixed(1)}, the upstream sent token ${k + 1} at ${next.toFixed(1)}`,
      )
    }
  }
})

test('usage is never zero on a translated stream (envoyproxy/ai-gateway#2352)', async () => {
  for (const { client, upstream } of PAIRS) {
    const what = `${client} SDK on ${upstream}`
    gw.reset()
    const answer = await ask(client, gw.url, pairName(client, upstream), { stream: true, headers: behave({ tokens: 9 }) })
    const prompt = promptTokensFor(upstreamBody(mockOf(client, upstream)))
    assert.ok(prompt > 0, what)
    assert.deepEqual(
      usageSeen(client, answer.usage),
      usageFor(client, { prompt, cacheRead: 0, cacheWrite: 0, output: 9, reasoning: 0 }),
      what,
    )
    const record = await gw.record()
    assert.deepEqual([record.promptTokens, record.completionTokens, record.estimated], [prompt, 9, false], what)
  }
  // An OpenAI client that did not ask for the usage chunk gets none, and is still metered exactly.
  for (const upstream of ['anthropic', 'gemini'] as const) {
    gw.reset()
    const chunks = await drain(
      await openaiClient(gw.url).chat.completions.create(
        { model: pairName('openai', upstream), stream: true, messages: [{ role: 'user', content: 'Tell me a story' }] },
        { headers: behave({ tokens: 9 }) },
      ),
    )
    assert.ok(
      chunks.every((c) => c.usage == null),
      upstream,
    )
    const record = await gw.record()
    const prompt = promptTokensFor(upstreamBody(mockOf('openai', upstream)))
    assert.deepEqual([record.promptTokens, record.completionTokens, record.estimated], [prompt, 9, false], upstream)
  }
})

test('cached tokens are neither lost nor billed twice on translated streams (QuantumNous/new-api#6144)', async () => {
  const CACHE_READ = 100
  const CACHE_WRITE = 40
  for (const { client, upstream } of PAIRS) {
    const what = `${client} SDK on ${upstream}`
    gw.reset()
    const answer = await ask(client, gw.url, pairName(client, upstream), {
      stream: true,
      headers: behave({ tokens: 3, cachedTokens: CACHE_READ, cacheWriteTokens: CACHE_WRITE }),
    })
    // The mock's prompt tokens include the cached ones (at least CACHE_READ + CACHE_WRITE).
    const prompt = promptTokensFor(upstreamBody(mockOf(client, upstream)))
    const cacheWrite = upstream === 'anthropic' ? CACHE_WRITE : 0
    assert.deepEqual(
      usageSeen(client, answer.usage),
      usageFor(client, { prompt: Math.max(prompt, CACHE_READ + CACHE_WRITE), cacheRead: CACHE_READ, cacheWrite, output: 3, reasoning: 0 }),
      what,
    )
    if (client === 'openai' && upstream === 'anthropic') {
      assert.equal((answer.usage.prompt_tokens_details as { cache_write_tokens?: number }).cache_write_tokens, CACHE_WRITE, what)
    }
    const record = await gw.record()
    assert.equal(record.promptTokens, Math.max(prompt, CACHE_READ + CACHE_WRITE), `${what}: the prompt counts each cached token once`)
    assert.equal(record.cachedTokens, CACHE_READ, what)
    assert.equal(record.totalTokens, record.promptTokens + 3, what)
  }
})

test('content filter ⇄ refusal ⇄ SAFETY: a filtered answer never becomes a normal stop (content-filter mapped to end_turn)', async () => {
  for (const { client, upstream } of PAIRS) {
    for (const stream of [false, true]) {
      const what = `${client} SDK on ${upstream}, ${stream ? 'streamed' : 'not streamed'}`
      gw.reset()
      const answer = await ask(client, gw.url, pairName(client, upstream), {
        stream,
        headers: behave({ tokens: 2, finish: 'content_filter' }),
      })
      assert.equal(answer.finish, FINISH.content_filter[client], what)
      assert.equal(answer.text, expectedContent(2), what)
    }
  }
})

test('Gemini MALFORMED_FUNCTION_CALL is an error, not a stop (BerriAI/litellm#21744)', async () => {
  const malformed = behave({ tokens: 2, finish: 'malformed_function_call' })
  const question = 'Call the weather tool'
  for (const client of ['openai', 'anthropic'] as const) {
    const model = pairName(client, 'gemini')
    for (const stream of [false, true]) {
      const what = `${client} SDK, ${stream ? 'streamed' : 'not streamed'}`
      gw.reset()
      let error: unknown
      let text = ''
      try {
        if (client === 'openai') {
          const body = { model, messages: [{ role: 'user' as const, content: question }] }
          if (stream) {
            for await (const chunk of await openaiClient(gw.url).chat.completions.create({ ...body, stream: true }, { headers: malformed }))
              text += chunk.choices[0]?.delta.content ?? ''
          } else await openaiClient(gw.url).chat.completions.create(body, { headers: malformed })
        } else {
          const body = { model, max_tokens: 100, messages: [{ role: 'user' as const, content: question }] }
          if (stream) {
            const events = anthropicClient(gw.url).messages.stream(body, { headers: malformed })
            events.on('text', (delta) => {
              text += delta
            })
            await events.finalMessage()
          } else await anthropicClient(gw.url).messages.create(body, { headers: malformed })
        }
      } catch (err) {
        error = err
      }
      assert.ok(error instanceof (client === 'openai' ? OpenAI.APIError : Anthropic.APIError), `${what}: ${String(error)}`)
      if (stream) {
        // The text before it came through; the error names Gemini's reason.
        assert.equal(text, expectedContent(2), what)
        assert.match((error as Error).message, /MALFORMED_FUNCTION_CALL/, what)
      } else assert.equal((error as { status?: number }).status, 502, what)
      const record = await gw.record()
      assert.ok(record.error !== undefined, `${what}: the record says the generation failed`)
    }
  }
})

test('converted streams read every framing upstreams use: CR, CRLF, gzip (streamed and whole answers)', async () => {
  const framings: MockBehavior[] = [
    { lineEnding: 'cr' },
    { lineEnding: 'crlf' },
    { contentEncoding: 'gzip' },
    { contentEncoding: 'gzip', lineEnding: 'cr' },
  ]
  for (const framing of framings) {
    for (const { client, upstream } of PAIRS) {
      for (const stream of [false, true]) {
        const what = `${client} SDK on ${upstream}, ${JSON.stringify(framing)}, ${stream ? 'streamed' : 'not streamed'}`
        const answer = await ask(client, gw.url, pairName(client, upstream), {
          stream,
          thinking: true,
          headers: behave({ tokens: 3, reasoning: 1, toolCalls: [{ name: 'get_time', arguments: { timezone: 'UTC' } }], ...framing }),
        })
        assert.deepEqual(
          [answer.reasoning, answer.text, answer.toolCalls.map((c) => [c.name, c.args]), answer.finish],
          [expectedReasoning(1), expectedContent(3), [['get_time', { timezone: 'UTC' }]], FINISH.tool_calls[client]],
          what,
        )
      }
    }
  }
})

test('a client that goes away mid-stream aborts the upstream at once, and the converted request is still metered', async () => {
  for (const { client, upstream } of PAIRS) {
    const what = `${client} SDK on ${upstream}`
    gw.reset()
    const mock = mockOf(client, upstream)
    const controller = new AbortController()
    const headers = behave({ tokens: 50, gapMs: 20 })
    const model = pairName(client, upstream)
    let text = ''
    try {
      switch (client) {
        case 'openai': {
          const stream = await openaiClient(gw.url).chat.completions.create(
            { model, stream: true, messages: [{ role: 'user', content: 'Tell me a long story' }] },
            { headers, signal: controller.signal },
          )
          for await (const chunk of stream) {
            text += chunk.choices[0]?.delta.content ?? ''
            if (text.length > 10) controller.abort()
          }
          break
        }
        case 'anthropic': {
          const stream = anthropicClient(gw.url).messages.stream(
            { model, max_tokens: 1000, messages: [{ role: 'user', content: 'Tell me a long story' }] },
            { headers, signal: controller.signal },
          )
          stream.on('text', (delta) => {
            text += delta
            if (text.length > 10) controller.abort()
          })
          await stream.done()
          break
        }
        case 'gemini': {
          const stream = await geminiClient(gw.url).models.generateContentStream({
            model,
            contents: 'Tell me a long story',
            config: { abortSignal: controller.signal, httpOptions: { headers } },
          })
          for await (const chunk of stream) {
            text += chunk.text ?? ''
            if (text.length > 10) controller.abort()
          }
          break
        }
      }
    } catch {
      // The SDK reports the abort its own way.
    }
    assert.ok(text.length > 10 && text.length < expectedContent(50).length, `${what}: ${text.length} characters before the abort`)
    await eventually(() => mock.requests[0]?.aborted === true, 2000, `${what}: the upstream request aborted`)
    const record = await gw.record()
    assert.equal(record.clientAborted, true, what)
    assert.equal(record.clientApi, client, what)
    assert.equal(record.protocol, upstream, what)
  }
})
