// The resume tap on its own: the text it keeps is exactly what the client got, whatever the chunking, the escapes and
// the place of the text delta in each event (it guesses that place from the previous event).
import { strict as assert } from 'node:assert'
import { test } from 'node:test'
import { ResumeTap } from '../src/resume.js'

const chunk = (delta: string, id = 'chatcmpl-1', finish = 'null') =>
  `data: {"id":"${id}","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":${delta},"logprobs":null,"finish_reason":${finish}}]}\n\n`

const events = [
  chunk('{"role":"assistant","content":""}'),
  chunk('{"content":"Hello"}'),
  chunk('{"content":", \\"quoted\\""}'),
  // A longer id moves the text delta: the guess from the previous event misses and the search finds it.
  chunk('{"content":" back\\\\slash"}', 'chatcmpl-a-much-longer-id'),
  chunk('{"content":" \\u00e9t\\u00e9"}', 'chatcmpl-a-much-longer-id'),
  chunk('{"content":"!"}'),
  chunk('{}', 'chatcmpl-1', '"stop"'),
]
const stream = Buffer.from(events.join(''))
const expected = 'Hello, "quoted" back\\slash été!'

test('the text is what the client got, in one chunk, one event a chunk, or cut at every byte', () => {
  const chunkings: Buffer[][] = [[stream], events.map((e) => Buffer.from(e))]
  for (let cut = 1; cut < stream.length; cut += 7) chunkings.push([stream.subarray(0, cut), stream.subarray(cut)])
  for (const chunks of chunkings) {
    const tap = new ResumeTap('openai')
    for (const c of chunks) tap.push(c)
    const point = tap.point()
    assert.ok(point !== null, 'a plain text stream is continuable')
    assert.equal(point.text, expected)
    assert.equal(point.id, 'chatcmpl-1')
    assert.equal(point.model, 'm')
  }
})

test('a delta that is not text alone (a tool call) makes the stream not continuable', () => {
  const tap = new ResumeTap('openai')
  tap.push(Buffer.from(chunk('{"role":"assistant","content":""}') + chunk('{"content":"Hi"}')))
  tap.push(Buffer.from(chunk('{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":""}}]}')))
  assert.equal(tap.point(), null)
})

test("the role chunk's empty content is no text event: the events are the tokens generated (a continuation's cap)", () => {
  const tap = new ResumeTap('openai')
  tap.push(Buffer.from(chunk('{"role":"assistant","content":""}') + chunk('{"content":"a"}') + chunk('{"content":"b"}')))
  tap.push(Buffer.from(chunk('{"content":"c"}')))
  assert.equal(tap.point()?.events, 3)
})

test('null fields in a delta (Python shims write every field) are no tool call: the stream stays continuable', () => {
  const tap = new ResumeTap('openai')
  const nulls = '"role":null,"function_call":null,"refusal":null,"tool_calls": null,"reasoning_content":null,"audio":null'
  tap.push(Buffer.from(chunk(`{"content":"lorem ",${nulls}}`) + chunk(`{"content":"ipsum ",${nulls}}`)))
  assert.equal(tap.point()?.text, 'lorem ipsum ')
  // A tool call after a null in the same delta is still one.
  tap.push(Buffer.from(chunk('{"content":null,"function_call":null,"tool_calls":[{"index":0,"id":"call_1"}]}')))
  assert.equal(tap.point(), null)
  // Reasoning is, however the JSON is spaced.
  const spaced = new ResumeTap('openai')
  spaced.push(Buffer.from(chunk('{"content": null, "reasoning_content": "hmm"}')))
  assert.equal(spaced.point(), null)
})

test('answer text that quotes a tool call or thought key is text: the stream stays continuable', () => {
  const openai = new ResumeTap('openai')
  // A shim's delta (no plain-text shape) whose text ends with a quoted key's start: `\"tool_calls"` is the escaped quote,
  // the key's letters and the string's end.
  openai.push(Buffer.from(chunk(`{"content":${JSON.stringify('use "tool_calls')},"tool_calls":null}`)))
  assert.equal(openai.point()?.text, 'use "tool_calls')
  // A delta whose whole text is a key's name, written spaced (Python's json.dumps): a value, not the key.
  const spaced = new ResumeTap('openai')
  for (const word of ['Step: ', 'reasoning', 'refusal', 'tool_calls'])
    spaced.push(Buffer.from(chunk(`{"content": "${word}", "role": null}`)))
  assert.equal(spaced.point()?.text, 'Step: reasoningrefusaltool_calls')
  const gemini = new ResumeTap('gemini')
  gemini.push(
    Buffer.from(
      `data: ${JSON.stringify({ candidates: [{ content: { parts: [{ text: 'thought' }], role: 'model' }, index: 0 }] })}\r\n\r\n`,
    ),
  )
  const part = JSON.stringify({ candidates: [{ content: { parts: [{ text: 'set "thought' }], role: 'model' }, index: 0 }] })
  gemini.push(Buffer.from(`data: ${part}\r\n\r\n`))
  assert.equal(gemini.point()?.text, 'thoughtset "thought')
})

test('a Gemini chunk of several parts: the text of every part, in order, and nothing from outside the parts', () => {
  const event = (parts: unknown[], extra: Record<string, unknown> = {}) =>
    `data: ${JSON.stringify({ candidates: [{ content: { parts, role: 'model' }, index: 0, ...extra }], modelVersion: 'g', responseId: 'r1' })}\r\n\r\n`
  const tap = new ResumeTap('gemini')
  tap.push(Buffer.from(event([{ text: 'lorem ' }, { text: 'ipsum "text": ' }])))
  // Google's spacing, a part with a key besides its text, an empty part; grounding text is no answer text.
  tap.push(
    Buffer.from(
      'data: {"candidates": [{"content": {"parts": [{"text": "dolor "}, {"thoughtSignature": "c2ln", "text": "sit"}, {"text": ""}],"role": "model"}',
    ),
  )
  tap.push(Buffer.from(',"index": 0}]}\r\n\r\n'))
  tap.push(Buffer.from(event([{ text: ' amet' }], { groundingMetadata: { groundingSupports: [{ segment: { text: 'a source' } }] } })))
  const point = tap.point()
  assert.equal(point?.text, 'lorem ipsum "text": dolor sit amet')
  assert.equal(point?.events, 5)
})
