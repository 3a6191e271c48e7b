import { Readable } from 'node:stream'

const EVENT_END = Buffer.from('\n\n')
const EVENT_END_CRLF = Buffer.from('\r\n\r\n')
const EMPTY_CHOICES = [Buffer.from('"choices":[]'), Buffer.from('"choices": []')]
const USAGE_OBJECT = /"usage"\s*:\s*\{/
/** With include_usage, OpenAI also puts `"usage":null` in every other chunk; a client that did not ask never sees it. */
const NULL_USAGE = Buffer.from(',"usage":null')
/** An event that never ends is passed through rather than held without bound. */
const MAX_HELD_BYTES = 1024 * 1024

/**
 * The SSE body on its way to the client: the proxy pushes each upstream chunk in as it arrives
 * (nothing is held), and can end it with an in-band error event. Backpressure goes back to the
 * upstream body: the proxy pauses it when a push says the client is behind, `_read` resumes it.
 */
export class SseRelay extends Readable {
  private readonly source: Readable

  constructor(source: Readable) {
    super()
    this.source = source
  }

  override _read(): void {
    this.source.resume()
  }
}

/**
 * Used only when the gateway itself asked an OpenAI-style upstream for `stream_options.include_usage`:
 * removes the extra usage-only event (and the `"usage":null` fields), so the client receives exactly
 * what it asked for. Complete events go out at once; only an incomplete trailing event is held until
 * its end arrives — an SSE client cannot act on half an event anyway.
 */
export class UsageEventFilter {
  private held: Buffer | null = null

  /** The bytes to send now for this chunk (null: nothing yet). */
  filter(chunk: Buffer): Buffer | null {
    const data = this.held === null ? chunk : Buffer.concat([this.held, chunk])
    const end = Math.max(endAfter(data, EVENT_END), endAfter(data, EVENT_END_CRLF))
    if (end === -1) {
      if (data.length > MAX_HELD_BYTES) {
        this.held = null
        return data
      }
      this.held = data
      return null
    }
    this.held = end < data.length ? data.subarray(end) : null
    const out = withoutNullUsage(withoutUsageOnlyEvent(data.subarray(0, end)))
    return out.length > 0 ? out : null
  }

  /** What is still held when the upstream body ends (an unterminated last event, passed on as is). */
  flush(): Buffer | null {
    const held = this.held
    this.held = null
    return held
  }
}

function endAfter(data: Buffer, separator: Buffer): number {
  const at = data.lastIndexOf(separator)
  return at === -1 ? -1 : at + separator.length
}

function withoutNullUsage(events: Buffer): Buffer {
  let at = events.indexOf(NULL_USAGE)
  if (at === -1) return events
  const parts: Buffer[] = []
  let from = 0
  while (at !== -1) {
    parts.push(events.subarray(from, at))
    from = at + NULL_USAGE.length
    at = events.indexOf(NULL_USAGE, from)
  }
  parts.push(events.subarray(from))
  return Buffer.concat(parts)
}

/** Removes the event with `"choices":[]` and a usage object (OpenAI's include_usage chunk), if present. */
function withoutUsageOnlyEvent(events: Buffer): Buffer {
  for (const marker of EMPTY_CHOICES) {
    const at = events.indexOf(marker)
    if (at === -1) continue
    const before = events.lastIndexOf(EVENT_END, at)
    const start = before === -1 ? 0 : before + EVENT_END.length
    const after = events.indexOf(EVENT_END, at)
    const stop = after === -1 ? events.length : after + EVENT_END.length
    if (!USAGE_OBJECT.test(events.toString('utf8', start, stop))) continue
    if (start === 0 && stop === events.length) return events.subarray(0, 0)
    return Buffer.concat([events.subarray(0, start), events.subarray(stop)])
  }
  return events
}
