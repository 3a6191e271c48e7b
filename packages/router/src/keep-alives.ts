// What an upstream may send before its answer's first event that is no part of the answer: the keep-alives that
// hold a client's stream open (StreamRelay.deliver), and a terminator that ends a stream with no answer
// (StreamRelay.endsWithoutAnswer).
import { ByteNeedle } from '@llmproxy/core'
import { type Endpoint, OPENAI_CHAT } from '@llmproxy/protocols'
import { DATA_FIELD } from './scanner.js'

const NEWLINE = 0x0a
const CR = 0x0d
const COLON = 0x3a
const PING_EVENT = new ByteNeedle('event: ping')
const BARE_PING_EVENT = new ByteNeedle('event:ping')
/** What the block being read holds (keepAlivesOnly): comments at most, fields that dispatch nothing, a ping. */
const NOTHING = 0
const FIELDS = 1
const PING = 2

/**
 * Whether `bytes`, from a line start, carry nothing of an answer: comment lines, and whole blocks whose only event is
 * a ping (Anthropic's keep-alive, what a gateway in front of this one holds its stream with) or that dispatch no
 * event at all (`retry:`, `id:`, an event name without data; a line that is no SSE field, which an SSE parser
 * ignores, as an upstream's stray error text: the attempt then fails before its answer and is retried whole).
 */
export function keepAlivesOnly(bytes: Buffer): boolean {
  const length = bytes.length
  if (length === 0 || bytes[length - 1] !== NEWLINE) return false
  let block = NOTHING
  for (let pos = 0; pos < length; pos = bytes.indexOf(NEWLINE, pos) + 1) {
    const first = bytes[pos]
    // (Line ends are LF or CRLF here: lone CRs were made LFs.)
    if (first === NEWLINE || first === CR) block = NOTHING
    else if (first === COLON) continue
    else if (DATA_FIELD.isAt(bytes, pos)) {
      if (block !== PING) return false
    } else if (block !== PING) block = isPingEvent(bytes, pos) ? PING : FIELDS
  }
  // A block of fields not ended yet may still get its data.
  return block === NOTHING
}

/** `[DONE]` (the chat endpoints' terminator), and without the space SSE allows after the field name. */
const DONE_FORMS = [...OPENAI_CHAT.terminators, new ByteNeedle('data:[DONE]')]
const NO_NEEDLES: readonly ByteNeedle[] = []
/** Keep-alives in front of a terminator of nothing take a few dozen bytes: past this, the first event is another. */
const FIRST_EVENT_WITHIN = 4096

/**
 * Whether the first event in `bytes` (whole events from a line start), after keep-alives, is a terminator that carries
 * nothing (`data: [DONE]`, Anthropic's `message_stop`): the stream ends with no answer, which the client must not take
 * for an empty one. (Not a Responses end event: it carries the response, or the upstream's reason for none.)
 */
export function terminatorFirst(bytes: Buffer, endpoint: Endpoint): boolean {
  const needles = endpoint.endsWithDone ? DONE_FORMS : endpoint.family === 'anthropic' ? endpoint.terminators : NO_NEEDLES
  // Looked for where a first event can be, not through a whole first read (a short answer's whole stream).
  let before = Math.min(bytes.length, FIRST_EVENT_WITHIN)
  let first = -1
  for (const needle of needles) {
    const at = needle.indexIn(bytes, 0, before)
    if (at !== -1) before = first = at
  }
  return first === 0 || (first > 0 && keepAlivesOnly(bytes.subarray(0, first)))
}

function isPingEvent(bytes: Buffer, pos: number): boolean {
  const needle = PING_EVENT.isAt(bytes, pos) ? PING_EVENT : BARE_PING_EVENT.isAt(bytes, pos) ? BARE_PING_EVENT : null
  if (needle === null) return false
  const after = bytes[pos + needle.length]
  return after === NEWLINE || after === CR
}
