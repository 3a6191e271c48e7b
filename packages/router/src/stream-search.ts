// The searches the stream scanner runs over an upstream's bytes as they pass, chunk by chunk: needles followed
// across chunk boundaries (terminators, finish markers), and JSON keys found only at their depth (Gemini's).
import { type ByteNeedle, JsonKeyScanner, keptTail } from '@llmproxy/core'

const NEWLINE = 0x0a

/** What every search for one list of needles shares: worked out once per list, not per stream. */
interface NeedleTables {
  /**
   * The needles grouped by the byte they are looked for by and its offset (`"finish_reason":"` and
   * `"finish_reason": "`; the Responses API's event lines): one search over that byte's hits serves a group.
   */
  readonly groups: readonly (readonly ByteNeedle[])[]
  /** Per byte value, 1 when a chunk ending with it may carry a needle's start (one before the needle's last byte). */
  readonly mayCarry: Uint8Array
}

const tablesByNeedles = new WeakMap<readonly ByteNeedle[], NeedleTables>()

function tablesOf(needles: readonly ByteNeedle[]): NeedleTables {
  let tables = tablesByNeedles.get(needles)
  if (tables !== undefined) return tables
  const mayCarry = new Uint8Array(256)
  for (const needle of needles) for (let i = 0; i < needle.length - 1; i++) mayCarry[needle.bytes[i] as number] = 1
  const groups: ByteNeedle[][] = []
  for (const needle of needles) {
    const group = groups.find((shared) => needle.sharesProbe(shared[0] as ByteNeedle))
    if (group === undefined) groups.push([needle])
    else group.push(needle)
  }
  tables = { groups, mayCarry }
  tablesByNeedles.set(needles, tables)
  return tables
}

/** Needles searched for in a stream, each followed across chunk boundaries. */
export class NeedleSearch {
  private readonly needles: readonly ByteNeedle[]
  /** Per needle, the bytes of it matched at the end of the chunks so far. */
  private readonly partials: number[]
  private readonly groups: readonly (readonly ByteNeedle[])[]
  private readonly mayCarry: Uint8Array

  /** The needle `foundIn` (or `indexIn`) found last. */
  found: ByteNeedle | null = null
  /** How many needles have a start carried from the chunks so far (a partial above 0). */
  private carrying = 0

  /** `needles`: a list kept for the process's life (an endpoint's), whose tables every stream shares. */
  constructor(needles: readonly ByteNeedle[]) {
    this.needles = needles
    this.partials = new Array<number>(needles.length).fill(0)
    const tables = tablesOf(needles)
    this.groups = tables.groups
    this.mayCarry = tables.mayCarry
  }

  /**
   * Whether this chunk holds one of the needles, or finishes one begun in the chunks before it; `accept` (given the
   * offset just past the needle) may refuse a match, and the search goes on. `noneIn`: the chunk is known to hold
   * no whole needle (searched already): only the needles cut by its edges are looked at.
   */
  foundIn(chunk: Buffer, accept?: (chunk: Buffer, after: number) => boolean, noneIn = false): boolean {
    const needles = this.needles
    const partials = this.partials
    for (let i = 0; this.carrying > 0 && i < needles.length; i++) {
      const carried = partials[i] as number
      if (carried > 0) {
        const needle = needles[i] as ByteNeedle
        const after = needle.completeIn(chunk, carried)
        if (after !== -1 && (accept === undefined || accept(chunk, after))) {
          this.found = needle
          return true
        }
      }
    }
    if (!noneIn && this.indexIn(chunk, accept) !== -1) return true
    // Usually nothing is carried and the chunk ends with a byte no needle starts with: no needle is asked.
    if (this.carrying === 0 && (chunk.length === 0 || this.mayCarry[chunk[chunk.length - 1] as number] === 0)) return false
    this.carrying = 0
    for (let i = 0; i < needles.length; i++) {
      const carried = (needles[i] as ByteNeedle).carriedPrefix(chunk, partials[i])
      partials[i] = carried
      if (carried > 0) this.carrying++
    }
    return false
  }

  /** Where the first of the needles that `accept` takes starts in this chunk alone (-1: none). */
  indexIn(chunk: Buffer, accept?: (chunk: Buffer, after: number) => boolean): number {
    let first = -1
    for (const group of this.groups) {
      const at = this.sharedHit(group, chunk, first === -1 ? chunk.length : first, accept)
      if (at !== -1) first = at
    }
    return first
  }

  /** One pass over a group's probe byte: where the first needle of the group that `accept` takes starts before `end` (-1: none). */
  private sharedHit(
    needles: readonly ByteNeedle[],
    chunk: Buffer,
    end: number,
    accept?: (chunk: Buffer, after: number) => boolean,
  ): number {
    const first = needles[0] as ByteNeedle
    for (
      let hit = chunk.indexOf(first.probe, first.probeAt);
      hit !== -1 && hit - first.probeAt < end;
      hit = chunk.indexOf(first.probe, hit + 1)
    ) {
      const start = hit - first.probeAt
      for (const needle of needles) {
        if (needle.isAt(chunk, start) && (accept === undefined || accept(chunk, start + needle.length))) {
          this.found = needle
          return start
        }
      }
    }
    return -1
  }
}

/**
 * JSON keys searched for in a stream of SSE lines (each line starts outside any JSON value), found only at most
 * `maxDepth` levels deep (JsonKeyScanner): deeper, the same key is content. The key's needle is the fast filter: the
 * scanners walk only the lines it is on. A chunk of whole lines without it is not written to them; a line a chunk
 * leaves unfinished waits (the chunk is kept, not walked) and is walked only if its rest holds the needle.
 */
export class KeySearch {
  private readonly scanners: readonly JsonKeyScanner[]
  /**
   * The end of a chunk, from `waitingFrom` on, whose last line is unfinished and not written yet (the scanners are at
   * that line's start): the line, with the line end before it when there is one (`waitingFrom` 1: written after it,
   * the scanners start the line afresh, as they would in the chunk).
   */
  private waiting: Buffer | null = null
  private waitingFrom = 0
  /** The scanners were written the chunks so far to their end, inside a line. */
  private midLine = false

  /** `keys`: the needles of the quoted keys (`"finishReason"`). */
  constructor(keys: readonly ByteNeedle[], maxDepth: number) {
    // A key's value is not kept (0 bytes): that it came is all that counts.
    this.scanners = keys.map((key) => new JsonKeyScanner(key.bytes.toString('utf8', 1, key.length - 1), maxDepth, ignore, 0))
  }

  /** Whether this chunk (or the line it finishes) holds one of the keys where it counts, or one came before it. */
  foundIn(chunk: Buffer): boolean {
    let from = 0
    const waiting = this.waiting
    if (waiting !== null) {
      this.waiting = null
      const eol = chunk.indexOf(NEWLINE)
      if (eol === -1 || this.hasNeedle(chunk, 0, eol) || this.carriesNeedle(waiting)) {
        // The line may hold a key after all (or goes on past this chunk): its start is walked now.
        this.write(waiting, this.waitingFrom)
        this.midLine = true
      } else from = eol + 1
    }
    if (this.midLine || this.hasNeedle(chunk, from, chunk.length)) this.write(chunk, from)
    else if (from < chunk.length && chunk[chunk.length - 1] !== NEWLINE) {
      const lineStart = Math.max(from, chunk.lastIndexOf(NEWLINE) + 1)
      // Only that line is kept (its own bytes): the rest of the read went by.
      this.waiting = keptTail(chunk, lineStart > 0 ? lineStart - 1 : 0)
      this.waitingFrom = lineStart > 0 ? 1 : 0
    }
    return this.found()
  }

  /** The scanners read the chunk from `from` on (a line's start, or where the last chunk written ended). */
  private write(chunk: Buffer, from: number): void {
    for (const scanner of this.scanners) scanner.write(chunk, from)
    this.midLine = chunk[chunk.length - 1] !== NEWLINE
  }

  private found(): boolean {
    for (const scanner of this.scanners) if (scanner.keysFound > 0) return true
    return false
  }

  private hasNeedle(chunk: Buffer, from: number, to: number): boolean {
    for (const scanner of this.scanners) if (scanner.needle.indexIn(chunk, from, to) !== -1) return true
    return false
  }

  /** The chunk ends with the start of a key's needle: the next chunk may finish it. */
  private carriesNeedle(chunk: Buffer): boolean {
    for (const scanner of this.scanners) if (scanner.needle.carriedPrefix(chunk) > 0) return true
    return false
  }
}

function ignore(): void {}
