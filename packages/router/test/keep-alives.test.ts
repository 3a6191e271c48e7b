import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES } from '@llmproxy/protocols'
import { keepAlivesOnly, terminatorFirst } from '../src/keep-alives.js'

const held = (text: string) => keepAlivesOnly(Buffer.from(text))

test('comments, pings and blocks that dispatch no event are keep-alives', () => {
  assert.equal(held(': OPENROUTER PROCESSING\n\n'), true)
  assert.equal(held(':\n\n: another\n'), true)
  assert.equal(held('event: ping\ndata: {"type": "ping"}\n\n'), true)
  assert.equal(held('event:ping\r\ndata:{"type":"ping"}\r\n\r\n'), true)
  assert.equal(held('retry: 3000\n\nid: 7\n\n'), true)
  // Stray text (a proxy's error page) is no SSE field: an SSE parser ignores it.
  assert.equal(held('<html><body>502 Bad Gateway</body></html>\n\n'), true)
})

test('an event with data, a block not ended, or a line cut are not', () => {
  assert.equal(held('data: {"choices":[]}\n\n'), false)
  assert.equal(held(': processing\n\ndata: {"choices":[]}\n\n'), false)
  assert.equal(held('event: message_start\n'), false)
  assert.equal(held('event: ping\ndata: {"type": "ping"}\n'), false)
  assert.equal(held(': processi'), false)
  assert.equal(held(''), false)
  // Only a ping's own event name: another event's data is part of the answer, in whatever order its fields come.
  assert.equal(held('event: pings\ndata: {"type": "pings"}\n\n'), false)
  assert.equal(held('data: {"type": "ping"}\nevent: ping\n\n'), false)
})

test('a terminator first, after keep-alives at most, ends a stream that had no answer', () => {
  const first = (text: string) => terminatorFirst(Buffer.from(text), OPENAI_CHAT)
  assert.equal(first('data: [DONE]\n\n'), true)
  assert.equal(first(': OPENROUTER PROCESSING\n\ndata: [DONE]\n\n'), true)
  assert.equal(first(': processing\ndata: [DONE]\n\n'), true)
  // (SSE allows the field name without the space.)
  assert.equal(first('data:[DONE]\n\n'), true)
  // An answer first, however short, is one.
  assert.equal(first('data: {"choices":[{"delta":{"role":"assistant"}}]}\n\ndata: [DONE]\n\n'), false)
  assert.equal(first('data: {"choices":[]}\n\n'), false)
  // `[DONE]` inside an answer's text is no terminator.
  assert.equal(first('data: {"choices":[{"delta":{"content":"data: [DONE]"}}]}\n\n'), false)
  const stop = 'event: message_stop\ndata: {"type":"message_stop"}\n\n'
  const anthropicFirst = (text: string) => terminatorFirst(Buffer.from(text), ANTHROPIC_MESSAGES)
  assert.equal(anthropicFirst(stop), true)
  assert.equal(anthropicFirst(`event: ping\ndata: {"type": "ping"}\n\n${stop}`), true)
  assert.equal(anthropicFirst(`event: message_start\ndata: {"type":"message_start","message":{}}\n\n${stop}`), false)
  // A Responses stream's end event carries the response, or the upstream's reason for none: no terminator of nothing.
  const failed =
    'event: response.failed\ndata: {"type":"response.failed","response":{"id":"resp_1","status":"failed","error":{"code":"invalid_image_url","message":"Error while downloading https://x/img.png."},"output":[],"usage":{"input_tokens":5,"output_tokens":0,"total_tokens":5}}}\n\n'
  assert.equal(terminatorFirst(Buffer.from(failed), OPENAI_RESPONSES), false)
})
