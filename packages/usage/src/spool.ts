import * as fs from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { open, rm } from 'node:fs/promises'
import * as path from 'node:path'
import { makeDirectory } from '@llmproxy/core'
import type { FastifyBaseLogger } from 'fastify'
import { CursorFile, readCursor } from './cursor.js'
import { lockSpoolDir, unlockSpoolDir } from './lock.js'
import type { FsyncPolicy } from './options.js'

const SEGMENT_NAME = /^(\d{16})\.jsonl$/
const NEWLINE = 0x0a
const READ_CHUNK = 256 * 1024
const SCAN_CHUNK = 1024 * 1024
/** Bound of the undelivered lines kept in memory (the oldest segments' lines are read back from disk beyond it). */
const MEMORY_BYTES = 8 * 1024 * 1024

export interface SpoolOptions {
  dir: string
  maxBytes: number
  segmentBytes: number
  fsync: FsyncPolicy
}

interface Segment {
  seq: number
  /** Bytes in the file (for the active segment: bytes of complete appends). */
  size: number
  /** Complete lines not yet consumed (for the oldest segment: after the cursor). */
  records: number
}

/**
 * The lines of one segment that this process appended and has not delivered yet, from byte `start` on: the
 * delivery takes them from here instead of reading them back from disk (and parsing them to check them).
 */
interface MemorySegment {
  seq: number
  /** Byte offset in the segment of `lines[0]`. */
  start: number
  lines: string[]
  /** Bytes of each line in the file (with its newline). */
  lengths: number[]
  bytes: number
}

/** Records read from the cursor, not yet acknowledged. Lines are the raw JSON texts, as spooled. */
export interface SpoolBatch {
  readonly seq: number
  readonly start: number
  readonly end: number
  readonly lines: string[]
  /** Complete lines consumed, valid or not (corrupt lines are skipped with a warning). */
  readonly consumed: number
  readonly generation: number
}

function segmentName(seq: number): string {
  return `${String(seq).padStart(16, '0')}.jsonl`
}

function isRecordLine(text: string): boolean {
  try {
    const value: unknown = JSON.parse(text)
    return value !== null && typeof value === 'object' && typeof (value as { id?: unknown }).id === 'string'
  } catch {
    return false
  }
}

/**
 * Append-only spool of JSON lines in segment files `<seq>.jsonl`, with a delivery cursor
 * (segment + byte offset) in `cursor.json` (see CursorFile).
 *
 * Appends are synchronous `write(2)` calls on an `O_APPEND` fd: when `append` returns, the record is
 * in the OS page cache, so a process crash (even `kill -9`) loses nothing; the fsync policy decides
 * what a power failure can lose. Segments before the cursor are deleted. On open, the spool is
 * replayed from the cursor, and writes go to a new segment, so a torn last line of a previous run
 * (crash mid-write) is the tail of a closed segment: the reader skips it.
 */
export class Spool {
  private readonly dir: string
  private readonly maxBytes: number
  private readonly segmentBytes: number
  private readonly fsyncPolicy: FsyncPolicy
  private readonly log: FastifyBaseLogger
  /** Undelivered (or partly delivered) segments, oldest first; the active one is last when `fd !== -1`. */
  private readonly segments: Segment[] = []
  private cursorSeq = 0
  private cursorOffset = 0
  private nextSeq = 1
  private fd = -1
  private dirty = false
  /** fd with an fdatasync in flight, and whether it must be closed when that completes. */
  private syncingFd = -1
  private closeAfterSync = false
  private reader: { seq: number; handle: FileHandle } | null = null
  /** Bumped when segments are dropped, so that acknowledgements of batches read before are ignored. */
  private generation = 0
  private closed = false
  /** Undelivered lines appended by this process, oldest segment first (see MemorySegment). */
  private memory: MemorySegment[] = []
  private memoryBytes = 0
  private readonly cursor: CursorFile
  /** The directory fsyncs of new segments on the thread pool (`interval`), chained; close waits for them. */
  private dirSync: Promise<void> | null = null
  /** Segment deletions on the thread pool, one after the other (deleteInBackground). */
  private deletions: Promise<void> = Promise.resolve()
  /** Bytes of the segment files on disk. */
  bytes = 0
  /** Complete records spooled and not yet acknowledged (or dropped). */
  pending = 0
  /** Records acknowledged or dropped since open (grows monotonically; used by flush). */
  released = 0

  constructor(options: SpoolOptions, log: FastifyBaseLogger) {
    this.dir = path.resolve(options.dir)
    this.maxBytes = options.maxBytes
    this.segmentBytes = options.segmentBytes
    this.fsyncPolicy = options.fsync
    this.log = log
    this.load()
    this.cursor = new CursorFile(this.dir, { seq: this.cursorSeq, offset: this.cursorOffset }, this.fsyncPolicy, this.log)
  }

  /**
   * Whether `length` more bytes stay within maxBytes. A full spool whose one segment, the one being written, is
   * delivered to its end lets go of it (the next append starts another): it would otherwise stay full for good, since
   * delivery frees only closed segments and a record that does not fit never reaches the rotation.
   */
  fits(length: number): boolean {
    if (this.bytes + length <= this.maxBytes) return true
    const active = this.segments[0]
    if (this.fd === -1 || this.segments.length !== 1 || active === undefined || this.cursorOffset < active.size) return false
    this.closeWriter(false)
    this.skipFinished()
    return this.bytes + length <= this.maxBytes
  }

  /**
   * Appends lines of JSON (`lengths`: the bytes of each in the file, newline included), one `write(2)` per
   * segment they go to, rotating at `segmentBytes`. Returns how many were appended: all, unless a write failed
   * (`error`); a partly written line is truncated away (or, failing that, becomes the torn tail of a closed segment,
   * which the reader skips). The lines are also kept in memory until delivered, so that the delivery does not read
   * them back.
   */
  append(lines: readonly string[], lengths: readonly number[]): { appended: number; error: unknown } {
    if (this.closed) return { appended: 0, error: new Error('usage spool is closed') }
    let from = 0
    while (from < lines.length) {
      let active: Segment
      if (this.fd !== -1) active = this.segments[this.segments.length - 1] as Segment
      else {
        try {
          active = this.openWriter()
        } catch (error) {
          // No file to write to (out of file descriptors, the directory gone): these records are not spooled; the
          // next append tries again.
          return { appended: from, error }
        }
      }
      // The lines that go to this segment: at least one when it is empty.
      let to = from
      let bytes = 0
      while (to < lines.length) {
        const length = lengths[to] as number
        if (active.size + bytes > 0 && active.size + bytes + length > this.segmentBytes) break
        bytes += length
        to++
      }
      if (to === from) {
        this.closeWriter(false)
        continue
      }
      const chunk = Buffer.allocUnsafe(bytes)
      let at = 0
      for (let i = from; i < to; i++) {
        at += chunk.write(lines[i] as string, at)
        chunk[at++] = NEWLINE
      }
      let written = 0
      try {
        while (written < bytes) written += fs.writeSync(this.fd, chunk, written, bytes - written)
      } catch (error) {
        let whole = from
        let end = 0
        while (whole < to && end + (lengths[whole] as number) <= written) end += lengths[whole++] as number
        this.appended(active, lines, lengths, from, whole, end)
        // The segment stays the active one (a new one per failed append would leave an empty file per event-loop
        // turn while the disk is full). A partly written line is cut off; if that fails too, it is the torn tail of
        // a closed segment.
        if (written > end && !this.cutTornLine(active)) {
          active.size += written - end
          this.bytes += written - end
          this.forget(active.seq)
          this.closeWriter()
        }
        return { appended: whole, error }
      }
      this.appended(active, lines, lengths, from, to, bytes)
      from = to
    }
    return { appended: lines.length, error: null }
  }

  /** Accounts for lines [from, to) written to the active segment (`bytes` in all). */
  private appended(active: Segment, lines: readonly string[], lengths: readonly number[], from: number, to: number, bytes: number): void {
    active.size += bytes
    active.records += to - from
    this.bytes += bytes
    this.pending += to - from
    const memory = this.memory[this.memory.length - 1]
    if (memory !== undefined && memory.seq === active.seq) {
      for (let i = from; i < to; i++) {
        memory.lines.push(lines[i] as string)
        memory.lengths.push(lengths[i] as number)
      }
      memory.bytes += bytes
      this.memoryBytes += bytes
      while (this.memoryBytes > MEMORY_BYTES && this.memory.length > 0) this.forget((this.memory[0] as MemorySegment).seq)
    }
    if (this.fsyncPolicy === 'always') {
      try {
        fs.fdatasyncSync(this.fd)
      } catch (err) {
        this.log.error({ err }, 'usage spool: fdatasync failed')
      }
    } else {
      this.dirty = true
    }
  }

  /** Truncates the active segment to its complete appends after a failed write. False when that fails too. */
  private cutTornLine(active: Segment): boolean {
    try {
      fs.ftruncateSync(this.fd, active.size)
      return true
    } catch (err) {
      this.log.error({ err, segment: active.seq }, 'usage spool: could not truncate a partly written line')
      return false
    }
  }

  /** fdatasync of the active segment if it has unsynced appends, and of the cursor if it moved (the `interval` policy's timer). */
  syncIfDirty(): void {
    this.cursor.sync()
    if (!this.dirty || this.fd === -1 || this.syncingFd !== -1) return
    this.dirty = false
    this.syncInBackground(this.fd)
  }

  /** fdatasync on the thread pool (one at a time); the fd is closed afterwards when closeAfterSync says so. */
  private syncInBackground(fd: number): void {
    this.syncingFd = fd
    fs.fdatasync(fd, (err) => {
      this.syncingFd = -1
      if (err) this.log.error({ err }, 'usage spool: fdatasync failed')
      if (this.closeAfterSync) {
        this.closeAfterSync = false
        this.closeFd(fd)
      }
    })
  }

  /**
   * Deletes the oldest segment with its undelivered records (the `drop-oldest` policy).
   * Returns the number of records dropped, or -1 when there is nothing to drop.
   */
  dropOldest(): number {
    const oldest = this.segments[0]
    if (oldest === undefined) return -1
    if (this.fd !== -1 && this.segments.length === 1) this.closeWriter()
    this.segments.shift()
    this.forget(oldest.seq)
    this.deleteInBackground(oldest.seq)
    this.bytes -= oldest.size
    this.pending -= oldest.records
    this.released += oldest.records
    this.generation++
    this.cursorSeq = this.segments[0]?.seq ?? this.nextSeq
    this.cursorOffset = 0
    this.persistCursor()
    return oldest.records
  }

  /** Reads up to `maxRecords` records from the cursor (one segment at most). Null when there is nothing to read. */
  async read(maxRecords: number): Promise<SpoolBatch | null> {
    if (this.closed) return null
    this.skipFinished()
    const segment = this.segments[0]
    if (segment === undefined || this.cursorOffset >= segment.size) return null
    const generation = this.generation
    const seq = segment.seq
    const start = this.cursorOffset
    const memory = this.memory[0]
    if (memory !== undefined && memory.seq === seq && memory.start === start) {
      const to = Math.min(maxRecords, memory.lines.length)
      let end = start
      for (let i = 0; i < to; i++) end += memory.lengths[i] as number
      const lines = memory.lines.slice(0, to)
      return { seq, start, end, lines, consumed: lines.length, generation }
    }
    const limit = segment.size
    const handle = await this.readerFor(seq)
    const lines: string[] = []
    let consumed = 0
    let pos = start
    let chunkSize = READ_CHUNK
    while (lines.length < maxRecords && pos < limit) {
      const want = Math.min(chunkSize, limit - pos)
      const buf = Buffer.allocUnsafe(want)
      const { bytesRead } = await handle.read(buf, 0, want, pos)
      if (generation !== this.generation) return null
      let from = 0
      while (lines.length < maxRecords) {
        const nl = buf.indexOf(NEWLINE, from)
        if (nl === -1 || nl >= bytesRead) break
        const text = buf.toString('utf8', from, nl)
        consumed++
        if (isRecordLine(text)) lines.push(text)
        else this.log.warn({ segment: seq, offset: pos + from }, 'usage spool: skipping a corrupt line')
        from = nl + 1
      }
      if (from > 0) {
        pos += from
        continue
      }
      if (bytesRead < want || pos + bytesRead >= limit) {
        // No newline before the end of a closed segment: the torn last line of a crash mid-write.
        this.log.warn({ segment: seq, offset: pos, bytes: limit - pos }, 'usage spool: skipping a torn last line')
        pos = limit
        break
      }
      chunkSize *= 2
    }
    return { seq, start, end: pos, lines, consumed, generation }
  }

  /** Whether the batch is still the next to deliver (not made stale by a drop, whose records are counted dropped). */
  holds(batch: SpoolBatch): boolean {
    return batch.generation === this.generation && batch.seq === this.cursorSeq && batch.start === this.cursorOffset
  }

  /**
   * Marks a batch as delivered: moves the cursor past it and persists the cursor; fully delivered
   * segments are deleted. Returns false (and changes nothing) for a batch made stale by a drop.
   */
  ack(batch: SpoolBatch): boolean {
    if (!this.holds(batch)) return false
    const segment = this.segments[0]
    if (segment === undefined) return false
    this.cursorOffset = batch.end
    segment.records -= batch.consumed
    this.pending -= batch.consumed
    this.released += batch.consumed
    const memory = this.memory[0]
    if (memory !== undefined && memory.seq === batch.seq && memory.start === batch.start) {
      const bytes = batch.end - batch.start
      memory.start = batch.end
      memory.bytes -= bytes
      this.memoryBytes -= bytes
      // Let go of the delivered lines now: kept until a later batch, they outlived young collections and went to the
      // old generation (~0.3 KB promoted per record).
      memory.lines.splice(0, batch.consumed)
      memory.lengths.splice(0, batch.consumed)
    }
    this.skipFinished()
    this.persistCursor()
    return true
  }

  /** Syncs and closes the files. The spool keeps its data for the next open. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.memory = []
    this.memoryBytes = 0
    if (this.fd !== -1) this.closeWriter()
    await this.dirSync
    await this.deletions
    await this.cursor.close()
    unlockSpoolDir(this.dir)
    if (this.reader !== null) {
      const { handle } = this.reader
      this.reader = null
      await handle.close()
    }
  }

  private load(): void {
    makeDirectory(this.dir)
    lockSpoolDir(this.dir)
    const seqs: number[] = []
    for (const name of fs.readdirSync(this.dir)) {
      const match = SEGMENT_NAME.exec(name)
      if (match !== null) seqs.push(Number(match[1]))
    }
    seqs.sort((a, b) => a - b)
    const cursor = readCursor(this.dir, this.log)
    for (const seq of seqs) {
      if (cursor !== null && seq < cursor.seq) {
        this.unlinkSegment(seq)
        continue
      }
      const file = path.join(this.dir, segmentName(seq))
      const size = fs.statSync(file).size
      const from = cursor !== null && seq === cursor.seq ? Math.min(cursor.offset, size) : 0
      const records = countLines(file, from, size)
      if (this.segments.length === 0) this.cursorOffset = from
      this.segments.push({ seq, size, records })
      this.bytes += size
      this.pending += records
    }
    const last = seqs[seqs.length - 1] ?? 0
    this.nextSeq = Math.max(last, cursor?.seq ?? 0) + 1
    this.cursorSeq = this.segments[0]?.seq ?? this.nextSeq
  }

  private persistCursor(): void {
    this.cursor.write({ seq: this.cursorSeq, offset: this.cursorOffset })
  }

  /** Deletes closed segments the cursor has passed and moves the cursor to the next one. */
  private skipFinished(): void {
    for (;;) {
      const oldest = this.segments[0]
      if (oldest === undefined || this.cursorOffset < oldest.size) return
      if (this.fd !== -1 && this.segments.length === 1) return
      this.segments.shift()
      this.forget(oldest.seq)
      this.deleteInBackground(oldest.seq)
      this.bytes -= oldest.size
      this.cursorSeq = this.segments[0]?.seq ?? this.nextSeq
      this.cursorOffset = 0
    }
  }

  private openWriter(): Segment {
    const seq = this.nextSeq
    this.fd = fs.openSync(path.join(this.dir, segmentName(seq)), 'a')
    this.nextSeq++
    if (this.fsyncPolicy !== 'never') this.syncDir()
    const segment: Segment = { seq, size: 0, records: 0 }
    this.segments.push(segment)
    this.memory.push({ seq, start: 0, lines: [], lengths: [], bytes: 0 })
    if (this.segments.length === 1) {
      this.cursorSeq = seq
      this.cursorOffset = 0
    }
    return segment
  }

  /**
   * Closes the active segment, its appends flushed to disk first (unless `never`): at once when `wait`, else
   * (a rotation) on the thread pool, so that the request path does not wait for the disk.
   */
  private closeWriter(wait = true): void {
    const fd = this.fd
    this.fd = -1
    const dirty = this.dirty && this.fsyncPolicy !== 'never'
    this.dirty = false
    if (dirty && !wait && this.syncingFd === -1) {
      this.closeAfterSync = true
      this.syncInBackground(fd)
      return
    }
    if (dirty) {
      try {
        fs.fdatasyncSync(fd)
      } catch (err) {
        this.log.error({ err }, 'usage spool: fdatasync failed')
      }
    }
    if (this.syncingFd === fd) this.closeAfterSync = true
    else this.closeFd(fd)
  }

  /** Stops keeping a segment's lines in memory (what is left of it is read from disk). */
  private forget(seq: number): void {
    const at = this.memory.findIndex((m) => m.seq === seq)
    if (at === -1) return
    this.memoryBytes -= (this.memory[at] as MemorySegment).bytes
    this.memory.splice(at, 1)
  }

  private closeFd(fd: number): void {
    try {
      fs.closeSync(fd)
    } catch (err) {
      this.log.error({ err }, 'usage spool: close failed')
    }
  }

  /**
   * Makes a new segment's directory entry durable: at once under `always`; under `interval`, on the thread pool
   * (a directory fsync commits the filesystem's journal, ~5 ms here, which the event loop would otherwise wait for).
   */
  private syncDir(): void {
    if (this.fsyncPolicy === 'interval') {
      // One after the other (rotations are rare); close waits for the last.
      this.dirSync = (this.dirSync ?? Promise.resolve()).then(async () => {
        try {
          const handle = await open(this.dir, 'r')
          try {
            await handle.sync()
          } finally {
            await handle.close()
          }
        } catch (err) {
          this.log.warn({ err }, 'usage spool: could not fsync the spool directory')
        }
      })
      return
    }
    try {
      const fd = fs.openSync(this.dir, 'r')
      try {
        fs.fsyncSync(fd)
      } finally {
        fs.closeSync(fd)
      }
    } catch (err) {
      this.log.warn({ err }, 'usage spool: could not fsync the spool directory')
    }
  }

  private async readerFor(seq: number): Promise<FileHandle> {
    if (this.reader !== null) {
      if (this.reader.seq === seq) return this.reader.handle
      const old = this.reader.handle
      this.reader = null
      await old.close()
    }
    const handle = await open(path.join(this.dir, segmentName(seq)), 'r')
    this.reader = { seq, handle }
    return handle
  }

  /** At start (nothing is served yet) a segment is deleted at once; see deleteInBackground for later ones. */
  private unlinkSegment(seq: number): void {
    try {
      fs.rmSync(path.join(this.dir, segmentName(seq)), { force: true })
    } catch (err) {
      this.log.error({ err, segment: seq }, 'usage spool: could not delete a segment')
    }
  }

  /**
   * Deletes a segment the cursor has passed (or drop-oldest dropped) on the thread pool: freeing a 4 MiB file's
   * blocks takes 0.25–1 ms, which the event loop, and every stream on it, would otherwise wait. The segment is
   * already out of the spool's books: a crash before the deletion leaves it behind the cursor, deleted at the next
   * start. close() waits for the deletions in progress.
   */
  private deleteInBackground(seq: number): void {
    const file = path.join(this.dir, segmentName(seq))
    this.deletions = this.deletions.then(() =>
      rm(file, { force: true }).catch((err: unknown) => this.log.error({ err, segment: seq }, 'usage spool: could not delete a segment')),
    )
  }
}

/** Complete lines (newline-terminated) in `file` between `from` and `to`. */
function countLines(file: string, from: number, to: number): number {
  if (from >= to) return 0
  const fd = fs.openSync(file, 'r')
  try {
    const buf = Buffer.allocUnsafe(Math.min(SCAN_CHUNK, to - from))
    let count = 0
    let pos = from
    while (pos < to) {
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, to - pos), pos)
      if (n === 0) break
      let at = buf.indexOf(NEWLINE, 0)
      while (at !== -1 && at < n) {
        count++
        at = buf.indexOf(NEWLINE, at + 1)
      }
      pos += n
    }
    return count
  } finally {
    fs.closeSync(fd)
  }
}
