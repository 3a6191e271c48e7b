import { Agent, type Dispatcher } from 'undici'

/** What one attempt adds to the undici request that @fastify/reply-from builds. */
export interface AttemptTransport {
  signal: AbortSignal
  headersTimeout: number
}

type ReplyFromRequest = Dispatcher.RequestOptions
type ReplyFromCallback = (err: Error | null, data: Dispatcher.ResponseData) => void

/**
 * The undici transport handed to @fastify/reply-from (`undici: dispatcher`, which it calls as
 * `dispatcher.request(opts, callback)`). reply-from does not pass an AbortSignal nor per-call header
 * timeouts, and it calls `request` synchronously inside `reply.from()`; so the router sets `current`
 * right before `reply.from()` and clears it right after, and the attempt's signal and timeout ride
 * along. The signal is what aborts the upstream request the moment the client goes away, even before
 * response headers (reply-from alone only notices once headers arrive).
 *
 * The Agent keeps TLS verification on (reply-from's own default agent turns it off).
 */
export class UpstreamDispatcher {
  private readonly agent: Agent
  current: AttemptTransport | null = null

  constructor(connectTimeoutMs: number) {
    this.agent = new Agent({
      connect: { timeout: connectTimeoutMs },
      keepAliveTimeout: 30_000,
      // Idle detection between chunks is the router's (it knows first-token vs idle phases).
      bodyTimeout: 0,
    })
  }

  request(opts: ReplyFromRequest, callback: ReplyFromCallback): void {
    const attempt = this.current
    if (attempt === null) {
      callback(new Error('UpstreamDispatcher used outside an attempt'), undefined as unknown as Dispatcher.ResponseData)
      return
    }
    opts.signal = attempt.signal
    opts.headersTimeout = attempt.headersTimeout
    opts.bodyTimeout = 0
    this.agent.request(opts, callback)
  }

  close(): Promise<void> {
    return this.agent.destroy()
  }
}
