import type { KeyLimits } from '@llmproxy/core'
import type { LimitStore } from './store.js'

/** Tokens held against one counter (a TPM window or a quota period) until the usage record reconciles them. */
export interface Hold {
  store: LimitStore
  key: string
  expireAt: number
  reserved: number
}

/** Private request decorator: the per-key limits state of one request. */
export const kLimitState = Symbol('llmproxy.rateLimit.state')

/** What a request holds (slot, token reservations) and how it ends. Allocated only when a per-key limit applies. */
export class RequestLimitState {
  /** Counter subject: `key:<keyId>`, or `ip:<client ip>` without auth. */
  readonly subject: string
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

  constructor(
    subject: string,
    keyId: string | null,
    rps: number | undefined,
    rpm: number | undefined,
    tpm: number | undefined,
    concurrency: number | undefined,
    quota: KeyLimits['quota'] | undefined,
    settle: (state: RequestLimitState) => void,
  ) {
    this.subject = subject
    this.keyId = keyId
    this.rps = rps
    this.rpm = rpm
    this.tpm = tpm
    this.concurrency = concurrency
    this.quota = quota
    this.onClose = () => settle(this)
  }
}
