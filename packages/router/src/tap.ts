import { Transform, type TransformCallback } from 'node:stream'

const EVENT_END = Buffer.from('\n\n')
const EVENT_END_CRLF = Buffer.from('\r\n\r\n')
const EMPTY_CHOICES = [Buffer.from('"choices":[]'), Buffer.from('"choices": []')]
const USAGE_OBJECT = /"usage"\s*:\s*\{/
/** With include_usage, OpenAI also puts `"usage":null` in every other chunk; a client that did not ask never sees it. */
const NULL_USAGE = Buffer.from(',"usage":null')
/** An event that never ends is passed through rather than held without bound. */
const MAX_HELD_BYTES = 1024 * 1024

/** What the tap reports to its owner, chunk by chunk and at the end. */
export interface TapListener {
  onChunk(chunk: Buffer): void
  /** The upstream body ended; the returned bytes (an in-band error event) are sent last, if any. */
  onEnd(): Buffer | null
}

/**
 * The response body on its way to the client. Chunks go through unchanged and at once; the listener
 * reads them beside the flow. In `stripUsage` mode (the gateway itself asked an OpenAI-style upstream
 * for `stream_options.include_usage`) the extra usage-only event is removed, so the client receives
 * exactly what it asked for: complete events go out at once, only an incomplete trailing event is held
 * until its end arrives — an SSE client cannot act on half an event anyway.
 */
export class ResponseTap extends Transform {
  private readonly listener: TapListener
  private readonly stripUsage: boolean
  private held: Buffer | null = null

  constructor(listener: TapListener, stripUsage: boolean) {
    super()
    this.listener = listener
    this.stripUsage = stripUsage
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.listener.onChunk(chunk)
    if (!this.stripUsage) {
      callback(null, chunk)
      return
    }
    const out = this.completeEvents(chunk)
    callback(null, out !== null && out.length > 0 ? out : undefined)
  }

  override _flush(callback: TransformCallback): void {
    if (this.held !== null) {
      this.push(this.held)
      this.held = null
    }
    const trailer = this.listener.onEnd()
    callback(null, trailer ?? undefined)
  }

  private completeEvents(chunk: Buffer): Buffer | null {
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
    return withoutNullUsage(withoutUsageOnlyEvent(data.subarray(0, end)))
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
