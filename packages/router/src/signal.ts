/**
 * The abort signal of one upstream attempt: it tells the attempt's request in flight (an AbortController and its
 * EventTarget cost several allocations and listener bookkeeping per request; one request ever listens).
 */
export class AttemptSignal {
  aborted = false
  reason: Error | undefined = undefined
  /** Aborted by an attempt given up for good (its call hears nothing more of it): its request's failure is no news. */
  abandoned = false
  private request: { abortWith(reason: Error): void } | null = null

  /** The request to abort (null: none now). */
  watch(request: { abortWith(reason: Error): void } | null): void {
    this.request = request
  }

  abort(reason: Error, abandoned = false): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    this.abandoned = abandoned
    const request = this.request
    this.request = null
    request?.abortWith(reason)
  }
}
