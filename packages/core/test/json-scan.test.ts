import assert from 'node:assert/strict'
import { test } from 'node:test'
import { JsonKeyScanner } from '@llmproxy/core'

function scanAll(key: string, parts: string[]): string[] {
  const found: string[] = []
  const scanner = new JsonKeyScanner(key, (json) => found.push(json))
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
  const scanner = new JsonKeyScanner('usage', (json) => found.push(json), 32)
  scanner.write(Buffer.from(`{"usage":{"pad":"${'x'.repeat(100)}"}}`))
  scanner.write(Buffer.from('{"usage":{"a":1}}'))
  assert.deepEqual(found, ['{"a":1}'])
})
