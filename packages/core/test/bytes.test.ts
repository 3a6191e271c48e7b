import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ByteNeedle, flatText, keptTail, keptText } from '../src/bytes.js'

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

test('a needle split over any chunks is found in the chunk that completes it, self-overlapping needles too', () => {
  let seed = 11
  const random = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31
    return seed % n
  }
  for (const word of ['event: message_stop', 'abaab', 'aaa', '"usage"']) {
    const needle = new ByteNeedle(word)
    const alphabet = [...new Set(word)].join('')
    for (let round = 0; round < 3000; round++) {
      let text = ''
      const length = 1 + random(3 * word.length)
      while (text.length < length) text += alphabet[random(alphabet.length)]
      if (random(2) === 0) text = text.slice(0, random(text.length)) + word.slice(0, 1 + random(word.length)) + text
      const chunks: string[] = []
      for (let at = 0; at < text.length; ) {
        const size = 1 + random(word.length + 1)
        chunks.push(text.slice(at, at + size))
        at += size
      }
      // As a stream reader does: the carried match, else a search in the chunk, else what the chunk carries on.
      let carried = 0
      let seen = ''
      for (const part of chunks) {
        const chunk = Buffer.from(part)
        const found = (carried > 0 && needle.completeIn(chunk, carried) !== -1) || needle.indexIn(chunk) !== -1
        const expected = (seen + part).includes(word) && !seen.includes(word)
        if (seen.includes(word)) break
        assert.equal(found, expected, `${word} in ${JSON.stringify(chunks)} at ${JSON.stringify(part)}`)
        carried = needle.carriedPrefix(chunk, carried)
        seen += part
      }
    }
  }
})

test('completeIn gives the offset just past the needle', () => {
  const needle = new ByteNeedle('event: message_stop')
  assert.equal(needle.completeIn(Buffer.from('nt: message_stop\n'), 3), 16)
  // `eve` then `vent…`: the carried `eve` breaks, the `e` at its end starts the match that completes.
  assert.equal(needle.completeIn(Buffer.from('vent: message_stop'), 3), 18)
  assert.equal(needle.completeIn(Buffer.from('nt: mess'), 3), -1)
})

test('keptTail copies a tail that is a small part of the memory it views, outside the shared pool, and no other', () => {
  const read = Buffer.alloc(16 * 1024, 'x')
  const tail = keptTail(read, read.length - 100)
  assert.equal(tail.length, 100)
  assert.equal(tail.buffer.byteLength, 100, 'bytes of its own, not a slab of the pool')
  assert.deepEqual(tail, read.subarray(read.length - 100))
  // Most of what it views (and a whole chunk): the bytes themselves, no copy.
  assert.equal(keptTail(read, 100).buffer, read.buffer)
  assert.equal(keptTail(read), read)
  // A few bytes in a slab of Buffer's pool would hold the slab: copied.
  const pooled = Buffer.from('data: {"a":1}')
  assert.notEqual(keptTail(pooled).buffer, pooled.buffer)
})

test('keptText and flatText keep the characters of the text they copy, whatever they are', () => {
  const text = `${'x'.repeat(16 * 1024)}data: {"text":"\u00e9\ud83d\ude00 \ud800"}`
  const tail = text.slice(16 * 1024)
  assert.equal(keptText(tail, text), tail)
  const most = text.slice(100)
  assert.equal(keptText(most, text), most)
  assert.equal(flatText(`${tail}${most}`), tail + most)
})
