import assert from 'node:assert/strict'
import { test } from 'node:test'
import { UsageExtractor } from '../src/usage-extract.js'

test('OpenAI chat usage with cached and reasoning tokens', () => {
  const u = new UsageExtractor('openai')
  u.write(Buffer.from('data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30,'))
  u.write(
    Buffer.from('"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":7}}}\n\ndata: [DONE]\n\n'),
  )
  assert.deepEqual(u.result(), { promptTokens: 10, completionTokens: 20, totalTokens: 30, cachedTokens: 4, reasoningTokens: 7 })
  assert.equal(u.missingPrompt, false)
})

test('OpenAI responses usage', () => {
  const u = new UsageExtractor('openai')
  u.write(Buffer.from('event: response.created\ndata: {"response":{"usage":null}}\n\n'))
  u.write(
    Buffer.from(
      'event: response.completed\ndata: {"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":9,"total_tokens":14,"input_tokens_details":{"cached_tokens":0},"output_tokens_details":{"reasoning_tokens":1}}}}\n\n',
    ),
  )
  assert.deepEqual(u.result(), { promptTokens: 5, completionTokens: 9, totalTokens: 14, cachedTokens: 0, reasoningTokens: 1 })
})

test('Anthropic message_start + message_delta, cache tokens added to the prompt', () => {
  const u = new UsageExtractor('anthropic')
  u.write(
    Buffer.from(
      'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":12,"cache_creation_input_tokens":3,"cache_read_input_tokens":5,"output_tokens":1}}}\n\n',
    ),
  )
  u.write(
    Buffer.from('event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}\n\n'),
  )
  assert.deepEqual(u.result(), { promptTokens: 20, completionTokens: 42, totalTokens: 62, cachedTokens: 5 })
})

test('Gemini cumulative usageMetadata, thoughts counted as completion and reasoning', () => {
  const u = new UsageExtractor('gemini')
  u.write(Buffer.from('data: {"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":1,"totalTokenCount":8}}\r\n\r\n'))
  u.write(
    Buffer.from(
      'data: {"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":9,"thoughtsTokenCount":3,"totalTokenCount":19}}\r\n\r\n',
    ),
  )
  assert.deepEqual(u.result(), { promptTokens: 7, completionTokens: 12, totalTokens: 19, reasoningTokens: 3 })
})

test('TGI details give completion tokens only; the prompt side is missing', () => {
  const u = new UsageExtractor('tgi')
  u.write(Buffer.from('data:{"token":{"id":1,"text":"a"},"generated_text":null,"details":null}\n\n'))
  u.write(
    Buffer.from(
      'data:{"token":{"id":2,"text":"b"},"generated_text":"ab","details":{"finish_reason":"length","generated_tokens":2,"seed":null}}\n\n',
    ),
  )
  assert.deepEqual(u.result(), { promptTokens: 0, completionTokens: 2, totalTokens: 2 })
  assert.equal(u.missingPrompt, true)
})

test('nothing reported → null', () => {
  const u = new UsageExtractor('openai')
  u.write(Buffer.from('data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'))
  assert.equal(u.result(), null)
})

test('endsWithNullReport: an object ending with its usage key set to null, spaces allowed; nothing else', () => {
  const openai = new UsageExtractor('openai')
  const ends = (json: string) => openai.endsWithNullReport(Buffer.from(json), json.length - 1)
  assert.equal(ends('{"choices":[],"usage":null}'), true)
  assert.equal(ends('{"choices":[], "usage" : null }'), true)
  assert.equal(ends('{"choices":[],"usage":{"prompt_tokens":1}}'), false)
  assert.equal(ends('{"choices":[],"xusage":null}'.replace('"xusage"', '"my_usage"')), false)
  assert.equal(ends('{"usage":"null"}'), false)
  assert.equal(ends('{"usage":nul}'), false)
  assert.equal(ends('"usage":null}'), true)
  assert.equal(ends('age":null}'), false)
  const gemini = new UsageExtractor('gemini')
  assert.equal(gemini.endsWithNullReport(Buffer.from('{"usage":null}'), 13), false)
  assert.equal(gemini.endsWithNullReport(Buffer.from('{"usageMetadata":null}'), 21), true)
})

test('Gemini tool-use prompt tokens count as prompt tokens, as the converters count them', () => {
  const u = new UsageExtractor('gemini')
  u.write(
    Buffer.from(
      'data: {"usageMetadata":{"promptTokenCount":7,"toolUsePromptTokenCount":5,"candidatesTokenCount":2,"totalTokenCount":14}}\n\n',
    ),
  )
  assert.deepEqual(u.result(), { promptTokens: 12, completionTokens: 2, totalTokens: 14 })
})
