// A same-format stream cut inside its last events (the finish, OpenAI's usage chunk, Anthropic's message_stop,
// Gemini's finish event): at every byte, the official SDK either gets the whole answer or an error, never half an
// event glued to a terminator, and the usage record says which.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { GoogleGenAI } from '@google/genai'
import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import OpenAI from 'openai'
import { type Scripted, scripted, sse, upstream } from './scripted.js'

const question = 'x'
/** What the scripted upstreams send: the mock's whole stream, up to `cutAt` (then the connection ends mid-body). */
let replay = ''
let cutAt = 0
let mock: MockUpstream
let gateway: Scripted

const headers = { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' }
const openaiBody = { model: 'mo', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: question }] }
const anthropicBody = { model: 'ma', stream: true, max_tokens: 50, messages: [{ role: 'user', content: question }] }
const geminiBody = { contents: [{ role: 'user', parts: [{ text: question }] }] }

async function mockStream(path: string, body: object): Promise<string> {
  const res = await fetch(`${mock.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) })
  return res.text()
}

before(async () => {
  mock = await startMockUpstream({ defaults: { tokens: 3 } })
  const cutting = (res: import('node:http').ServerResponse) => {
    sse(res)
    if (cutAt >= replay.length) {
      res.end(replay)
      return
    }
    res.write(replay.slice(0, cutAt))
    // The connection ends inside the body (no last chunk): a cut, as a dying upstream or proxy makes it.
    res.socket?.end()
  }
  gateway = await scripted(
    [upstream('o', 'openai', cutting), upstream('a', 'anthropic', cutting), upstream('g', 'gemini', cutting)],
    [
      { name: 'mo', upstreams: ['o'] },
      { name: 'ma', upstreams: ['a'] },
      { name: 'mg', upstreams: ['g'] },
    ],
    // One attempt: no continuation (these upstreams would replay the whole stream to one), the cut itself is tested.
    { retry: { attempts: 1 } },
  )
})

after(async () => {
  await gateway?.close()
  await mock?.close()
})

interface Outcome {
  text: string
  /** The SDK's error, when it threw. */
  error: Error | null
}

async function outcome(run: () => Promise<string>): Promise<Outcome> {
  try {
    return { text: await run(), error: null }
  } catch (err) {
    return { text: '', error: err as Error }
  }
}

async function lastRecord(count: number) {
  for (let i = 0; i < 100 && gateway.records.length < count; i++) await new Promise((resolve) => setTimeout(resolve, 5))
  assert.equal(gateway.records.length, count)
  return gateway.records[count - 1] as (typeof gateway.records)[number]
}

/**
 * Cuts the stream at every byte from the start of its `events`-th event from the end, then checks each SDK outcome:
 * the whole text and no error in the record, or an API error (never a JSON parse error) and the record's error.
 */
async function everyCut(stream: string, events: number, run: () => Promise<string>): Promise<{ complete: number; failed: number }> {
  replay = stream
  cutAt = stream.length
  const fullText = await run()
  const starts = [...stream.matchAll(/\r?\n\r?\n/g)].map((m) => (m.index as number) + m[0].length)
  const from = starts[starts.length - 1 - events] as number
  let complete = 0
  let failed = 0
  for (cutAt = from; cutAt <= stream.length; cutAt++) {
    const seen = gateway.records.length
    const { text, error } = await outcome(run)
    const record = await lastRecord(seen + 1)
    const where = `cut at ${cutAt} of ${stream.length}: …${JSON.stringify(stream.slice(cutAt - 40, cutAt))}`
    if (error === null) {
      assert.equal(text, fullText, where)
      assert.equal(record.error, undefined, where)
      complete++
    } else {
      assert.ok(!(error instanceof SyntaxError) && !/JSON/.test(error.message), `${where}: ${error.constructor.name} ${error.message}`)
      assert.equal(record.error?.code, 'llmproxy_upstream_error', where)
      failed++
    }
  }
  return { complete, failed }
}

test('OpenAI stream cut in its finish, usage or [DONE] event: the whole answer or the SDK error, never a parse error', async () => {
  const stream = await mockStream('/v1/chat/completions', { ...openaiBody, model: 'm' })
  const client = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'k', maxRetries: 0 })
  const { complete, failed } = await everyCut(stream, 3, async () => {
    let text = ''
    for await (const chunk of await client.chat.completions.create(openaiBody as OpenAI.ChatCompletionCreateParamsStreaming)) {
      text += chunk.choices[0]?.delta?.content ?? ''
    }
    return text
  })
  // Cut before the finish's event was whole: an error; after it: complete (the usage chunk lost at worst).
  assert.ok(complete > 0 && failed > 0, `${complete} complete, ${failed} failed`)
  // The bytes themselves: whole events only, one [DONE] at most.
  for (cutAt = stream.length - 40; cutAt <= stream.length; cutAt++) {
    const res = await fetch(`${gateway.url}/v1/chat/completions`, { method: 'POST', headers, body: JSON.stringify(openaiBody) })
    const raw = await res.text()
    const data = [...raw.matchAll(/^data: (.*)$/gm)].map((m) => m[1] as string)
    assert.ok(data.filter((line) => line === '[DONE]').length <= 1, raw)
    for (const line of data) if (line !== '[DONE]') JSON.parse(line)
  }
})

test('Anthropic stream cut in message_delta or message_stop: the whole message or the SDK error', async () => {
  const stream = await mockStream('/v1/messages', { ...anthropicBody, model: 'm' })
  const client = new Anthropic({ baseURL: gateway.url, apiKey: 'k', maxRetries: 0 })
  const { complete, failed } = await everyCut(stream, 2, async () => {
    const message = await client.messages.stream(anthropicBody as Anthropic.MessageCreateParamsStreaming).finalMessage()
    return `${message.content.map((block) => (block.type === 'text' ? block.text : '')).join('')} ${message.stop_reason}`
  })
  assert.ok(complete > 0 && failed > 0, `${complete} complete, ${failed} failed`)
})

test('Gemini stream cut in its finish event: the whole answer or the SDK error', async () => {
  const stream = await mockStream('/v1beta/models/m:streamGenerateContent?alt=sse', geminiBody)
  const client = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: gateway.url } })
  const { complete, failed } = await everyCut(stream, 1, async () => {
    let text = ''
    for await (const chunk of await client.models.generateContentStream({ model: 'mg', contents: question })) text += chunk.text ?? ''
    return text
  })
  assert.ok(complete > 0 && failed > 0, `${complete} complete, ${failed} failed`)
})
