import { StringDecoder } from 'node:string_decoder'
import { keptText } from '@llmproxy/core'
import { MalformedStreamError, type StreamDecoder, type StreamEvent } from './types.js'

const LF = 0x0a
const BOM = 0xfeff
const SPACE = 0x20
/** How much of a bad event a MalformedStreamError quotes. */
const QUOTE_CHARS = 200
/**
 * The most of one event a decoder holds (its data so far plus the line still being read), in characters: an event
 * is parsed whole, so one whose end never comes (a line without a line end, data lines without the blank line) would
 * otherwise be held without bound, several times its size in memory. Far above any event a converted answer carries
 * (a tool call's arguments sent whole, a Gemini inline image of a few MB, which the decoders drop anyway).
 */
export const MAX_EVENT_CHARS = 16 * 1024 * 1024

/** The heartbeat of an OpenAI or Gemini SSE stream: a comment, which every SSE reader skips. */
export const SSE_KEEP_ALIVE = ': keep-alive\n\n'
/** The heartbeat of an Anthropic stream: its own ping event (Anthropic sends one every ~30 s; the SDKs skip it). */
export const ANTHROPIC_PING = 'event: ping\ndata: {"type":"ping"}\n\n'

/**
 * The SSE framing every upstream decoder shares (WHATWG event-stream rules): lines end with LF, CRLF or
 * a lone CR, anywhere across chunks; `:` lines are comments; `data:` lines of one event join with LF;
 * a blank line dispatches the event. Bytes become text through a StringDecoder, so a UTF-8 character
 * split across chunks stays whole. State: the partial line and the event being read, nothing else.
 */
export abstract class SseDecoder implements StreamDecoder {
  private readonly utf8 = new StringDecoder('utf8')
  /**
   * The start of a line whose end has not arrived yet. It, and the event being read, are strings of their own
   * (`keptText`) between chunks, not slices of the chunk's text.
   */
  private partial = ''
  private data = ''
  private hasData = false
  private event = ''
  /** The last chunk ended with CR: an LF opening the next one belongs to that line end. */
  private skipLf = false
  /** Nothing was read yet: a byte order mark there is not part of the first field name. */
  private atStart = true

  abstract readonly complete: boolean
  abstract readonly finished: boolean

  /** One dispatched event: its `event:` name ('' when none) and its data. */
  protected abstract onEvent(event: string, data: string, out: StreamEvent[]): void

  push(chunk: Buffer, out: StreamEvent[]): void {
    this.scan(this.utf8.write(chunk), out)
  }

  end(out: StreamEvent[]): void {
    const rest = this.utf8.end()
    if (rest !== '') this.scan(rest, out)
    if (this.partial !== '') {
      const line = this.partial
      this.partial = ''
      this.line(line, out)
    }
    this.dispatch(out)
  }

  private scan(text: string, out: StreamEvent[]): void {
    const length = text.length
    if (length === 0) return
    let start = 0
    if (this.atStart) {
      this.atStart = false
      if (text.charCodeAt(0) === BOM) start = 1
    }
    if (this.skipLf) {
      this.skipLf = false
      if (text.charCodeAt(0) === LF) start = 1
    }
    // Most streams have no CR at all: one search for it per chunk, then only LF searches.
    let cr = text.indexOf('\r', start)
    let lf = text.indexOf('\n', start)
    while (start < length) {
      if (cr !== -1 && cr < start) cr = text.indexOf('\r', start)
      if (lf !== -1 && lf < start) lf = text.indexOf('\n', start)
      let end: number
      let next: number
      if (cr !== -1 && (lf === -1 || cr < lf)) {
        end = cr
        if (cr + 1 === length) {
          next = length
          this.skipLf = true
        } else {
          next = text.charCodeAt(cr + 1) === LF ? cr + 2 : cr + 1
        }
      } else if (lf !== -1) {
        end = lf
        next = lf + 1
      } else {
        break
      }
      let line = text.slice(start, end)
      if (this.partial !== '') {
        line = this.partial + line
        this.partial = ''
      }
      this.line(line, out)
      start = next
    }
    if (start < length) {
      this.partial = keptText(this.partial + text.slice(start), text)
      this.checkHeld()
    }
    // The text ends inside an event: what is kept of it until its end comes must not keep the whole text alive.
    if (this.hasData || this.event !== '') {
      this.event = keptText(this.event, text)
      this.data = keptText(this.data, text)
    }
  }

  private line(line: string, out: StreamEvent[]): void {
    if (line === '') {
      this.dispatch(out)
      return
    }
    // `data:` first: nearly every line is one. A field without a colon has an empty value.
    if (line.startsWith('data:')) this.addData(line.slice(line.charCodeAt(5) === SPACE ? 6 : 5))
    else if (line === 'data') this.addData('')
    else if (line.startsWith('event:')) this.event = line.slice(line.charCodeAt(6) === SPACE ? 7 : 6)
    else if (line === 'event') this.event = ''
    // Comments (`:`), `id`, `retry` and unknown fields mean nothing to a decoder.
  }

  private addData(value: string): void {
    if (this.hasData) this.data += `\n${value}`
    else {
      this.data = value
      this.hasData = true
    }
    this.checkHeld()
  }

  /** An event past MAX_EVENT_CHARS is malformed; what was held of it is dropped at once. */
  private checkHeld(): void {
    if (this.partial.length + this.data.length <= MAX_EVENT_CHARS) return
    this.partial = ''
    this.data = ''
    this.hasData = false
    throw new MalformedStreamError(`stream event longer than ${MAX_EVENT_CHARS} characters: its end never came`)
  }

  private dispatch(out: StreamEvent[]): void {
    if (this.hasData) {
      const { event, data } = this
      this.data = ''
      this.hasData = false
      this.event = ''
      this.onEvent(event, data, out)
    } else {
      this.event = ''
    }
  }
}

/** An event's data as a JSON object, or a MalformedStreamError naming the format. */
export function parseEventData(data: string, format: string): Record<string, unknown> {
  let value: unknown
  try {
    value = JSON.parse(data)
  } catch {
    throw new MalformedStreamError(`${format} stream event is not valid JSON: ${quote(data)}`)
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new MalformedStreamError(`${format} stream event is not a JSON object: ${quote(data)}`)
  }
  return value as Record<string, unknown>
}

function quote(data: string): string {
  return JSON.stringify(data.length > QUOTE_CHARS ? `${data.slice(0, QUOTE_CHARS)}…` : data)
}
