import assert from 'node:assert/strict'
import { test } from 'node:test'
import { JsonKeyScanner } from '@llmproxy/core'

function scanAll(key: string, parts: string[], maxDepth = 1): string[] {
  const found: string[] = []
  const scanner = new JsonKeyScanner(key, maxDepth, (json) => found.push(json))
  for (const part of parts) scanner.write(Buffer.from(part))
  return found
}

/** Every way of cutting `text` into two chunks. */
function everySplit(text: string): string[][] {
  const out: string[][] = []
  for (let i = 0; i <= text.length; i++) out.push([text.slice(0, i), text.slice(i)])
  return out
}

test('captures the object after the key, across any chunk boundary', () => {
  const text = 'data: {"id":"x","usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n'
  for (const parts of everySplit(text)) {
    assert.deepEqual(scanAll('usage', parts), ['{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}'], JSON.stringify(parts))
  }
})

test('a JSON body after a byte order mark is read as JSON (pretty-printed, the key on its own line)', () => {
  const text = '\ufeff{\n  "id": "x",\n  "usage": {\n    "prompt_tokens": 3\n  }\n}'
  for (const parts of everySplit(text)) {
    assert.deepEqual(scanAll('usage', parts), ['{\n    "prompt_tokens": 3\n  }'], JSON.stringify(parts))
  }
})

test('a key spread over three chunks or more (a chunk shorter than the rest of the key) is still found', () => {
  const text = 'data: {"id":"x","usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n'
  const key = text.indexOf('"usage"')
  for (let first = key + 1; first < key + 7; first++) {
    for (let second = first + 1; second < key + 7; second++) {
      const parts = [text.slice(0, first), text.slice(first, second), text.slice(second)]
      assert.deepEqual(scanAll('usage', parts), ['{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}'], JSON.stringify(parts))
    }
  }
  // One byte at a time.
  assert.equal(scanAll('usage', [...text]).length, 1)
})

test('skips null values and escaped occurrences inside strings', () => {
  const text =
    'data: {"choices":[{"delta":{"content":"say \\"usage\\": {\\"a\\":1}"}}],"usage":null}\n\n' +
    'data: {"usage" : { "prompt_tokens" : 1 , "x":"}{"}}\n\n'
  for (const parts of everySplit(text)) {
    assert.deepEqual(scanAll('usage', parts), ['{ "prompt_tokens" : 1 , "x":"}{"}'], JSON.stringify(parts))
  }
})

test('nested objects are captured whole', () => {
  const text =
    '{"usage":{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}'
  assert.deepEqual(scanAll('usage', [text]), [
    '{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}',
  ])
})

test('an oversize object is abandoned and scanning goes on', () => {
  const found: string[] = []
  const scanner = new JsonKeyScanner('usage', 1, (json) => found.push(json), 32)
  scanner.write(Buffer.from(`{"usage":{"pad":"${'x'.repeat(100)}"}}`))
  scanner.write(Buffer.from('{"usage":{"a":1}}'))
  assert.deepEqual(found, ['{"a":1}'])
})

test('a key deeper than maxDepth is content, not a match, across any chunk boundary', () => {
  // Arguments sent as an object (Gemini, Anthropic): the key three levels down; the report at the top.
  const text =
    'data: {"parts":[{"functionCall":{"args":{"usage":{"cached":900}}}}],"usage":{"prompt_tokens":3}}\n\n' +
    'data: {"call":{"args":{"usage":{"cached":900}}},"usage":{"prompt_tokens":4}}\n\n'
  for (const parts of everySplit(text)) {
    assert.deepEqual(scanAll('usage', parts), ['{"prompt_tokens":3}', '{"prompt_tokens":4}'], JSON.stringify(parts))
  }
  assert.deepEqual(scanAll('usage', [...text]), ['{"prompt_tokens":3}', '{"prompt_tokens":4}'])
  // Three levels allowed: the second line's arguments (three down) count, the first's (five down) still not.
  assert.deepEqual(scanAll('usage', [text], 3), ['{"prompt_tokens":3}', '{"cached":900}', '{"prompt_tokens":4}'])
})

test('keysFound counts the key where it counts, whatever its value; not as a value, not deeper, across any chunk boundary', () => {
  // Deeper, as a string's text, as a value: none counts; the last line's key (a string value) does.
  const content = 'data: {"c":[{"args":{"finishReason":"x"},"text":"\\"finishReason\\":1","v":"finishReason"}]}\n\n'
  const text = `${content}data: {"c":[{"finishReason": "STOP"}]}\n\n`
  const found = (parts: string[]) => {
    const scanner = new JsonKeyScanner('finishReason', 3, () => {})
    for (const part of parts) scanner.write(Buffer.from(part))
    return scanner.keysFound
  }
  assert.equal(found([content]), 0)
  for (const parts of everySplit(text)) assert.equal(found(parts), 1, JSON.stringify(parts))
})

test('an array is a level: the elements of a top-level array are one level down', () => {
  const text = '[{"usage":{"a":1}}\r\n,\r\n{"usage":{"a":2}}]'
  assert.deepEqual(scanAll('usage', [text], 1), [])
  for (const parts of everySplit(text)) assert.deepEqual(scanAll('usage', parts, 2), ['{"a":1}', '{"a":2}'], JSON.stringify(parts))
})

test('brackets, braces and the key inside strings leave the nesting alone', () => {
  const text = '{"text":"}]]} \\" \\\\","args":{"s":"{{[[\\"usage\\":{"},"usage":{"a":1}}'
  assert.deepEqual(JSON.parse(text).usage, { a: 1 })
  for (const parts of everySplit(text)) assert.deepEqual(scanAll('usage', parts), ['{"a":1}'], JSON.stringify(parts))
})

test('a quote in a line that is not JSON does not hide the next line', () => {
  // The deeper key makes the scan go through the comment rather than skip to the last line.
  for (const comment of [': a " quote', `: a " quote and ${'x'.repeat(40)}`]) {
    const text = `data: {"args":{"x":{"usage":{"cached":900}}}}\n${comment}\ndata: {"usage":{"a":1}}\n\n`
    for (const parts of everySplit(text)) assert.deepEqual(scanAll('usage', parts), ['{"a":1}'], JSON.stringify(parts))
  }
})

test('scanning from an offset starts outside any value', () => {
  const found: string[] = []
  const scanner = new JsonKeyScanner('usage', 1, (json) => found.push(json))
  // Left inside a string (by bytes that were not JSON); the caller then skips to a line of its own.
  scanner.write(Buffer.from('data: {"x":{"y":"abc'))
  const skippedThenLine = Buffer.from('def"}}\ndata: {"usage":{"a":1}}\n')
  scanner.write(skippedThenLine, skippedThenLine.indexOf('data:'))
  assert.deepEqual(found, ['{"a":1}'])
})

test('after an oversize object is abandoned, the nesting is still followed', () => {
  const found: string[] = []
  const scanner = new JsonKeyScanner('usage', 1, (json) => found.push(json), 32)
  scanner.write(Buffer.from(`{"usage":{"pad":"${'x'.repeat(40)}",`))
  scanner.write(Buffer.from('"usage":{"inner":1}},"usage":{"a":1}}'))
  assert.deepEqual(found, ['{"a":1}'])
  assert.equal(scanner.jsonClosed, true)
})

test('long strings and long runs of numbers (their ends searched natively) are followed too, across any chunk boundary', () => {
  const long = `${'x'.repeat(40)}\\"usage\\":{}[${'\\\\'.repeat(3)}\\"${'y'.repeat(40)}\\\\`
  const text = `data: {"text":"${long}","args":{"usage":{"v":[${'1.5,'.repeat(20)}2]}},"n":[${'-0.25,'.repeat(20)}1],"usage":{"a":1}}\n\n`
  assert.equal(JSON.parse(text.slice(6)).text, `${'x'.repeat(40)}"usage":{}[${'\\'.repeat(3)}"${'y'.repeat(40)}\\`)
  for (const parts of everySplit(text)) assert.deepEqual(scanAll('usage', parts), ['{"a":1}'], JSON.stringify(parts))
})

test('whether the bytes open a JSON document, and whether it is whole (nesting and strings closed), across any chunk boundary', () => {
  const cases: [string, boolean | null, boolean][] = [
    ['', null, false],
    [' \r\n', null, false],
    ['{"id":"x","usage":{"prompt_tokens":3},"choices":[{"text":"}]"}]}\n', true, true],
    ['\ufeff [1,{"a":[]}]', true, true],
    ['{not json', true, false],
    ['{"id":"x","choices":[{"text":"Hi', true, false],
    ['{"text":"a \\"quoted\\" }"', true, false],
    ['{"usage":{"prompt_tokens":3}', true, false],
    ['Bad gateway', false, false],
    ['\n<!DOCTYPE html><html>{}</html>', false, false],
  ]
  for (const [text, opens, closed] of cases) {
    for (const parts of everySplit(text)) {
      const scanner = new JsonKeyScanner('usage', 2, () => {})
      for (const part of parts) scanner.write(Buffer.from(part))
      assert.equal(scanner.opensJson, opens, JSON.stringify(parts))
      assert.equal(scanner.jsonClosed, closed, JSON.stringify(parts))
    }
  }
})

/** Deterministic pseudo-random numbers in [0, 1) (mulberry32), so that a failure can be replayed. */
function randomFrom(seed: number): () => number {
  let state = seed
  return () => {
    state = (state + 0x6d2b79f5) | 0
    let t = Math.imul(state ^ (state >>> 15), 1 | state)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

test('finds exactly the key objects at most maxDepth deep, in random JSON cut into random chunks', () => {
  const random = randomFrom(29)
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T
  const pieces = ['usage', '"usage":{', '\\', '"', '{', '}', '[', ']', ':', ',', ' ', 'é', '\n', 'x'.repeat(40), '\\'.repeat(33)]
  const keys = ['usage', 'usage', 'a', 'args', 'input', 'usageX']
  const value = (level: number): unknown => {
    const kind = random()
    if (level > 5 || kind < 0.3) return pick([null, true, 12, -0.5, Array.from({ length: 12 }, () => random())])
    if (kind < 0.55) return Array.from({ length: 1 + Math.floor(random() * 4) }, () => pick(pieces)).join('')
    if (kind < 0.7) return Array.from({ length: Math.floor(random() * 3) }, () => value(level + 1))
    return Object.fromEntries(Array.from({ length: 1 + Math.floor(random() * 4) }, () => [pick(keys), value(level + 1)]))
  }
  const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v)
  /** The key objects the scanner must find in `container` (opened `depth` levels down), in document order. */
  const expected = (container: unknown, depth: number, maxDepth: number, out: unknown[]): unknown[] => {
    for (const [key, v] of Object.entries(container as object)) {
      if (isObject(container) && key === 'usage' && isObject(v) && depth <= maxDepth) out.push(v)
      else if (v !== null && typeof v === 'object') expected(v, depth + 1, maxDepth, out)
    }
    return out
  }
  const randomChunks = (text: string): Buffer[] => {
    const bytes = Buffer.from(text)
    const cuts = Array.from({ length: 1 + Math.floor(random() * 8) }, () => Math.floor(random() * bytes.length)).sort((a, b) => a - b)
    return [0, ...cuts].map((start, i) => bytes.subarray(start, cuts[i] ?? bytes.length))
  }
  for (let round = 0; round < 400; round++) {
    const events = Array.from({ length: 1 + Math.floor(random() * 3) }, () => ({ usage: { n: round }, ...(value(1) as object) }))
    const maxDepth = 1 + (round % 3)
    const framings: [string, string, unknown[]][] = [
      ['body', JSON.stringify(events[0], null, round % 2 === 0 ? 0 : 2), expected(events[0], 1, maxDepth, [])],
      [
        'sse',
        events.map((event) => `data: ${JSON.stringify(event)}\n\n`).join(''),
        events.flatMap((event) => expected(event, 1, maxDepth, [])),
      ],
      ['array', JSON.stringify(events, null, 1), expected(events, 1, maxDepth, [])],
    ]
    for (const [framing, text, objects] of framings) {
      const found: unknown[] = []
      const scanner = new JsonKeyScanner('usage', maxDepth, (json) => found.push(JSON.parse(json)))
      const chunks = randomChunks(text)
      const whole = framing !== 'sse'
      for (const [i, chunk] of chunks.entries()) {
        scanner.write(chunk)
        // A document is whole at its last byte (its closing brace or bracket), not before.
        assert.equal(scanner.jsonClosed, whole && i === chunks.length - 1, `round ${round}, ${framing}, chunk ${i}`)
      }
      assert.deepEqual(found, objects, `round ${round}, ${framing}, maxDepth ${maxDepth}, chunks ${JSON.stringify(chunks.map(String))}`)
    }
  }
})
