import type { LlmContext, UsageRecord } from '@llmproxy/core'
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import type { Registry } from 'prom-client'
import { HistogramCollector, type HistogramSeries } from './collectors.js'
import { statusLabel } from './labels.js'

/** fastify-metrics' histogram name, help text and buckets (prom-client's default buckets). */
export const HTTP_DURATION_NAME = 'http_request_duration_seconds'
export const HTTP_DURATION_HELP = 'request duration in seconds'
export const HTTP_DURATION_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
/** Route label of requests that matched no route (fastify-metrics' default `invalidRouteGroup`). */
export const UNKNOWN_ROUTE = '__unknown__'

interface RouteSeries {
  readonly method: string
  readonly status: string
  readonly series: HistogramSeries
}

/** The hooks that feed the route histogram: between them, each measured request is observed once. */
export interface RouteMetricsHooks {
  /** Fastify `onResponse`: a finished response. */
  onResponse(request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void
  /** Fastify `onRequestAbort`: the client left before its request was read whole (nothing was answered). */
  onRequestAbort(request: FastifyRequest, done: HookHandlerDoneFunction): void
  /** Core's `onUsage`: a routed request whose client left before the end of its answer (no onResponse for it). */
  onUsage(record: UsageRecord, request: FastifyRequest): void
}

/**
 * The HTTP duration histogram of fastify-metrics (same name, help, buckets, labels `method`, `route`,
 * `status_code`, route label `config.statsId ?? route url ?? '__unknown__'`, routes with
 * `config.disableMetrics` skipped), recorded from Fastify's own hooks with `reply.elapsedTime` instead of
 * fastify-metrics' per-request timer closures, WeakMap entry and label objects. Per request: one Map lookup by
 * route label and a short search by method and status. fastify-metrics measures finished responses only; this
 * also measures the requests whose client left first (status `0` when nothing was sent).
 */
export function registerRouteMetrics(fastify: FastifyInstance, registry: Registry): void {
  const hooks = routeMetricsHooks(registry)
  fastify.addHook('onResponse', hooks.onResponse)
  fastify.addHook('onRequestAbort', hooks.onRequestAbort)
  fastify.llm.addHook('onUsage', hooks.onUsage)
}

/** The hooks of {@link registerRouteMetrics} (exported for the benchmark). */
export function routeMetricsHooks(registry: Registry): RouteMetricsHooks {
  const histogram = new HistogramCollector(registry, HTTP_DURATION_NAME, HTTP_DURATION_HELP, HTTP_DURATION_BUCKETS)
  const routes = new Map<string, RouteSeries[]>()

  const seriesOf = (route: string, method: string, status: string): HistogramSeries => {
    let list = routes.get(route)
    if (list === undefined) {
      list = []
      routes.set(route, list)
    }
    for (let i = 0; i < list.length; i++) {
      const s = list[i] as RouteSeries
      if (s.method === method && s.status === status) return s.series
    }
    const series = histogram.series({ method, route, status_code: status })
    list.push({ method, status, series })
    return series
  }

  const observe = (request: FastifyRequest, status: number, ms: number): void => {
    const method = request.method
    if (method === 'HEAD' || method === 'OPTIONS' || method === 'TRACE' || method === 'CONNECT') return
    const route = request.routeOptions
    const config = route.config
    if (config.disableMetrics === true) return
    histogram.observe(seriesOf(config.statsId ?? route.url ?? UNKNOWN_ROUTE, method, statusLabel(status)), ms / 1000)
  }

  return {
    onResponse(request, reply, done) {
      observe(request, reply.statusCode, reply.elapsedTime)
      done()
    },
    onRequestAbort(request, done) {
      // No context only when the client left during an app's onRequest hook that runs before core's.
      const llm = request.llm as LlmContext | null
      if (llm !== null) observe(request, 0, performance.now() - llm.startedAt)
      done()
    },
    onUsage(record, request) {
      // The client left before the answer's end: the response never finishes, so onResponse never comes.
      if (record.clientAborted) observe(request, record.status, record.durationMs)
    },
  }
}
