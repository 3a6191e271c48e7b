/**
 * Bytes from most to least frequent in JSON text (its punctuation and digits, then English letters): a
 * needle's probe is its byte found last here (uppercase and anything else count as rarer still).
 */
const FREQUENT = '" :,{}[]0123456789_etaoinsrhldcumfpgwybvkxjqz'

function rarity(byte: number): number {
  const at = FREQUENT.indexOf(String.fromCharCode(byte))
  return at === -1 ? FREQUENT.length : at
}

/**
 * A byte string searched for in every chunk of a stream. `Buffer#indexOf` with a Buffer needle costs
 * about 0.25 µs per call whatever the chunk, more than the rest of the per-chunk work; with a single
 * byte it is a fast path (~15 ns). So the needle's rarest byte is looked for and the rest compared
 * around each hit: a few hits per chunk at most.
 */
export class ByteNeedle {
  readonly bytes: Buffer
  readonly length: number
  /** The byte looked for, and its offset in the needle (needles sharing both can share one search: `sharesProbe`). */
  readonly probe: number
  readonly probeAt: number
  /** Per byte value, 1 when the needle holds it (a table lookup instead of a call per chunk in `carriedPrefix`). */
  private readonly holds = new Uint8Array(256)

  /**
   * `probe`: the byte of the needle to look for, when the caller knows the text searched better than the rarity
   * table (an OpenAI chunk has a dozen `c`s before its `"delta":{"content":"`, and three `{`).
   */
  constructor(text: string, probe?: string) {
    this.bytes = Buffer.from(text)
    this.length = this.bytes.length
    if (this.length === 0) throw new TypeError('ByteNeedle: empty needle')
    let probeAt = probe === undefined ? 0 : text.lastIndexOf(probe)
    if (probeAt === -1 || (probe !== undefined && probe.length !== 1))
      throw new TypeError(`ByteNeedle: probe ${probe} is not one byte of ${text}`)
    for (let i = 1; probe === undefined && i < this.length; i++) {
      if (rarity(this.bytes[i] as number) > rarity(this.bytes[probeAt] as number)) probeAt = i
    }
    this.probeAt = probeAt
    this.probe = this.bytes[probeAt] as number
    for (const byte of this.bytes) this.holds[byte] = 1
  }

  /** Whether `other` is looked for by the same byte at the same offset: a hit of one is a candidate for both. */
  sharesProbe(other: ByteNeedle): boolean {
    return this.probe === other.probe && this.probeAt === other.probeAt
  }

  /** The first index of the needle in `chunk` at or after `from` (and ending by `to`), or -1. */
  indexIn(chunk: Buffer, from = 0, to = chunk.length): number {
    const probeAt = this.probeAt
    const last = to - this.length
    let hit = chunk.indexOf(this.probe, from + probeAt)
    while (hit !== -1) {
      const start = hit - probeAt
      if (start > last) return -1
      if (this.isAt(chunk, start)) return start
      hit = chunk.indexOf(this.probe, hit + 1)
    }
    return -1
  }

  /**
   * Where a match begun in earlier chunks (their last `matched` bytes are the needle's first) ends in this chunk:
   * the offset just past the needle, or -1 when this chunk does not complete it. A needle whose start recurs in
   * it (`event: message_stop` after `eve`) may complete from a shorter carried match.
   */
  completeIn(chunk: Buffer, matched: number): number {
    for (let m = matched; m > 0; m = this.prefixEnding(m, m - 1)) {
      const rest = this.length - m
      // Too short a chunk to complete it (a shorter carried match needs more still): carriedPrefix follows it.
      if (rest > chunk.length) return -1
      let i = 0
      while (i < rest && chunk[i] === this.bytes[m + i]) i++
      if (i === rest) return rest
    }
    return -1
  }

  /**
   * The longest start of the needle, shorter than the needle, that the stream ends with after this chunk (the
   * earlier chunks ended with its first `matched` bytes): a match the next chunk may complete.
   */
  carriedPrefix(chunk: Buffer, matched = 0): number {
    const length = chunk.length
    // Usually the chunk's last byte (a newline) is in no needle: nothing to carry.
    if (length === 0 || this.holds[chunk[length - 1] as number] === 0) return 0
    const total = matched + length
    const at = (v: number) => (v < matched ? this.bytes[v] : chunk[v - matched])
    for (let n = Math.min(this.length - 1, total); n > 0; n--) {
      let i = 0
      while (i < n && at(total - n + i) === this.bytes[i]) i++
      if (i === n) return n
    }
    return 0
  }

  /** The longest start of the needle, at most `most` bytes, that its first `m` bytes end with. */
  private prefixEnding(m: number, most: number): number {
    for (let p = most; p > 0; p--) {
      let i = 0
      while (i < p && this.bytes[i] === this.bytes[m - p + i]) i++
      if (i === p) return p
    }
    return 0
  }

  /**
   * Whether the needle is at `at` in `chunk`. Its last byte is compared first: a near miss such as
   * `"finish_reason":null` for `"finish_reason":"` (one per OpenAI event) differs only there.
   */
  isAt(chunk: Buffer, at: number): boolean {
    const last = this.length - 1
    if (at < 0 || at + last >= chunk.length || chunk[at + last] !== this.bytes[last]) return false
    for (let i = 0; i < last; i++) if (chunk[at + i] !== this.bytes[i]) return false
    return true
  }
}

/**
 * What a stream keeps of a chunk until the next one comes (the line or event the chunk ends inside): `bytes` from
 * `from` on, copied when that is less than half of the memory `bytes` views. A view keeps all of that memory alive (a
 * socket read of up to 64 KB, or a slab of Buffer's shared pool) for the few hundred bytes needed, a second or more
 * in a slow stream; the copy is made only then, never for a chunk of whole events.
 */
export function keptTail(bytes: Buffer, from = 0): Buffer {
  const length = bytes.length - from
  if (length * 2 >= bytes.buffer.byteLength) return from === 0 ? bytes : bytes.subarray(from)
  // Outside the shared pool (Buffer.from and Buffer.copyBytesFrom copy a few bytes into one of its slabs).
  const own = Buffer.allocUnsafeSlow(length)
  bytes.copy(own, 0, from)
  return own
}

/**
 * The same for text: `kept` (cut from `source`, or built with slices of it) as a string of its own when it is less
 * than half of `source`. V8 keeps a slice of 13 characters or more as a view of the whole string it was cut from, and
 * a concatenation as its parts.
 */
export function keptText(kept: string, source: string): string {
  return kept.length * 2 >= source.length ? kept : flatText(kept)
}

/**
 * `text` as a new string of its own, in one piece, whatever it is made of: for text kept for a stream's life. V8 keeps
 * a concatenation (a template literal's too) as a tree of its parts, a 32-byte node for each join, and a slice as a
 * view of the string it was cut from. Written out as UTF-16 code units and read back: any text (lone surrogates too),
 * one byte a character when it can be. Flattening in place (`Number(text)`) is cheaper but not reliable here: the
 * optimizing compiler drops it for a value it knows to be a string, its result unused.
 */
export function flatText(text: string): string {
  return Buffer.from(text, 'utf16le').toString('utf16le')
}
