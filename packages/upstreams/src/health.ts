import { egressProxyAgent } from '@llmproxy/core'
import { defaultHealthCheckPath, setUpstreamCredential } from '@llmproxy/protocols'
import { Agent, type Dispatcher } from 'undici'
import type { HealthChecksOptions } from './options.js'
import type { UpstreamNode } from './upstream.js'

/** The path an upstream is checked on, or null when it is not actively checked. */
export function healthCheckPath(upstream: UpstreamNode, options: HealthChecksOptions): string | null {
  const own = upstream.healthCheck
  if (!options.enabled || own?.enabled === false) return null
  const path = own?.path ?? defaultHealthCheckPath(upstream.protocol)
  if (path === null) return null
  return path.startsWith('/') ? path : `/${path}`
}

/** The headers of a check: the upstream's own, its credential and required headers the way its API expects them. */
export function healthCheckHeaders(upstream: UpstreamNode): Record<string, string> {
  const headers: Record<string, string> = { ...upstream.headers, 'user-agent': 'llmproxy-health-check' }
  setUpstreamCredential(headers, upstream.protocol, upstream.apiKey)
  return headers
}

export type CheckListener = (upstream: UpstreamNode, ok: boolean, error: string | null) => void

interface Loop {
  timer: NodeJS.Timeout | null
  /** The check in flight (aborted when the loop stops). */
  request: AbortController | null
  stopped: boolean
}

/**
 * One check loop per actively checked upstream: a check, then the next one an interval (± jitter) after it
 * ends, so checks of an upstream never overlap. Timers are unref'd; `close` stops every loop and aborts
 * the checks in flight.
 */
export class HealthChecker {
  private readonly options: HealthChecksOptions
  private readonly onResult: CheckListener
  private readonly loops = new Map<UpstreamNode, Loop>()
  private running = false
  /** Checks reach upstreams as their requests do: directly, or through the egress proxy the environment names. */
  private readonly dispatcher: Dispatcher

  constructor(options: HealthChecksOptions, onResult: CheckListener) {
    this.options = options
    this.onResult = onResult
    // One connection per check, closed after it: a check says whether an upstream can be reached now.
    this.dispatcher =
      egressProxyAgent(options.timeoutMs, { pipelining: 0 }) ?? new Agent({ connect: { timeout: options.timeoutMs }, pipelining: 0 })
  }

  start(upstreams: Iterable<UpstreamNode>): void {
    if (this.running) return
    this.running = true
    for (const upstream of upstreams) this.sync(upstream)
  }

  /** Starts or stops the loop of `upstream` to match its settings (once started). */
  sync(upstream: UpstreamNode): void {
    if (!this.running) return
    const checked = healthCheckPath(upstream, this.options) !== null
    const loop = this.loops.get(upstream)
    if (checked && loop === undefined) {
      const fresh: Loop = { timer: null, request: null, stopped: false }
      this.loops.set(upstream, fresh)
      // The first check comes soon, spread over a fraction of the interval so that checks don't all fire at once.
      this.schedule(upstream, fresh, Math.random() * this.options.jitter * this.options.intervalMs)
    } else if (!checked && loop !== undefined) {
      this.stop(upstream)
    }
  }

  stop(upstream: UpstreamNode): void {
    const loop = this.loops.get(upstream)
    if (loop === undefined) return
    this.loops.delete(upstream)
    loop.stopped = true
    if (loop.timer !== null) clearTimeout(loop.timer)
    loop.timer = null
    loop.request?.abort()
    loop.request = null
  }

  close(): void {
    this.running = false
    for (const upstream of [...this.loops.keys()]) this.stop(upstream)
    void this.dispatcher.destroy()
  }

  private schedule(upstream: UpstreamNode, loop: Loop, delay: number): void {
    loop.timer = setTimeout(() => {
      loop.timer = null
      this.check(upstream, loop)
    }, delay)
    loop.timer.unref()
  }

  private nextDelay(): number {
    const { intervalMs, jitter } = this.options
    return Math.max(1, intervalMs * (1 + jitter * (2 * Math.random() - 1)))
  }

  private check(upstream: UpstreamNode, loop: Loop): void {
    const path = healthCheckPath(upstream, this.options)
    if (path === null) return
    const url = new URL(upstream.url + path)
    const timeoutMs = this.options.timeoutMs
    const controller = new AbortController()
    loop.request = controller
    const deadline = setTimeout(() => controller.abort(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs)
    deadline.unref()
    const done = (error: string | null, status: number): void => {
      clearTimeout(deadline)
      loop.request = null
      if (loop.stopped) return
      const ok = error === null && status >= 200 && status < 300
      this.onResult(upstream, ok, ok ? null : (error ?? `status ${status}`))
      if (!loop.stopped) this.schedule(upstream, loop, this.nextDelay())
    }
    this.dispatcher
      .request({
        origin: url.origin,
        path: `${url.pathname}${url.search}`,
        method: 'GET',
        headers: { ...healthCheckHeaders(upstream), connection: 'close' },
        signal: controller.signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      })
      .then(async (res) => {
        // Read to its end (dump() would swallow a body that stalls, which fails the check as a slow answer does).
        for await (const _chunk of res.body) {
          // dropped
        }
        return res.statusCode
      })
      .then(
        (status) => done(null, status),
        (err: NodeJS.ErrnoException) => {
          const reason = controller.signal.aborted ? controller.signal.reason : err
          done(reason instanceof Error && reason !== err ? reason.message : (err.code ?? err.message), 0)
        },
      )
  }
}
