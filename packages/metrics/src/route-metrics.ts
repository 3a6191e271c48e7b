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

/**
 * The HTTP duration histogram of fastify-metrics (same name, help, buckets, labels `method`, `route`,
 * `status_code`, route label `config.statsId ?? route url ?? '__unknown__'`, routes with
 * `config.disableMetrics` skipped), recorded from one `onResponse` hook with fastify's own
 * `reply.elapsedTime` instead of fastify-metrics' per-request timer closures, WeakMap entry and label
 * objects. Per request: one Map lookup by route label and a short search by method and status.
 */
export function registerRouteMetrics(fastify: FastifyInstance, registry: Registry): void {
  fastify.addHook('onResponse', routeMetricsHook(registry))
}

/** The `onResponse` hook of {@link registerRouteMetrics} (exported for the benchmark). */
export function routeMetricsHook(
  registry: Registry,
): (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => void {
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

  return (request, reply, done) => {
    const method = request.method
    if (method === 'HEAD' || method === 'OPTIONS' || method === 'TRACE' || method === 'CONNECT') return done()
    const route = request.routeOptions
    const config = route.config
    if (config.disableMetrics === true) return done()
    histogram.observe(
      seriesOf(config.statsId ?? route.url ?? UNKNOWN_ROUTE, method, statusLabel(reply.statusCode)),
      reply.elapsedTime / 1000,
    )
    done()
  }
}
