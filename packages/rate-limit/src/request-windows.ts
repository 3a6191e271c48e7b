/** A request counter's state after one more request: what the limit headers and the 429 report. */
export interface RequestCount {
  /** The limit in force for this request. */
  max: number
  /** Requests left in the window (0 once the limit is reached). */
  remaining: number
  /** Milliseconds until the window ends. */
  ttl: number
  /** This request is over the limit. */
  exceeded: boolean
}

/** The state after the `count`th request of a window that ends in `ttl` ms. */
export function requestCount(max: number, count: number, ttl: number): RequestCount {
  return { max, remaining: Math.max(0, max - count), ttl, exceeded: count > max }
}

/** Counts requests against a limit: in this process, or (in a gateway worker) at the primary, for every worker. */
export interface RequestCounter {
  hit(subject: string, max: number, now: number): RequestCount | Promise<RequestCount>
}

interface Window {
  count: number
  startedAt: number
}

/**
 * Request counters in this process, with the window of @fastify/rate-limit's local store: fixed, starting at a
 * subject's first request, `windowMs` long. Synchronous: @fastify/rate-limit's limiter awaits four times per call
 * (and builds the route options), which cost more than the rest of the per-key limits together. At most
 * `capacity` subjects: beyond, the one whose window started longest ago is forgotten (it starts a new window at
 * its next request).
 */
export class RequestWindows implements RequestCounter {
  private readonly windows = new Map<string, Window>()
  private readonly windowMs: number
  private readonly capacity: number

  constructor(windowMs: number, capacity: number) {
    this.windowMs = windowMs
    this.capacity = capacity
  }

  /** Counts one request of `subject` against `max`. */
  hit(subject: string, max: number, now: number): RequestCount {
    let window = this.windows.get(subject)
    if (window === undefined || window.startedAt + this.windowMs <= now) {
      // A new window goes to the end of the map's order (oldest window first, for the capacity bound).
      if (window !== undefined) this.windows.delete(subject)
      else if (this.windows.size >= this.capacity) this.windows.delete(this.windows.keys().next().value as string)
      window = { count: 0, startedAt: now }
      this.windows.set(subject, window)
    }
    const count = ++window.count
    return requestCount(max, count, window.startedAt + this.windowMs - now)
  }
}
