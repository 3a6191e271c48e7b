import type { EventEmitter } from 'node:events'
import type { LlmHooks } from '@llmproxy/core'
import type { WhenFull } from './options.js'

/** Emitted after each delivery attempt. */
export interface DeliveryEvent {
  ok: boolean
  /** Records in the batch. */
  records: number
  latencyMs: number
  /** HTTP status, when the webhook answered. */
  status?: number
  /** Why the attempt failed (status, network error, timeout). */
  error?: string
}

/** Emitted each time a record does not fit in the spool (before the policy is applied). */
export interface SpoolFullEvent {
  policy: WhenFull
}

export type UsageEvents = {
  delivery: [DeliveryEvent]
  'spool-full': [SpoolFullEvent]
}

export interface UsageStats {
  /** Records spooled, not yet acknowledged by the webhook. */
  queueDepth: number
  /** Bytes of spool segment files on disk. */
  spoolBytes: number
  /** Records acknowledged (2xx) by the webhook. */
  delivered: number
  /** Failed delivery attempts (non-2xx, network error, timeout). */
  deliveryFailures: number
  /** Undelivered records deleted by the `drop-oldest` policy. */
  dropped: number
  /** Records not spooled (spool full under `stop-spooling`, I/O error, spool closed). */
  notSpooled: number
  /** ISO time of the last acknowledged delivery. */
  lastDeliveryAt: string | null
  /** The error of the last delivery attempt; null once a delivery succeeds. */
  lastError: string | null
}

/** The mutable part of UsageStats, shared by the sink and the delivery loop. */
export type Counters = Omit<UsageStats, 'queueDepth' | 'spoolBytes'>

export type UsageListener = LlmHooks['onUsage']

/** `fastify.usage` */
export interface UsageApi {
  /** Adds an in-process listener, called once per usage record (see @llmproxy/core hooks). */
  onUsage(fn: UsageListener): void
  stats(): UsageStats
  /** Sends what is spooled now; resolves when it is acknowledged (or dropped), or when the app closes. */
  flush(): Promise<void>
  readonly events: EventEmitter<UsageEvents>
}
