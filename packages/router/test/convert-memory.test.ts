// A converted stream keeps its answer's text for a continuation only up to MAX_TEXT_BYTES, as the same-format resume
// tap does: an answer of any length then costs constant memory (a 200 MB answer held 200 MB before).
import { strict as assert } from 'node:assert'
import { test } from 'node:test'
import { createEncoder } from '@llmproxy/protocols'
import { StreamConverter } from '../src/convert.js'
import { MAX_TEXT_BYTES } from '../src/resume.js'

const event = (content: string): Buffer =>
  Buffer.from(
    `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`,
  )

test('a converted answer longer than MAX_TEXT_BYTES stops being kept for a continuation', () => {
  const converter = new StreamConverter('openai', createEncoder('anthropic', { model: 'claude' }))
  const piece = 'x'.repeat(1024)
  for (let i = 0; i < 200; i++) converter.push(event(piece))
  assert.equal(converter.continuable, true, '200 KB is kept')
  assert.equal(converter.answerText().length, 200 * 1024)
  for (let i = 0; i < MAX_TEXT_BYTES / 1024; i++) converter.push(event(piece))
  assert.equal(converter.continuable, false)
  assert.equal(converter.answerText(), '', 'nothing held any more')
  // The client's stream goes on as before.
  const out = converter.push(event('more'))
  assert.match(String(out), /"text":"more"/)
})
