/**
 * Finds `"<key>": { … }` in a JSON (or SSE-of-JSON) byte stream fed chunk by chunk, and hands each
 * captured object's text to `onObject`. O(1) memory: only the captured object (capped) is kept.
 * Used beside the response stream to read usage without buffering the body.
 *
 * Escaped occurrences inside strings (`\"usage\"`) are skipped: in JSON text a quote inside a string
 * is always preceded by a backslash.
 */
import { ByteNeedle } from './bytes.js'

const BACKSLASH = 0x5c
const QUOTE = 0x22
const COLON = 0x3a
const OPEN = 0x7b
const CLOSE = 0x7d

enum State {
  Search = 0,
  /** Matched the key; expecting `:`. */
  Colon = 1,
  /** Matched `:`; expecting `{` (anything else, e.g. `null`, abandons the match). */
  Value = 2,
  Capture = 3,
}

export class JsonKeyScanner {
  /** The quoted key searched for (`"usage"`). */
  readonly needle: ByteNeedle
  private readonly maxBytes: number
  private readonly onObject: (json: string) => void
  private state: State = State.Search
  /** Bytes of the needle matched at the end of the previous chunk (cross-chunk matches). */
  private partial = 0
  private prevByte = 0
  private captured: Buffer[] = []
  private capturedBytes = 0
  private depth = 0
  private inString = false
  private escaped = false

  constructor(key: string, onObject: (json: string) => void, maxBytes = 16 * 1024) {
    this.needle = needleFor(key)
    this.onObject = onObject
    this.maxBytes = maxBytes
  }

  /**
   * Scans the chunk from `from` on. A caller that skips bytes (`from` > 0, or whole chunks) vouches that they are
   * whole lines holding no match (the scanner is then between objects, with nothing of a key carried).
   */
  write(chunk: Buffer, from = 0): void {
    let pos = from
    const len = chunk.length
    while (pos < len) {
      switch (this.state) {
        case State.Search:
          pos = this.search(chunk, pos)
          break
        case State.Colon:
        case State.Value:
          pos = this.afterKey(chunk, pos)
          break
        case State.Capture:
          pos = this.capture(chunk, pos)
          break
      }
    }
    this.prevByte = len > 0 ? (chunk[len - 1] as number) : this.prevByte
  }

  private search(chunk: Buffer, from: number): number {
    const needle = this.needle
    // Part of a needle at the end of the previous chunks (from 0: a chunk starts here).
    const carried = from === 0 ? this.partial : 0
    this.partial = 0
    if (carried > 0) {
      const end = needle.completeIn(chunk, carried)
      if (end !== -1) {
        this.state = State.Colon
        return end
      }
    }
    let at = needle.indexIn(chunk, from)
    while (at !== -1) {
      const before = at > 0 ? chunk[at - 1] : this.prevByte
      if (before !== BACKSLASH) {
        this.state = State.Colon
        return at + needle.length
      }
      at = needle.indexIn(chunk, at + 1)
    }
    this.partial = needle.carriedPrefix(chunk, carried)
    return chunk.length
  }

  private afterKey(chunk: Buffer, from: number): number {
    let pos = from
    while (pos < chunk.length) {
      const b = chunk[pos] as number
      if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09) {
        pos++
        continue
      }
      if (this.state === State.Colon) {
        if (b !== COLON) {
          this.state = State.Search
          return pos
        }
        this.state = State.Value
        pos++
        continue
      }
      if (b !== OPEN) {
        this.state = State.Search
        return pos
      }
      this.state = State.Capture
      this.depth = 0
      this.inString = false
      this.escaped = false
      this.captured = []
      this.capturedBytes = 0
      return pos
    }
    return pos
  }

  private capture(chunk: Buffer, from: number): number {
    // The byte loop works on locals; the state is stored back once per chunk.
    let depth = this.depth
    let inString = this.inString
    let escaped = this.escaped
    let pos = from
    const len = chunk.length
    for (; pos < len; pos++) {
      const b = chunk[pos] as number
      if (inString) {
        if (escaped) escaped = false
        else if (b === BACKSLASH) escaped = true
        else if (b === QUOTE) inString = false
        continue
      }
      if (b === QUOTE) inString = true
      else if (b === OPEN) depth++
      else if (b === CLOSE && --depth === 0) {
        pos++
        this.state = State.Search
        if (this.captured.length === 0) {
          // The whole object is in this chunk (the usual case): no copy, straight to text.
          if (pos - from <= this.maxBytes) this.onObject(chunk.toString('utf8', from, pos))
        } else if (this.keep(chunk.subarray(from, pos))) this.finish()
        return pos
      }
    }
    this.depth = depth
    this.inString = inString
    this.escaped = escaped
    this.keep(chunk.subarray(from, pos))
    return pos
  }

  /** Holds part of an object that spans chunks; false when it grew past the cap (the match is given up). */
  private keep(part: Buffer): boolean {
    this.capturedBytes += part.length
    if (this.capturedBytes > this.maxBytes) {
      // Not a usage object we can hold: give up on this match, keep scanning.
      this.captured = []
      this.state = State.Search
      return false
    }
    // Copy: the chunk belongs to the response stream and may be reused after we return.
    this.captured.push(Buffer.from(part))
    return true
  }

  /** An object that spanned chunks is complete. */
  private finish(): void {
    const text = Buffer.concat(this.captured).toString()
    this.captured = []
    this.onObject(text)
  }
}

const needles = new Map<string, ByteNeedle>()

/** One needle per key, shared by every scanner (no allocation per request). */
function needleFor(key: string): ByteNeedle {
  let needle = needles.get(key)
  if (needle === undefined) {
    needle = new ByteNeedle(`"${key}"`)
    needles.set(key, needle)
  }
  return needle
}
