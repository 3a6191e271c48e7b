import type { EventEmitter } from 'node:events'
import type { UsageRecord } from '@llmproxy/core'
import type { FastifyBaseLogger } from 'fastify'
import { Delivery } from './delivery.js'
import type { UsageOptions } from './options.js'
import { Spool } from './spool.js'
import type { Counters, UsageEvents } from './types.js'

const FULL_LOG_INTERVAL_MS = 10_000

/** The durable webhook sink: the onUsage listener that spools, the full-spool policy, the delivery loop. */
export class WebhookSink {
  readonly spool: Spool
  private readonly delivery: Delivery
  private readonly options: UsageOptions['spool']
  private readonly counters: Counters
  private readonly events: EventEmitter<UsageEvents>
  private readonly log: FastifyBaseLogger
  private syncTimer: NodeJS.Timeout | null = null
  private lastFullLogAt = 0
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

  /** The onUsage listener: the record is accepted once this returns (appended to the spool). */
  readonly listener = (record: UsageRecord): void => {
    if (this.closed) {
      this.counters.notSpooled++
      this.log.warn({ recordId: record.id }, 'usage spool is closed; record not spooled')
      return
    }
    let line: Buffer
    try {
      line = Buffer.from(`${JSON.stringify(record)}\n`)
    } catch (err) {
      this.counters.notSpooled++
      this.log.error({ err, recordId: record.id }, 'usage record is not serialisable; not spooled')
      return
    }
    if (!this.spool.fits(line.length) && !this.makeRoom(line.length)) {
      this.counters.notSpooled++
      return
    }
    try {
      this.spool.append(line)
    } catch (err) {
      this.counters.notSpooled++
      this.log.error({ err, recordId: record.id }, 'usage spool: append failed; record not spooled')
      return
    }
    this.delivery.notify()
  }

  flush(): Promise<void> {
    return this.delivery.flush()
  }

  /** Delivers what it can within shutdownFlushMs, then closes the files; the rest stays spooled. */
  async close(flushMs: number): Promise<void> {
    await this.delivery.stop(flushMs)
    this.closed = true
    if (this.syncTimer !== null) clearInterval(this.syncTimer)
    this.syncTimer = null
    await this.spool.close()
  }

  /** The spool is full: tell, then apply whenFull. True when the record now fits. */
  private makeRoom(length: number): boolean {
    const policy = this.options.whenFull
    const now = Date.now()
    if (now - this.lastFullLogAt >= FULL_LOG_INTERVAL_MS) {
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
    this.delivery.settleWaiters()
    return fits
  }
}
