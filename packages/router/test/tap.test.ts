import assert from 'node:assert/strict'
import { test } from 'node:test'
import { UsageEventFilter } from '../src/tap.js'

const role = 'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}\n\n'
const token = 'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi "}}],"usage":null}\n\n'
const usage = 'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'
const done = 'data: [DONE]\n\n'
const bare = (event: string) => event
/** `usageFrom` for a chunk the scanner saw report no usage. */
const NONE = Number.MAX_SAFE_INTEGER

/** Every chunk may carry usage from its start (the proxy says otherwise only for lines its walk cleared). */
function run(parts: string[]): string[] {
  const filter = new UsageEventFilter()
  const out: string[] = []
  for (const part of parts) {
    const sent = filter.push(Buffer.from(part), 0)
    if (sent !== null) out.push(sent.toString())
  }
  const held = filter.flush(true)
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
  assert.equal(filter.push(Buffer.from(role + token.slice(0, 10)), NONE)?.toString(), bare(role))
  assert.equal(filter.push(Buffer.from(token.slice(10)), NONE)?.toString(), bare(token))
  assert.equal(filter.flush(true), null)
})

test('an unfinished last event goes out completed when its data line is whole, never when it was cut', () => {
  const flushed = (held: string, ended: boolean) => {
    const filter = new UsageEventFilter()
    filter.push(Buffer.from(role + held), 0)
    return filter.flush(ended)?.toString() ?? null
  }
  // Whole: its line end came (ended or cut after it), or a clean end right after its JSON.
  assert.equal(flushed('data: [DONE]\n', false), 'data: [DONE]\n\n')
  assert.equal(flushed('data: {"id":"c"}\r\n', false), 'data: {"id":"c"}\r\n\n')
  assert.equal(flushed('data: {"id":"c"}', true), 'data: {"id":"c"}\n\n')
  // Cut: inside the line, or before the data of an event line, or a line end away from a clean end.
  assert.equal(flushed('data: {"id":"c"}', false), null)
  assert.equal(flushed('data: {"partial"', true), null)
  assert.equal(flushed('event: message_stop\n', true), null)
  assert.equal(flushed('data: ', false), null)
  // Completed, the usage-only event is still removed.
  assert.equal(flushed(usage.slice(0, -1), false), null)
})

test('a choices:[] event without usage is kept', () => {
  const empty = 'data: {"id":"c","choices":[],"usage":null}\n\n'
  assert.equal(run([empty, done]).join(''), bare(empty) + done)
})

test('a chunk known to carry no usage is not searched, unless bytes that may are still held', () => {
  const skipped = new UsageEventFilter()
  assert.equal(skipped.push(Buffer.from(token), 0)?.toString(), bare(token))
  // Everything that might have carried usage was searched: a chunk cleared by the proxy goes out as is.
  assert.equal(skipped.push(Buffer.from(usage), NONE)?.toString(), bare(usage))

  const split = new UsageEventFilter()
  // The usage line is whole but its event is not: held, still to be searched when its blank line comes.
  assert.equal(split.push(Buffer.from(token + usage.slice(0, -1)), 0)?.toString(), bare(token))
  assert.equal(split.push(Buffer.from('\n'), NONE), null)
  assert.equal(split.push(Buffer.from(done), NONE)?.toString(), done)
})

test('the search starts where the scanner says usage may be reported', () => {
  const chunk = role + token + usage + done
  const from = new UsageEventFilter()
  assert.equal(from.push(Buffer.from(chunk), (role + token).length)?.toString(), bare(role) + bare(token) + done)
  // Lines before the offset are vouched for by the scanner: not searched (here, a usage event is let through).
  const after = new UsageEventFilter()
  assert.equal(after.push(Buffer.from(chunk), (role + token + usage).length)?.toString(), chunk)
})

test('CRLF streams: only the usage-only event is removed, whatever the line-end chunking', () => {
  const crlf = (event: string) => event.replaceAll('\n', '\r\n')
  const events = [role, token, usage, done].map(crlf)
  const expected = crlf(role + token + done)
  assert.equal(run([events.join('')]).join(''), expected)
  // Every way of cutting the stream at line ends.
  const lines = events.join('').split(/(?<=\r\n)/)
  for (let mask = 0; mask < 1 << (lines.length - 1); mask++) {
    const parts: string[] = []
    let part = ''
    for (const [i, line] of lines.entries()) {
      part += line
      if (mask & (1 << i) || i === lines.length - 1) {
        parts.push(part)
        part = ''
      }
    }
    assert.equal(run(parts).join(''), expected, JSON.stringify(parts))
  }
})

test('the usage-only event is found after other events with empty choices', () => {
  const filtered = 'data: {"id":"c","choices":[],"prompt_filter_results":[],"usage":null}\n\n'
  assert.equal(run([filtered + token + usage + done]).join(''), filtered + token + done)
})
