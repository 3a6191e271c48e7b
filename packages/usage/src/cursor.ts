import * as fs from 'node:fs'
import * as path from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import type { FsyncPolicy } from './options.js'

const CURSOR_FILE = 'cursor.json'
/** Left by versions that replaced the cursor through a temp file and a rename. */
const OLD_CURSOR_TMP = 'cursor.json.tmp'
/** The cursor's JSON is padded to this many bytes and rewritten in place (the longest is 98; one disk sector holds it). */
const CURSOR_BYTES = 128

/** Where delivery stands: everything before this byte of this segment is acknowledged. */
export interface CursorPosition {
  seq: number
  offset: number
}

/**
 * The spool's delivery cursor of an earlier run, or null (none, or unreadable: then the spool replays from its oldest
 * segment, which can only duplicate records, never lose them).
 */
export function readCursor(dir: string, log: FastifyBaseLogger): CursorPosition | null {
  fs.rmSync(path.join(dir, OLD_CURSOR_TMP), { force: true })
  let text: string
  try {
    text = fs.readFileSync(path.join(dir, CURSOR_FILE), 'utf8')
  } catch {
    return null
  }
  try {
    const value = JSON.parse(text) as { segment?: unknown; offset?: unknown; check?: unknown }
    // `check` repeats the two numbers: a write torn between old and new bytes cannot pass for a cursor. (Absent
    // from the cursors of older versions, which were replaced whole.)
    if (
      Number.isSafeInteger(value.segment) &&
      Number.isSafeInteger(value.offset) &&
      (value.check === undefined || value.check === `${value.segment}:${value.offset}`)
    ) {
      return { seq: value.segment as number, offset: Math.max(0, value.offset as number) }
    }
  } catch {
    // fall through
  }
  log.warn({ dir }, 'usage spool: unreadable cursor, replaying from the oldest segment')
  return null
}

/**
 * `cursor.json`, kept open and rewritten in place: one 128-byte `pwrite` at offset 0 per acknowledged batch (a few
 * µs; a temp file and a rename per batch cost ~0.3 ms of the gateway's core). A process crash cannot tear one write;
 * a power failure that tears it fails its check. That, a lost write or a cursor older than the deliveries only causes
 * redelivery. Synced by the fsync policy: after each write (`always`, off the event loop), by `sync()` on the
 * interval timer (`interval`), never (`never`); close syncs it.
 */
export class CursorFile {
  private readonly fsync: FsyncPolicy
  private readonly log: FastifyBaseLogger
  private fd: number
  /** Written since its last fdatasync. */
  private unsynced = false
  /** The fdatasync in flight (one at a time). */
  private syncing: Promise<void> | null = null

  constructor(dir: string, at: CursorPosition, fsync: FsyncPolicy, log: FastifyBaseLogger) {
    this.fsync = fsync
    this.log = log
    this.fd = fs.openSync(path.join(dir, CURSOR_FILE), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644)
    // Written before the truncation (a longer file of an older version): never a moment without a readable cursor.
    this.write(at)
    fs.ftruncateSync(this.fd, CURSOR_BYTES)
  }

  write({ seq, offset }: CursorPosition): void {
    const text = JSON.stringify({ segment: seq, offset, check: `${seq}:${offset}` }).padEnd(CURSOR_BYTES - 1)
    try {
      fs.writeSync(this.fd, `${text}\n`, 0)
      this.unsynced = true
    } catch (err) {
      // At worst the next start redelivers the batch: duplicates, no loss.
      this.log.error({ err }, 'usage spool: could not persist the delivery cursor')
    }
    if (this.fsync === 'always') this.sync()
  }

  /** fdatasync on the thread pool when the cursor moved since the last one (one at a time). */
  sync(): void {
    if (!this.unsynced || this.syncing !== null || this.fsync === 'never' || this.fd === -1) return
    this.unsynced = false
    const fd = this.fd
    this.syncing = new Promise((resolve) => {
      fs.fdatasync(fd, (err) => {
        this.syncing = null
        if (err) this.log.error({ err }, 'usage spool: fdatasync of the cursor failed')
        if (this.fsync === 'always') this.sync()
        resolve()
      })
    })
  }

  /** Waits for a sync in flight, syncs what is left (unless `never`), closes the file. */
  async close(): Promise<void> {
    while (this.syncing !== null) await this.syncing
    const fd = this.fd
    this.fd = -1
    try {
      if (this.unsynced && this.fsync !== 'never') fs.fdatasyncSync(fd)
      fs.closeSync(fd)
    } catch (err) {
      this.log.error({ err }, 'usage spool: could not sync or close the cursor')
    }
  }
}
