import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ResponseTap } from '../src/tap.js'

const role = 'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}\n\n'
const token = 'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi "}}],"usage":null}\n\n'
const usage = 'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'
const done = 'data: [DONE]\n\n'

function run(parts: string[], strip: boolean, trailer: string | null = null): { out: string[]; seen: string } {
  const out: string[] = []
  let seen = ''
  const tap = new ResponseTap(
    {
      onChunk: (chunk) => {
        seen += chunk.toString()
      },
      onEnd: () => (trailer === null ? null : Buffer.from(trailer)),
    },
    strip,
  )
  tap.on('data', (chunk: Buffer) => out.push(chunk.toString()))
  for (const part of parts) tap.write(Buffer.from(part))
  tap.end()
  return { out, seen }
}

test('without stripping, chunks pass unchanged and one for one', () => {
  const parts = [role, token, usage, done]
  const { out, seen } = run(parts, false)
  assert.deepEqual(out, parts)
  assert.equal(seen, parts.join(''))
})

const bare = (event: string) => event.replace(',"usage":null', '')

test('stripping removes only the usage-only event and the null usage fields; the listener still sees them', () => {
  const { out, seen } = run([role, token, usage, done], true)
  assert.equal(out.join(''), bare(role) + bare(token) + done)
  assert.equal(seen, role + token + usage + done)
})

test('stripping works whatever the chunking', () => {
  const whole = role + token + token + usage + done
  for (let cut = 1; cut < whole.length; cut += 7) {
    for (let cut2 = cut + 1; cut2 < whole.length; cut2 += 29) {
      const { out } = run([whole.slice(0, cut), whole.slice(cut, cut2), whole.slice(cut2)], true)
      assert.equal(out.join(''), bare(role) + bare(token) + bare(token) + done, `cuts at ${cut},${cut2}`)
    }
  }
})

test('complete events go out at once; only an incomplete tail waits', () => {
  const out: string[] = []
  const tap = new ResponseTap({ onChunk: () => {}, onEnd: () => null }, true)
  tap.on('data', (chunk: Buffer) => out.push(chunk.toString()))
  tap.write(Buffer.from(role + token.slice(0, 10)))
  assert.deepEqual(out, [bare(role)])
  tap.write(Buffer.from(token.slice(10)))
  assert.deepEqual(out, [bare(role), bare(token)])
  tap.end()
})

test('the trailer (in-band error event) is sent last', () => {
  const { out } = run([role, token], true, 'event: error\ndata: {}\n\n')
  assert.equal(out.join(''), `${bare(role) + bare(token)}event: error\ndata: {}\n\n`)
})

test('a choices:[] event without usage is kept', () => {
  const empty = 'data: {"id":"c","choices":[],"usage":null}\n\n'
  const { out } = run([empty, done], true)
  assert.equal(out.join(''), bare(empty) + done)
})
