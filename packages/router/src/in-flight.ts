import type { LlmProxyError } from '@llmproxy/core'

/** A call in flight, linked into `InFlight`. */
export interface InFlightCall {
  prevInFlight: InFlightCall | null
  nextInFlight: InFlightCall | null
  /** Ends the call with `error`; false when its answer had already ended. */
  abortWith(error: LlmProxyError): boolean
}

/**
 * The calls in flight, as a list linked through the calls themselves: adding and removing one per request costs two
 * pointer writes (a Set cost measurably more per stream with every feature on: hashing, and its table's rehashes).
 */
export class InFlight {
  private head: InFlightCall | null = null

  add(call: InFlightCall): void {
    call.nextInFlight = this.head
    if (this.head !== null) this.head.prevInFlight = call
    this.head = call
  }

  remove(call: InFlightCall): void {
    if (call.prevInFlight !== null) call.prevInFlight.nextInFlight = call.nextInFlight
    else if (this.head === call) this.head = call.nextInFlight
    else return // not in the list
    if (call.nextInFlight !== null) call.nextInFlight.prevInFlight = call.prevInFlight
    call.prevInFlight = null
    call.nextInFlight = null
  }

  /** A copy, so that calls may leave the list while it is walked. */
  list(): InFlightCall[] {
    const calls: InFlightCall[] = []
    for (let call = this.head; call !== null; call = call.nextInFlight) calls.push(call)
    return calls
  }
}
