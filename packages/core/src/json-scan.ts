/**
 * Finds `"<key>": { … }` in a JSON (or SSE-of-JSON) byte stream fed chunk by chunk, and hands each
 * captured object's text to `onObject`. O(1) memory: only the captured object (capped) is kept.
 * Used beside the response stream to read usage without buffering the body, and (`keysFound`, any value) to find
 * Gemini's end of stream.
 *
 * Only the key at most `maxDepth` levels deep counts (1: a key of a top-level object; an object and an array are
 * a level each): deeper down, the same key is content, such as tool-call arguments a model wrote. So the scanner
 * follows strings and nesting, and a string's bytes (`"say \"usage\": {"`) are never taken for JSON.
 */
import { ByteNeedle } from './bytes.js'

const BACKSLASH = 0x5c
const QUOTE = 0x22
const COLON = 0x3a
const OPEN = 0x7b
const CLOSE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const NEWLINE = 0x0a
/**
 * Bytes read one by one, in a string or between two structural bytes, before the next is looked for natively: a
 * call costs about as much as a few dozen bytes of the loop, so keys and short values are cheaper byte by byte, text
 * and arrays of numbers (embeddings) are not.
 */
const BYTEWISE = 32
/** The bytes whose next position in a chunk is looked for natively (`nextOf`): the structural ones, then a line end. */
const LOOKED_FOR = [QUOTE, OPEN, CLOSE, OPEN_BRACKET, CLOSE_BRACKET, NEWLINE]
const QUOTE_SLOT = 0
const STRUCTURAL_SLOTS = 5
const NEWLINE_SLOT = 5

enum State {
  Search = 0,
  /** Matched the key; expecting `:`. */
  Colon = 1,
  /** Matched `:`; expecting `{` (anything else, e.g. `null`, abandons the match). */
  Value = 2,
  Capture = 3,
}

/** How the stream carries its JSON, known from its first byte other than whitespace. */
enum Framing {
  Unknown = 0,
  /** A JSON document (a body, a Gemini stream sent as one array). */
  Json = 1,
  /** Server-sent events: one JSON value per data line (what the router checks), so each line starts outside any. */
  Sse = 2,
}

export class JsonKeyScanner {
  /** The quoted key searched for (`"usage"`). */
  readonly needle: ByteNeedle
  private readonly maxDepth: number
  private readonly maxBytes: number
  private readonly onObject: (json: string) => void
  private state: State = State.Search
  private framing: Framing = Framing.Unknown
  /** Bytes of the needle matched at the end of the previous chunk: a key string the chunk boundary cut. */
  private partial = 0
  /** Objects and arrays open around the next byte. */
  private depth = 0
  private inString = false
  /** Inside a string, the previous chunk ended with a backslash: this chunk's first byte is escaped. */
  private escaped = false
  /**
   * Per byte of LOOKED_FOR, its first position in the chunk at or after where it was last looked for (-1: none):
   * looked for again only once passed, so that a long line with many strings is searched once per byte.
   */
  private readonly next: number[] = [-1, -1, -1, -1, -1, -1]
  /** Chunks written so far, and which of them `next` is about. */
  private writes = 0
  private nextFor = -1
  /** The depth of the key whose object is captured: the object ends where the nesting is back to it. */
  private keyDepth = 0
  private captured: Buffer[] = []
  private capturedBytes = 0
  /**
   * How many times the key came where it counts (a key: its colon followed), whatever its value: for a caller that
   * asks whether the key came, not what it holds (Gemini's `"finishReason"`, a string).
   */
  keysFound = 0

  constructor(key: string, maxDepth: number, onObject: (json: string) => void, maxBytes = 16 * 1024) {
    this.needle = needleFor(key)
    this.maxDepth = maxDepth
    this.onObject = onObject
    this.maxBytes = maxBytes
  }

  /** Whether the bytes so far open a JSON document (`{` or `[` first); null while they hold nothing but whitespace. */
  get opensJson(): boolean | null {
    return this.framing === Framing.Unknown ? null : this.framing === Framing.Json
  }

  /**
   * The bytes so far are a whole JSON document's structure: it opened, and every object, array and string in it was
   * closed. The scan follows nesting and strings anyway, so this reads no byte of its own; it does not check literals,
   * numbers or commas (`{not json}` passes).
   */
  get jsonClosed(): boolean {
    return this.framing === Framing.Json && this.depth === 0 && !this.inString
  }

  /**
   * Scans the chunk from `from` on. A caller that skips bytes vouches that they are whole JSON values (whole lines of
   * them) holding no match: from `from` > 0 the scanner starts between values, outside any; a whole chunk skipped
   * (not written) must follow a line end, where SSE framing starts each line outside any value too (`lineToScan`).
   */
  write(chunk: Buffer, from = 0): void {
    const len = chunk.length
    if (this.framing === Framing.Unknown) this.framing = framingOf(chunk, from)
    this.writes++
    let pos = from
    if (from > 0) this.betweenValues()
    else if (this.partial > 0 && len > 0) pos = this.continueKey(chunk)
    const sse = this.framing === Framing.Sse
    while (pos < len) {
      switch (this.state) {
        case State.Search:
          pos = this.search(chunk, sse && this.partial === 0 ? this.lineToScan(chunk, pos) : pos)
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
  }

  private betweenValues(): void {
    this.state = State.Search
    this.partial = 0
    this.depth = 0
    this.inString = false
    this.escaped = false
    if (this.captured.length > 0) this.captured = []
  }

  /**
   * SSE: where the byte loop must start, since every line starts outside any value. Lines before the key's first
   * occurrence cannot report it, nor can a chunk without it, except its last line, which the next chunk may continue.
   */
  private lineToScan(chunk: Buffer, from: number): number {
    const at = this.needle.indexIn(chunk, from)
    const end = at === -1 ? chunk.length : at
    const lineStart = end > from ? chunk.lastIndexOf(NEWLINE, end - 1) + 1 : 0
    if (lineStart <= from) return from
    this.betweenValues()
    return lineStart
  }

  /** Follows strings and nesting up to the next string that is the key at a depth that counts. */
  private search(chunk: Buffer, from: number): number {
    const maxDepth = this.maxDepth
    const len = chunk.length
    let depth = this.depth
    let pos = this.inString ? this.skipString(chunk, from) : from
    // Where the bytes since the last structural one start.
    let run = pos
    while (pos < len) {
      const b = chunk[pos] as number
      if (b === QUOTE) {
        if (depth > 0 && depth <= maxDepth) {
          const end = this.keyEnd(chunk, pos)
          if (end !== -1) {
            this.depth = depth
            return end
          }
        }
        pos = run = this.skipString(chunk, pos + 1)
        continue
      }
      pos++
      if (b === OPEN || b === OPEN_BRACKET) depth++
      else if (b === CLOSE || b === CLOSE_BRACKET) {
        if (depth > 0) depth--
      } else if (pos - run > BYTEWISE) pos = this.nextStructural(chunk, pos)
      else continue
      run = pos
    }
    this.depth = depth
    return pos
  }

  /**
   * From inside a string: the offset just past its closing quote, or the chunk's end (still inside it). A raw line
   * end also ends it (JSON strings hold none): it ends bytes that were not JSON, such as an SSE comment with a quote.
   */
  private skipString(chunk: Buffer, from: number): number {
    const len = chunk.length
    let pos = from
    if (this.escaped) {
      this.escaped = false
      pos++
    }
    const bytewise = Math.min(len, pos + BYTEWISE)
    while (pos < bytewise) {
      const b = chunk[pos++] as number
      if (b === QUOTE || b === NEWLINE) {
        this.inString = false
        return pos
      }
      if (b === BACKSLASH) pos++
    }
    if (pos >= len) {
      this.inString = true
      this.escaped = pos > len
      return len
    }
    // A long string: its closing quote is one not escaped, i.e. after an even run of backslashes.
    let quote = this.nextOf(chunk, QUOTE_SLOT, pos)
    while (quote !== -1 && backslashesBefore(chunk, quote, pos) % 2 === 1) quote = this.nextOf(chunk, QUOTE_SLOT, quote + 1)
    const newline = this.nextOf(chunk, NEWLINE_SLOT, pos)
    if (newline !== -1 && (quote === -1 || newline < quote)) {
      this.inString = false
      return newline + 1
    }
    if (quote !== -1) {
      this.inString = false
      return quote + 1
    }
    this.inString = true
    this.escaped = backslashesBefore(chunk, len, pos) % 2 === 1
    return len
  }

  /** The first structural byte (a quote, brace or bracket) at or after `pos` in the chunk, or its end. */
  private nextStructural(chunk: Buffer, pos: number): number {
    let first = chunk.length
    for (let slot = 0; slot < STRUCTURAL_SLOTS; slot++) {
      const at = this.nextOf(chunk, slot, pos)
      if (at !== -1 && at < first) first = at
    }
    return first
  }

  /** The first position at or after `pos` in the chunk of the byte in LOOKED_FOR[slot], or -1. */
  private nextOf(chunk: Buffer, slot: number, pos: number): number {
    const next = this.next
    if (this.nextFor !== this.writes) {
      // A new chunk: nothing looked for in it yet.
      next.fill(-2)
      this.nextFor = this.writes
    }
    let at = next[slot] as number
    if (at !== -1 && at < pos) {
      at = chunk.indexOf(LOOKED_FOR[slot] as number, pos)
      next[slot] = at
    }
    return at
  }

  /**
   * Where the key starting at `at` ends (then `:` is expected), or the chunk's end when the string there starts as
   * the key and the chunk ends first (carried to the next chunk); -1 when it is another string.
   */
  private keyEnd(chunk: Buffer, at: number): number {
    const needle = this.needle
    const left = chunk.length - at
    if (left >= needle.length) {
      if (!needle.isAt(chunk, at)) return -1
      this.state = State.Colon
      return at + needle.length
    }
    // A proper prefix of the needle holds one quote, its first byte: the chunk ends with exactly `left` bytes of the
    // needle when the key starts here.
    if (needle.carriedPrefix(chunk) !== left) return -1
    this.partial = left
    this.inString = true
    return chunk.length
  }

  /** The key string the last chunk's end cut: where it ends in this chunk, else where to scan on (inside that string). */
  private continueKey(chunk: Buffer): number {
    const needle = this.needle
    const matched = this.partial
    this.partial = 0
    const end = needle.completeIn(chunk, matched)
    if (end !== -1) {
      this.inString = false
      this.state = State.Colon
      return end
    }
    // A chunk shorter than the rest of the key: still cut.
    if (needle.carriedPrefix(chunk, matched) === matched + chunk.length) {
      this.partial = matched + chunk.length
      return chunk.length
    }
    return 0
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
        this.keysFound++
        pos++
        continue
      }
      if (b !== OPEN) {
        this.state = State.Search
        return pos
      }
      this.state = State.Capture
      this.keyDepth = this.depth
      this.captured = []
      this.capturedBytes = 0
      return pos
    }
    return pos
  }

  private capture(chunk: Buffer, from: number): number {
    const keyDepth = this.keyDepth
    const len = chunk.length
    let depth = this.depth
    let pos = this.inString ? this.skipString(chunk, from) : from
    while (pos < len) {
      const b = chunk[pos++] as number
      if (b === QUOTE) pos = this.skipString(chunk, pos)
      else if (b === OPEN || b === OPEN_BRACKET) depth++
      else if ((b === CLOSE || b === CLOSE_BRACKET) && --depth === keyDepth) {
        this.depth = depth
        this.state = State.Search
        if (this.captured.length === 0) {
          // The whole object is in this chunk (the usual case): no copy, straight to text.
          if (pos - from <= this.maxBytes) this.onObject(chunk.toString('utf8', from, pos))
        } else if (this.keep(chunk.subarray(from, pos))) this.finish()
        return pos
      }
    }
    this.depth = depth
    this.keep(chunk.subarray(from, pos))
    return pos
  }

  /**
   * Holds part of an object that spans chunks; false when it grew past the cap (the match is given up, and the
   * search goes on inside it).
   */
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

/** JSON starts with `{` or `[`; an SSE stream with a field name (`data:`, `event:`) or a comment. */
function framingOf(chunk: Buffer, from: number): Framing {
  // A UTF-8 byte order mark before it says nothing.
  const start = chunk[from] === 0xef && chunk[from + 1] === 0xbb && chunk[from + 2] === 0xbf ? from + 3 : from
  for (let pos = start; pos < chunk.length; pos++) {
    const b = chunk[pos] as number
    if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09) continue
    return b === OPEN || b === OPEN_BRACKET ? Framing.Json : Framing.Sse
  }
  return Framing.Unknown
}

/** How many backslashes end `chunk` before `end`, counting back no further than `from`. */
function backslashesBefore(chunk: Buffer, end: number, from: number): number {
  let at = end
  while (at > from && chunk[at - 1] === BACKSLASH) at--
  return end - at
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
