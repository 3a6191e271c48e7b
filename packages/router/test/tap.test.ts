import assert from 'node:assert/strict'
import { test } from 'node:test'
import { UsageExtractor } from '@llmproxy/core'
import { UsageEventFilter } from '../src/tap.js'

const role = 'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}\n\n'
const token = 'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi "}}],"usage":null}\n\n'
const usage = 'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'
const done = 'data: [DONE]\n\n'
const bare = (event: string) => event

/** As the proxy does: the usage extractor tells the filter which chunk carried the usage report. */
function run(parts: string[]): string[] {
  const filter = new UsageEventFilter()
  const extractor = new UsageExtractor('openai')
  const out: string[] = []
  for (const part of parts) {
    const reports = extractor.reports
    extractor.write(Buffer.from(part))
    const sent = filter.filter(Buffer.from(part), extractor.reports !== reports)
    if (sent !== null) out.push(sent.toString())
  }
  const held = filter.flush()
  if (held !== null) out.push(held.toString())
  return out
}

test('removes only the usage-only event', () => {
  assert.equal(run([role, token, usage, done]).join(''), bare(role) + bare(token) + done)
})

test('works whatever the chunking', () => {
  const whole = role + token + token + usage + done
  for (let cut = 1; cut < whole.length; cut += 7) {
    for (let cut2 = cut + 1; cut2 < whole.length; cut2 += 29) {
      const out = run([whole.slice(0, cut), whole.slice(cut, cut2), whole.slice(cut2)])
      assert.equal(out.join(''), bare(role) + bare(token) + bare(token) + done, `cuts at ${cut},${cut2}`)
    }
  }
})

test('complete events go out at once; only an incomplete tail waits', () => {
  const filter = new UsageEventFilter()
  assert.equal(filter.filter(Buffer.from(role + token.slice(0, 10)), false)?.toString(), bare(role))
  assert.equal(filter.filter(Buffer.from(token.slice(10)), false)?.toString(), bare(token))
  assert.equal(filter.flush(), null)
})

test('an unterminated last event is passed on at the end', () => {
  assert.deepEqual(run([role, 'data: {"partial"']), [bare(role), 'data: {"partial"'])
})

test('a choices:[] event without usage is kept', () => {
  const empty = 'data: {"id":"c","choices":[],"usage":null}\n\n'
  assert.equal(run([empty, done]).join(''), bare(empty) + done)
})
