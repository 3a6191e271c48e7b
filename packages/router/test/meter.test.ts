import assert from 'node:assert/strict'
import { test } from 'node:test'
import { OPENAI_CHAT } from '@llmproxy/protocols'
import { UsageMeter } from '../src/meter.js'
import { StreamScanner } from '../src/scanner.js'

const usageChunk = (prompt: number, completion: number, cached: number) =>
  `data: {"choices":[],"usage":{"prompt_tokens":${prompt},"completion_tokens":${completion},"total_tokens":${prompt + completion},"prompt_tokens_details":{"cached_tokens":${cached}}}}\n\n`
const token = 'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'

/** Relays `text` as one answer through a meter the way the router does: scanner first, then the reader. */
function answer(meter: UsageMeter, text: string): StreamScanner {
  const reader = meter.startAnswer('openai')
  const scanner = new StreamScanner(OPENAI_CHAT, reader)
  const chunk = Buffer.from(text)
  scanner.scan(chunk)
  if (scanner.tapFrom < chunk.length) reader.write(chunk, scanner.tapFrom)
  scanner.checkEnd(chunk)
  return scanner
}

test('reported usage is taken as it is', () => {
  const meter = new UsageMeter()
  meter.requestBytes = 400
  meter.endAnswer(true, answer(meter, `${token}${usageChunk(10, 1, 4)}data: [DONE]\n\n`))
  assert.deepEqual(meter.total, { promptTokens: 10, completionTokens: 1, totalTokens: 11, cachedTokens: 4 })
  assert.equal(meter.estimated, false)
})

test('nothing reported: one token per data event, the terminator excluded, the prompt from the body size; marked estimated', () => {
  const meter = new UsageMeter()
  meter.requestBytes = 400
  meter.endAnswer(true, answer(meter, `${token}${token}${token}data: [DONE]\n\n`))
  assert.deepEqual(meter.total, { promptTokens: 100, completionTokens: 3, totalTokens: 103 })
  assert.equal(meter.estimated, true)
})

test('a failed answer that reported nothing adds nothing', () => {
  const meter = new UsageMeter()
  meter.endAnswer(false, answer(meter, token))
  assert.equal(meter.total, null)
  assert.equal(meter.estimated, false)
})

test('the answers of several attempts are summed, cached tokens included', () => {
  const meter = new UsageMeter()
  meter.endAnswer(true, answer(meter, `${token}${usageChunk(10, 1, 4)}`))
  meter.endAnswer(true, answer(meter, `${token}${usageChunk(12, 2, 6)}data: [DONE]\n\n`))
  assert.deepEqual(meter.total, { promptTokens: 22, completionTokens: 3, totalTokens: 25, cachedTokens: 10 })
})

test('a report without the prompt side gets the prompt estimated, and says so', () => {
  const meter = new UsageMeter()
  meter.requestBytes = 80
  const reader = meter.startAnswer('openai')
  reader.write(Buffer.from('{"choices":[],"usage":{"completion_tokens":5}}'))
  meter.endAnswer(true, null)
  assert.deepEqual(meter.total, { promptTokens: 20, completionTokens: 5, totalTokens: 25 })
  assert.equal(meter.estimated, true)
})
