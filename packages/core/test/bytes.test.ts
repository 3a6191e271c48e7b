import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ByteNeedle } from '../src/bytes.js'

test('indexIn agrees with Buffer#indexOf on every offset, hit or miss', () => {
  const haystacks = [
    'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3}}\n\n',
    '"usage""usage"  "usag" "usage',
    'usage"usage"',
    '',
    'x',
    'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    '{"candidates":[{"finishReason":"STOP"}],"usageMetadata":{}}',
  ]
  const needles = ['"usage"', '"usageMetadata"', 'event: message_stop', '"finishReason"', 'data:', 'x', '"response.completed"']
  for (const text of haystacks) {
    const chunk = Buffer.from(text)
    for (const word of needles) {
      const needle = new ByteNeedle(word)
      const bytes = Buffer.from(word)
      for (let from = 0; from <= chunk.length; from++) {
        assert.equal(needle.indexIn(chunk, from), chunk.indexOf(bytes, from), `${word} in ${JSON.stringify(text)} from ${from}`)
      }
    }
  }
})

test('indexIn on random bytes over a small alphabet (many partial matches)', () => {
  let seed = 7
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31
    return seed
  }
  const alphabet = '"usage:{}'
  const needle = new ByteNeedle('"usage"')
  const bytes = Buffer.from('"usage"')
  for (let n = 0; n < 300; n++) {
    const chunk = Buffer.from(Array.from({ length: 1 + (random() % 60) }, () => alphabet[random() % alphabet.length]).join(''))
    for (let from = 0; from <= chunk.length; from++) assert.equal(needle.indexIn(chunk, from), chunk.indexOf(bytes, from))
  }
})

test('isAt checks the exact position and the chunk end', () => {
  const needle = new ByteNeedle('data:')
  const chunk = Buffer.from('xdata: {}\ndata')
  assert.equal(needle.isAt(chunk, 1), true)
  assert.equal(needle.isAt(chunk, 0), false)
  assert.equal(needle.isAt(chunk, 11), false)
  assert.equal(needle.isAt(chunk, -1), false)
})

test('an empty needle is refused', () => {
  assert.throws(() => new ByteNeedle(''), TypeError)
})
