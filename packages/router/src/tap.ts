const EVENT_END = Buffer.from('\n\n')
const NEWLINE = 0x0a
const EVENT_END_CRLF = Buffer.from('\r\n\r\n')
const EMPTY_CHOICES = [Buffer.from('"choices":[]'), Buffer.from('"choices": []')]
const USAGE_OBJECT = /"usage"\s*:\s*\{/
/** An event that never ends is passed through rather than held without bound. */
const MAX_HELD_BYTES = 1024 * 1024

/**
 * Used only when the gateway itself asked an OpenAI-style upstream for `stream_options.include_usage`:
 * removes the extra usage-only event, so the client receives what it asked for. (OpenAI also sets
 * `"usage":null` on every other chunk then; clients accept it, and rewriting every chunk would cost more
 * than it is worth.) Complete events go out at once; only an incomplete trailing event is held until
 * its end arrives — an SSE client cannot act on half an event anyway.
 */
export class UsageEventFilter {
  private held: Buffer | null = null
  /** A usage report passed by (the extractor saw it) and its event is still to be removed. */
  private usagePending = false

  /**
   * The bytes to send now for this chunk (null: nothing yet). `carriesUsage`: the usage extractor found a
   * usage report in this chunk — only then is the chunk searched for the usage-only event.
   */
  filter(chunk: Buffer, carriesUsage: boolean): Buffer | null {
    if (carriesUsage) this.usagePending = true
    const data = this.held === null ? chunk : Buffer.concat([this.held, chunk])
    const length = data.length
    // Usually a chunk is whole events: it ends with the blank line, no search needed.
    let end = length >= 2 && data[length - 1] === NEWLINE && data[length - 2] === NEWLINE ? length : endAfter(data, EVENT_END)
    if (end === -1) end = endAfter(data, EVENT_END_CRLF)
    if (end === -1) {
      if (data.length > MAX_HELD_BYTES) {
        this.held = null
        return data
      }
      this.held = data
      return null
    }
    this.held = end < data.length ? data.subarray(end) : null
    let events = end === data.length ? data : data.subarray(0, end)
    if (this.usagePending) {
      const without = withoutUsageOnlyEvent(events)
      if (without !== events) this.usagePending = false
      events = without
    }
    return events.length > 0 ? events : null
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
