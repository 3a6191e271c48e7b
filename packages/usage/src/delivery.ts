import { randomUUID } from 'node:crypto'
import type { EventEmitter } from 'node:events'
import { egressProxyAgent } from '@llmproxy/core'
import type { FastifyBaseLogger } from 'fastify'
import { type Dispatcher, Pool } from 'undici'
import { signPayload } from './signature.js'
import type { Spool, SpoolBatch } from './spool.js'
import type { Counters, UsageEvents } from './types.js'

export interface DeliveryOptions {
  url: URL
  secret: string | undefined
  timeoutMs: number
  headers: Record<string, string> | undefined
  maxRecords: number
  maxWaitMs: number
  baseMs: number
  maxMs: number
}

interface Pending {
  batch: SpoolBatch
  id: string
  body: Buffer
}

interface FlushWaiter {
  target: number
  resolve: () => void
}

type Waiting = 'records' | 'batch' | 'backoff' | null

const BODY_OPEN = '{"records":['
const BODY_CLOSE = ']}'

/** Full-jitter exponential backoff: uniform in [0, min(maxMs, baseMs · 2^(failures-1))]. */
export function backoffDelay(failures: number, baseMs: number, maxMs: number): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(failures - 1, 30))
  return Math.floor(Math.random() * ceiling)
}

/**
 * The single delivery loop: reads a batch at the spool cursor, POSTs it until a 2xx (same body and
 * delivery id on every retry), acknowledges it, repeats. One request in flight at a time, in order.
 */
export class Delivery {
  private readonly spool: Spool
  private readonly options: DeliveryOptions
  private readonly counters: Counters
  private readonly events: EventEmitter<UsageEvents>
  private readonly log: FastifyBaseLogger
  private readonly dispatcher: Dispatcher
  private readonly path: string
  private readonly baseHeaders: Record<string, string>
  private waiting: Waiting = null
  private wakeUp: (() => void) | null = null
  private timer: NodeJS.Timeout | null = null
  /** performance.now() of the first record appended since the last batch was read; 0 = none. */
  private firstPendingAt = 0
  private stopping = false
  private stopped = false
  private inflight: AbortController | null = null
  private waiters: FlushWaiter[] = []
  private loop: Promise<void> | null = null

  constructor(spool: Spool, options: DeliveryOptions, counters: Counters, events: EventEmitter<UsageEvents>, log: FastifyBaseLogger) {
    this.spool = spool
    this.options = options
    this.counters = counters
    this.events = events
    this.log = log
    // Through the egress proxy HTTPS_PROXY / HTTP_PROXY name, unless NO_PROXY names the webhook's host. The connect (a
    // TLS handshake included) is bounded by the delivery's timeout too: undici applies an abort only once the request
    // has its connection, so a handshake that stalls would otherwise take its own 10 s.
    this.dispatcher =
      egressProxyAgent(options.timeoutMs, { connections: 1, pipelining: 1 }) ??
      new Pool(options.url.origin, { connections: 1, pipelining: 1, connect: { timeout: options.timeoutMs } })
    this.path = `${options.url.pathname}${options.url.search}`
    this.baseHeaders = { ...options.headers, 'content-type': 'application/json' }
    // Replayed records are overdue.
    if (spool.pending > 0) this.firstPendingAt = Number.NEGATIVE_INFINITY
  }

  start(): void {
    if (this.loop === null) this.loop = this.run()
  }

  /** Called after each spooled record (hot path: a few comparisons). */
  notify(): void {
    if (this.firstPendingAt === 0) this.firstPendingAt = performance.now()
    if (this.waiting === 'records' || (this.waiting === 'batch' && this.spool.pending >= this.options.maxRecords)) this.wake()
  }

  /** Resolves when every record spooled before the call is acknowledged (or dropped), or when stopped. */
  flush(): Promise<void> {
    if (this.spool.pending === 0 || this.stopped) return Promise.resolve()
    const target = this.spool.released + this.spool.pending
    return new Promise((resolve) => {
      this.waiters.push({ target, resolve })
      if (this.waiting !== null) this.wake()
    })
  }

  /** Resolves flush() callers whose records are all acknowledged or dropped. */
  settleWaiters(): void {
    if (this.waiters.length === 0) return
    const released = this.spool.released
    this.waiters = this.waiters.filter((w) => {
      if (w.target > released) return true
      w.resolve()
      return false
    })
  }

  /** Delivers what it can within `flushMs`, then stops the loop; the rest stays spooled. */
  async stop(flushMs: number): Promise<void> {
    this.stopping = true
    if (this.loop !== null && this.spool.pending > 0 && flushMs > 0) {
      let deadline: NodeJS.Timeout | undefined
      await Promise.race([this.flush(), new Promise<void>((resolve) => (deadline = setTimeout(resolve, flushMs)))])
      clearTimeout(deadline)
    }
    this.stopped = true
    this.inflight?.abort()
    this.wake()
    // Destroyed, not closed: a request still connecting hears of no abort, and would hold the shutdown past flushMs.
    await this.dispatcher.destroy()
    await this.loop
    for (const w of this.waiters) w.resolve()
    this.waiters = []
  }

  private async run(): Promise<void> {
    let pending: Pending | null = null
    let failures = 0
    while (!this.stopped) {
      // A batch waiting to be sent again whose records were dropped meanwhile (drop-oldest, spool full) is not sent:
      // they are counted dropped, and must not be delivered too.
      if (pending !== null && !this.spool.holds(pending.batch)) pending = null
      if (pending === null) {
        pending = await this.nextBatch()
        if (pending === null) continue
      }
      const ok = await this.send(pending)
      if (this.stopped && !ok) break
      if (ok) {
        this.spool.ack(pending.batch)
        this.settleWaiters()
        pending = null
        failures = 0
      } else {
        failures++
        await this.sleep('backoff', backoffDelay(failures, this.options.baseMs, this.options.maxMs))
      }
    }
  }

  /** Waits until a batch is due, reads it and builds its body. Null: nothing to send yet. */
  private async nextBatch(): Promise<Pending | null> {
    const spool = this.spool
    if (spool.pending === 0) {
      this.firstPendingAt = 0
      await this.sleep('records', Number.POSITIVE_INFINITY)
      return null
    }
    if (this.waiters.length === 0 && !this.stopping && spool.pending < this.options.maxRecords) {
      const wait = this.firstPendingAt + this.options.maxWaitMs - performance.now()
      if (wait > 0) {
        await this.sleep('batch', wait)
        return null
      }
    }
    let batch: SpoolBatch | null
    try {
      batch = await spool.read(this.options.maxRecords)
    } catch (err) {
      this.log.error({ err }, 'usage spool: read failed')
      await this.sleep('backoff', this.options.maxWaitMs)
      return null
    }
    if (batch === null) {
      // Segments dropped during the read: read again shortly (never spin on the event loop).
      await this.sleep('batch', 10)
      return null
    }
    // Records left behind this batch arrived after firstPendingAt: keeping it sends them no later than
    // maxWaitMs after their arrival (maybe earlier). Otherwise the next append starts a new wait.
    if (spool.pending === batch.consumed) this.firstPendingAt = 0
    if (batch.lines.length === 0) {
      spool.ack(batch)
      this.settleWaiters()
      return null
    }
    const body = Buffer.from(`${BODY_OPEN}${batch.lines.join(',')}${BODY_CLOSE}`)
    return { batch, id: randomUUID(), body }
  }

  private async send(pending: Pending): Promise<boolean> {
    const { options } = this
    const records = pending.batch.lines.length
    const headers: Record<string, string> = { ...this.baseHeaders, 'x-llmproxy-delivery': pending.id }
    if (options.secret !== undefined) headers['x-llmproxy-signature'] = signPayload(options.secret, pending.body)
    const controller = new AbortController()
    this.inflight = controller
    const timeout = setTimeout(() => controller.abort(new Error(`timed out after ${options.timeoutMs} ms`)), options.timeoutMs)
    const started = performance.now()
    let status: number | undefined
    let error: string | undefined
    try {
      const res = await this.dispatcher.request({
        origin: this.options.url.origin,
        path: this.path,
        method: 'POST',
        headers,
        body: pending.body,
        signal: controller.signal,
        headersTimeout: options.timeoutMs,
        bodyTimeout: options.timeoutMs,
      })
      status = res.statusCode
      await res.body.dump()
      if (status < 200 || status > 299) error = `webhook answered ${status}`
    } catch (err) {
      error = controller.signal.aborted && controller.signal.reason instanceof Error ? controller.signal.reason.message : errorMessage(err)
    } finally {
      clearTimeout(timeout)
      this.inflight = null
    }
    const latencyMs = Math.round((performance.now() - started) * 1000) / 1000
    const counters = this.counters
    if (error === undefined) {
      // Dropped (drop-oldest) while it was on its way: already counted dropped, not counted twice.
      if (this.spool.holds(pending.batch)) counters.delivered += records
      counters.lastDeliveryAt = new Date().toISOString()
      counters.lastError = null
      this.events.emit('delivery', { ok: true, records, latencyMs, status })
      return true
    }
    counters.deliveryFailures++
    counters.lastError = error
    this.events.emit(
      'delivery',
      status === undefined ? { ok: false, records, latencyMs, error } : { ok: false, records, latencyMs, status, error },
    )
    if (!this.stopped) {
      this.log.warn(
        { webhook: this.options.url.origin, delivery: pending.id, records, status, error },
        'usage webhook delivery failed; will retry',
      )
    }
    return false
  }

  private sleep(reason: Exclude<Waiting, null>, ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve()
    return new Promise((resolve) => {
      this.waiting = reason
      this.wakeUp = resolve
      if (ms !== Number.POSITIVE_INFINITY) {
        this.timer = setTimeout(this.wake, ms)
        this.timer.unref()
      }
    })
  }

  private readonly wake = (): void => {
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
    const resolve = this.wakeUp
    this.wakeUp = null
    this.waiting = null
    resolve?.()
  }
}

function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code
    return typeof code === 'string' ? `${code}: ${err.message}` : err.message
  }
  return String(err)
}
