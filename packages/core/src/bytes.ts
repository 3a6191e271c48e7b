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
  private readonly probe: number
  private readonly probeAt: number

  constructor(text: string) {
    this.bytes = Buffer.from(text)
    this.length = this.bytes.length
    if (this.length === 0) throw new TypeError('ByteNeedle: empty needle')
    let probeAt = 0
    for (let i = 1; i < this.length; i++) {
      if (rarity(this.bytes[i] as number) > rarity(this.bytes[probeAt] as number)) probeAt = i
    }
    this.probeAt = probeAt
    this.probe = this.bytes[probeAt] as number
  }

  /** The first index of the needle in `chunk` at or after `from`, or -1. */
  indexIn(chunk: Buffer, from = 0): number {
    const bytes = this.bytes
    const length = this.length
    const probeAt = this.probeAt
    const last = chunk.length - length
    let hit = chunk.indexOf(this.probe, from + probeAt)
    while (hit !== -1) {
      const start = hit - probeAt
      if (start > last) return -1
      let i = 0
      while (i < length && chunk[start + i] === bytes[i]) i++
      if (i === length) return start
      hit = chunk.indexOf(this.probe, hit + 1)
    }
    return -1
  }

  /**
   * A match begun at the end of the previous chunk (`matched` bytes of the needle), continued at the start of
   * this one: the needle's bytes matched so far (`length`: found; less: this chunk was shorter than the rest and
   * matched all through, so the match goes on), or 0 when this chunk breaks it.
   */
  continueIn(chunk: Buffer, matched: number): number {
    const n = Math.min(this.length - matched, chunk.length)
    for (let i = 0; i < n; i++) if (chunk[i] !== this.bytes[matched + i]) return 0
    return matched + n
  }

  /** The longest start of the needle (shorter than the needle) that `chunk` ends with: a match the next chunk may finish. */
  trailingPrefix(chunk: Buffer): number {
    const length = chunk.length
    for (let n = Math.min(this.length - 1, length); n > 0; n--) {
      let i = 0
      while (i < n && chunk[length - n + i] === this.bytes[i]) i++
      if (i === n) return n
    }
    return 0
  }

  /** Whether the needle is at `at` in `chunk`. */
  isAt(chunk: Buffer, at: number): boolean {
    if (at < 0 || at + this.length > chunk.length) return false
    for (let i = 0; i < this.length; i++) if (chunk[at + i] !== this.bytes[i]) return false
    return true
  }
}
