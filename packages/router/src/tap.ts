import { ByteNeedle, keptTail, type LlmProxyError } from '@llmproxy/core'
import { DATA_FIELD } from './scanner.js'

const NEWLINE = 0x0a
const CR = 0x0d
const CLOSE_BRACE = 0x7d
const CLOSE_BRACKET = 0x5d
const EMPTY_CHOICES = [new ByteNeedle('"choices":[]'), new ByteNeedle('"choices": []')]
const USAGE_OBJECT = /"usage"\s*:\s*\{/
/** An event that never ends is passed through rather than held without bound. */
const MAX_HELD_BYTES = 1024 * 1024

/**
 * The transform slot on the response path: null for same-format traffic (bytes pass untouched, nothing parsed);
 * otherwise what turns the upstream's bytes into the client's, chunk by chunk, never holding more than an
 * incomplete event.
 */
export interface ResponseTransform {
  /**
   * The bytes to send now for this upstream chunk (null: nothing yet). `usageFrom`: the scanner saw no usage report
   * before this offset (the chunk's length: none in it).
   */
  push(chunk: Buffer, usageFrom: number): Buffer | string | null
  /**
   * The upstream stream is over, `complete` or not: what is still held that may go out, and (complete) the client
   * format's end. (Same-format streams flush what is whole first, see EventAligner.flush: they have nothing left.)
   */
  end(complete: boolean): Buffer | string | null
  /** The in-band error that ends the client's stream, when the transform frames it (null: the client API's own). */
  errorEvent(error: LlmProxyError): string | null
  /** The upstream reported a failure inside the stream (seen by the last `push`): the stream must end with it. */
  readonly failure: LlmProxyError | null
}

/**
 * Same-format streams go out event by event: complete events at once (usually a chunk is whole events and goes out
 * as it came, no copy), an incomplete trailing event held until its end arrives — an SSE client cannot act on half
 * an event anyway, and a stream that then fails or is continued must not leave half an event glued to what follows.
 */
export class EventAligner implements ResponseTransform {
  readonly failure = null
  private held: Buffer | null = null
  /** The start of the event being read went out already (it grew past MAX_HELD_BYTES): what is held is its rest. */
  private passedOn = false

  push(chunk: Buffer, _usageFrom: number): Buffer | null {
    return this.align(chunk)
  }

  /** The complete events of what came so far (null: none yet); the incomplete tail is held. */
  protected align(chunk: Buffer): Buffer | null {
    const data = this.held === null ? chunk : Buffer.concat([this.held, chunk])
    const length = data.length
    // Usually a chunk is whole events: it ends with the blank line, no search needed.
    const end = endsEvent(data, length - 1) ? length : eventEndBefore(data, length)
    if (end === -1) {
      if (data.length > MAX_HELD_BYTES) {
        this.held = null
        this.passedOn = true
        return data
      }
      this.held = keptTail(data)
      return null
    }
    this.passedOn = false
    // The incomplete tail's own bytes: a view would keep the whole read alive until the event's end comes.
    this.held = end < data.length ? keptTail(data, end) : null
    return end === data.length ? data : data.subarray(0, end)
  }

  /** Whether an incomplete event is held. */
  protected get holding(): boolean {
    return this.held !== null
  }

  errorEvent(): null {
    return null
  }

  /**
   * The upstream body is over: an event it left without its blank line goes out (completed) when it ends with a
   * whole data line — servers that end a stream without the blank line, or without the last line end (`ended`: a
   * clean end, where a data line whose JSON closes is whole). A cut line, or an `event:` line without its data, never
   * goes out: half an event would break the client's parser, and the stream's end is judged on what went out.
   */
  flush(ended: boolean): Buffer | null {
    const held = this.held
    // An event too long to hold went out in part: at a clean end, its rest goes out too (the client has its start).
    const completion = this.passedOn ? (ended ? lineEnding(held) : null) : held === null ? null : completionOf(held, ended)
    if (completion === null) {
      this.held = null
      return null
    }
    // Completed, the event goes the way every event goes (through the usage filter too).
    return this.push(completion, completion.length)
  }

  /** Whatever is still held is a cut line (`flush` came first): dropped. */
  end(): null {
    this.held = null
    return null
  }
}

const LINE_END = Buffer.from('\n')
const BLANK_LINE = Buffer.from('\n\n')

/**
 * Used only when the gateway itself asked an OpenAI-style upstream for `stream_options.include_usage`: removes the
 * extra usage-only event, so the client receives what it asked for. (OpenAI also sets `"usage":null` on every other
 * chunk then; clients accept it, and rewriting every chunk would cost more than it is worth.) The event is
 * recognised by its shape (empty choices and a usage object), so the filter runs before the usage tap reads the chunk.
 */
export class UsageEventFilter extends EventAligner {
  /** Bytes that may hold a usage report came by and are not all searched yet (some may still be held). */
  private usagePending = false
  /** Where the search for it starts in the next complete events (before: lines the scanner saw report nothing). */
  private searchFrom = 0

  /** The complete events are searched for the usage-only event while anything that may carry one is unsearched. */
  override push(chunk: Buffer, usageFrom: number): Buffer | null {
    if (usageFrom < chunk.length && !this.usagePending) {
      this.usagePending = true
      // Held bytes come first in the events: they are searched too.
      this.searchFrom = this.holding ? 0 : usageFrom
    }
    let events = this.align(chunk)
    if (events !== null && this.usagePending) {
      const without = withoutUsageOnlyEvent(events, this.searchFrom)
      this.searchFrom = 0
      // Removed, or every event so far was complete and searched.
      if (without !== events || !this.holding) this.usagePending = false
      events = without
    }
    return events !== null && events.length > 0 ? events : null
  }
}

/** What ends an event whose bytes end here (null: all went out): its blank line (after a line end, one more). */
function lineEnding(held: Buffer | null): Buffer {
  return held !== null && held[held.length - 1] === NEWLINE ? LINE_END : BLANK_LINE
}

/**
 * What completes held bytes into an event when they end with a whole `data:` line (null: they do not): its line end
 * came, or (`ended`) the body ended cleanly right after a JSON value's last byte.
 */
function completionOf(held: Buffer, ended: boolean): Buffer | null {
  const last = held.length - 1
  const lineEnded = held[last] === NEWLINE
  const start = held.lastIndexOf(NEWLINE, lineEnded ? last - 1 : last) + 1
  if (!DATA_FIELD.isAt(held, start)) return null
  if (lineEnded) return LINE_END
  const end = held[last]
  return ended && (end === CLOSE_BRACE || end === CLOSE_BRACKET) ? BLANK_LINE : null
}

/** Whether a blank line ends at `i` (a newline after `\n` or `\n\r`): the end of an event. */
function endsEvent(data: Buffer, i: number): boolean {
  if (data[i] !== NEWLINE) return false
  const previous = data[i - 1]
  return previous === NEWLINE || (previous === CR && data[i - 2] === NEWLINE)
}

/**
 * The end of the last blank line that ends before `before`, or -1. A byte loop, not `Buffer#lastIndexOf`
 * with a Buffer needle (~0.25 µs a call): events are short.
 */
function eventEndBefore(data: Buffer, before: number): number {
  for (let i = before - 1; i > 0; i--) if (endsEvent(data, i)) return i + 1
  return -1
}

/** The end of the first blank line after `from`, or -1. */
function eventEndAfter(data: Buffer, from: number): number {
  let at = data.indexOf(NEWLINE, from)
  while (at !== -1 && !endsEvent(data, at)) at = data.indexOf(NEWLINE, at + 1)
  return at === -1 ? -1 : at + 1
}

/** Removes the event with `"choices":[]` and a usage object (OpenAI's include_usage chunk), if present at or after `from`. */
function withoutUsageOnlyEvent(events: Buffer, from: number): Buffer {
  for (const marker of EMPTY_CHOICES) {
    // Other events may have empty choices too (e.g. Azure's prompt_filter_results): each is looked at.
    for (let at = marker.indexIn(events, from); at !== -1; at = marker.indexIn(events, at + marker.length)) {
      const before = eventEndBefore(events, at)
      const start = before === -1 ? 0 : before
      const after = eventEndAfter(events, at)
      const stop = after === -1 ? events.length : after
      if (!USAGE_OBJECT.test(events.toString('utf8', start, stop))) continue
      if (start === 0 && stop === events.length) return events.subarray(0, 0)
      return Buffer.concat([events.subarray(0, start), events.subarray(stop)])
    }
  }
  return events
}
