import type { KeyLimits } from '@llmproxy/core'
import type { LimitStore } from './store.js'

/** A token counter: a TPM window or a quota period of one subject. */
export interface Counter {
  key: string
  /** The subject's hash tag (keys.ts), for markers on the same slot. */
  tag: string
  /** When the counter expires (epoch ms). */
  expireAt: number
}

/** Tokens one request holds on a counter, from its reservation until its usage record settles them. */
export interface Hold extends Counter {
  /** The store that took the reservation (the settle goes there too). */
  store: LimitStore
  /** Names this reservation in Redis, so that it is settled or cancelled exactly once. */
  marker: string
  reserved: number
  /** When the reservation was sent to Redis (epoch ms; 0 when local): whether its marker can have expired. */
  reservedAt: number
  /** Reserved and not settled yet. */
  open: boolean
}

/** Private request decorator: the per-key limits state of one request. */
export const kLimitState = Symbol('llmproxy.rateLimit.state')

/** What a request holds (slot, token reservations) and how it ends. Allocated only when a per-key limit applies. */
export class RequestLimitState {
  /** `{key:<keyId>}`, or `{ip:<client ip>}` without auth: the counters' subject, braced as their Redis hash tag. */
  readonly tag: string
  readonly keyId: string | null
  readonly rps: number | undefined
  readonly rpm: number | undefined
  readonly tpm: number | undefined
  readonly concurrency: number | undefined
  readonly quota: KeyLimits['quota'] | undefined
  /** Store holding this request's concurrency slot, null when it holds none. */
  slot: LimitStore | null = null
  /** Id of the slot (unique across instances). */
  slotMember = ''
  tpmHold: Hold | null = null
  quotaHold: Hold | null = null
  /** The usage record has been charged. */
  charged = false
  /** The response is over (finished or aborted): everything held has been given back. */
  settled = false
  /** Listener for the raw response's `close`, which fires exactly once whether the response finished or was aborted. */
  readonly onClose: () => void
  /** The engine that counts this request (another context's rate-limit plugin may hear its usage record too). */
  readonly engine: object

  constructor(
    tag: string,
    keyId: string | null,
    rps: number | undefined,
    rpm: number | undefined,
    tpm: number | undefined,
    concurrency: number | undefined,
    quota: KeyLimits['quota'] | undefined,
    finish: (state: RequestLimitState) => void,
    engine: object,
  ) {
    this.tag = tag
    this.keyId = keyId
    this.rps = rps
    this.rpm = rpm
    this.tpm = tpm
    this.concurrency = concurrency
    this.quota = quota
    this.onClose = () => finish(this)
    this.engine = engine
  }
}
