import type { EventEmitter } from 'node:events'
import type { UsageRecord } from '@llmproxy/core'
import type { FastifyBaseLogger } from 'fastify'
import { Delivery } from './delivery.js'
import type { UsageOptions } from './options.js'
import { Spool } from './spool.js'
import type { Counters, UsageEvents } from './types.js'

/**
 * Errors that repeat while their cause lasts (spool full, appends failing on a full disk) are logged this seldom,
 * timed by the monotonic clock: a wall clock stepped back (NTP) would silence them for the length of the step.
 */
const ERROR_LOG_INTERVAL_MS = 10_000

/** The durable webhook sink: the onUsage listener that spools, the full-spool policy, the delivery loop. */
export class WebhookSink {
  readonly spool: Spool
  private readonly delivery: Delivery
  private readonly options: UsageOptions['spool']
  private readonly counters: Counters
  private readonly events: EventEmitter<UsageEvents>
  private readonly log: FastifyBaseLogger
  private syncTimer: NodeJS.Timeout | null = null
  /** performance.now() of the last such log (none yet: the first is logged whenever it comes). */
  private lastFullLogAt = Number.NEGATIVE_INFINITY
  private lastAppendErrorLogAt = Number.NEGATIVE_INFINITY
  /** Records of this event-loop turn, serialised, waiting for the turn's one write (see `listener`). */
  private waiting: string[] = []
  private writeScheduled = false
  private closed = false

  constructor(
    options: UsageOptions & { spoolDir: string; webhook: NonNullable<UsageOptions['webhook']> },
    counters: Counters,
    events: EventEmitter<UsageEvents>,
    log: FastifyBaseLogger,
  ) {
    this.options = options.spool
    this.counters = counters
    this.events = events
    this.log = log
    this.spool = new Spool({ dir: options.spoolDir, ...options.spool }, log)
    this.delivery = new Delivery(
      this.spool,
      {
        url: new URL(options.webhook.url),
        secret: options.webhook.secret,
        timeoutMs: options.webhook.timeoutMs,
        headers: options.webhook.headers,
        maxRecords: options.batch.maxRecords,
        maxWaitMs: options.batch.maxWaitMs,
        baseMs: options.retry.baseMs,
        maxMs: options.retry.maxMs,
      },
      counters,
      events,
      log,
    )
    if (this.spool.pending > 0) log.info({ records: this.spool.pending }, 'usage spool: replaying undelivered records')
  }

  start(): void {
    if (this.options.fsync === 'interval' && this.syncTimer === null) {
      this.syncTimer = setInterval(() => this.spool.syncIfDirty(), this.options.fsyncIntervalMs)
      this.syncTimer.unref()
    }
    this.delivery.start()
  }

  /**
   * The onUsage listener. The record is serialised at once and appended to the spool at the end of this
   * event-loop turn, together with the other records of the turn: one `write(2)` for all of them (a write per
   * record was most of the sink's cost). A record is accepted (in the page cache, safe from a process crash)
   * once the turn it was emitted in has ended.
   */
  readonly listener = (record: UsageRecord): void => {
    if (this.closed) {
      this.counters.notSpooled++
      this.log.warn({ recordId: record.id }, 'usage spool is closed; record not spooled')
      return
    }
    let json: string
    try {
      json = JSON.stringify(record)
    } catch (err) {
      this.counters.notSpooled++
      this.log.error({ err, recordId: record.id }, 'usage record is not serialisable; not spooled')
      return
    }
    this.waiting.push(json)
    if (!this.writeScheduled) {
      this.writeScheduled = true
      setImmediate(this.write)
    }
  }

  /** Records emitted but not yet appended (they are, at the end of the current event-loop turn). */
  get unwritten(): number {
    return this.waiting.length
  }

  /** Appends the records waiting for the end of the turn, applying whenFull to each, then wakes the delivery. */
  private readonly write = (): void => {
    this.writeScheduled = false
    const waiting = this.waiting
    if (waiting.length === 0) return
    this.waiting = []
    let lines: string[] = []
    let lengths: number[] = []
    let bytes = 0
    let appended = 0
    for (const json of waiting) {
      const length = Buffer.byteLength(json) + 1
      if (!this.spool.fits(bytes + length)) {
        // Full: what is accepted so far goes first (drop-oldest may then drop it for the newer records).
        appended += this.append(lines, lengths)
        lines = []
        lengths = []
        bytes = 0
        if (!this.spool.fits(length) && !this.makeRoom(length)) continue
      }
      lines.push(json)
      lengths.push(length)
      bytes += length
    }
    appended += this.append(lines, lengths)
    if (appended > 0) this.delivery.notify()
  }

  private append(lines: string[], lengths: number[]): number {
    if (lines.length === 0) return 0
    const { appended, error } = this.spool.append(lines, lengths)
    if (error !== null) {
      this.counters.notSpooled += lines.length - appended
      const now = performance.now()
      if (now - this.lastAppendErrorLogAt >= ERROR_LOG_INTERVAL_MS) {
        this.lastAppendErrorLogAt = now
        this.log.error(
          { err: error, records: lines.length - appended, notSpooled: this.counters.notSpooled },
          'usage spool: append failed; records not spooled',
        )
      }
    }
    return appended
  }

  flush(): Promise<void> {
    this.write()
    return this.delivery.flush()
  }

  /** Delivers what it can within shutdownFlushMs, then closes the files; the rest stays spooled. */
  async close(flushMs: number): Promise<void> {
    this.write()
    await this.delivery.stop(flushMs)
    // Records of requests that ended meanwhile stay spooled for the next start.
    this.write()
    this.closed = true
    if (this.syncTimer !== null) clearInterval(this.syncTimer)
    this.syncTimer = null
    await this.spool.close()
  }

  /** The spool is full: apply whenFull, and tell. True when the record now fits; else it is counted not spooled. */
  private makeRoom(length: number): boolean {
    const policy = this.options.whenFull
    // stop-spooling refuses this record: counted before the line that reports the counts.
    if (policy === 'stop-spooling') this.counters.notSpooled++
    const now = performance.now()
    if (now - this.lastFullLogAt >= ERROR_LOG_INTERVAL_MS) {
      this.lastFullLogAt = now
      this.log.error(
        {
          policy,
          spoolBytes: this.spool.bytes,
          maxBytes: this.options.maxBytes,
          dropped: this.counters.dropped,
          notSpooled: this.counters.notSpooled,
        },
        policy === 'drop-oldest'
          ? 'USAGE SPOOL FULL: deleting the oldest undelivered records (billing data lost); is the webhook down?'
          : 'USAGE SPOOL FULL: new usage records are not spooled (billing data lost); is the webhook down?',
      )
    }
    this.events.emit('spool-full', { policy })
    if (policy === 'stop-spooling') return false
    let fits = false
    while (!fits) {
      const dropped = this.spool.dropOldest()
      if (dropped < 0) break
      this.counters.dropped += dropped
      fits = this.spool.fits(length)
    }
    // Larger than the whole spool: nothing to drop makes room for it.
    if (!fits) this.counters.notSpooled++
    this.delivery.settleWaiters()
    return fits
  }
}
