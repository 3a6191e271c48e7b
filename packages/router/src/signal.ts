/**
 * The abort signal of one upstream attempt: it tells the attempt's request in flight (an AbortController and its
 * EventTarget cost several allocations and listener bookkeeping per request; one request ever listens).
 */
export class AttemptSignal {
  aborted = false
  reason: Error | undefined = undefined
  private request: { abortWith(reason: Error): void } | null = null

  /** The request to abort (null: none now). */
  watch(request: { abortWith(reason: Error): void } | null): void {
    this.request = request
  }

  /** The attempt is given up for good (its call hears nothing more of it): its request's failure is no news. */
  abort(reason: Error): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    const request = this.request
    this.request = null
    request?.abortWith(reason)
  }
}
