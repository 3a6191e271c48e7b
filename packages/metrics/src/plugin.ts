import { ensureCore, errors } from '@llmproxy/core'
import { sendError } from '@llmproxy/protocols'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import fastifyMetrics from 'fastify-metrics'
import fp from 'fastify-plugin'
import { Registry } from 'prom-client'
import { LlmMetrics } from './llm-metrics.js'
import { type MetricsOptions, resolveOptions } from './options.js'
import { registerRouteMetrics } from './route-metrics.js'
import {
  isRateLimitsSource,
  isUpstreamsSource,
  isUsageSource,
  registerRateLimitMetrics,
  registerUpstreamMetrics,
  registerUsageMetrics,
} from './sources.js'

/** The `fastify.llmMetrics` decorator. */
export interface LlmMetricsDecorator {
  /** The registry this plugin writes to (not prom-client's global one): add your own metrics here. */
  registry: Registry
}

declare module 'fastify' {
  interface FastifyInstance {
    llmMetrics: LlmMetricsDecorator
  }
}

/** Name under which fastify-metrics decorates the app (distinct from its default, so a host app may use both). */
const FASTIFY_METRICS_DECORATOR = 'llmproxyFastifyMetrics'

/**
 * Route config of the scrape route. Typed loosely on purpose: `auth` and `rateLimit` are read by
 * @llmproxy/auth and @llmproxy/rate-limit, which this package does not depend on; `disableMetrics`
 * (fastify-metrics' flag, honoured by the route histogram) keeps scrapes out of the HTTP metrics.
 */
const SCRAPE_ROUTE_CONFIG = { auth: false, rateLimit: false, disableMetrics: true }

const metricsPlugin: FastifyPluginAsync<Partial<MetricsOptions>> = async (fastify, options) => {
  await ensureCore(fastify)
  const opts = resolveOptions(options)
  const registry = new Registry()

  if (opts.defaultMetrics) {
    // fastify-metrics for prom-client's process metrics only: its route metrics cost ~10 µs per request
    // (timer closures, a WeakMap entry, prom-client label hashing), see registerRouteMetrics.
    await fastify.register(fastifyMetrics.default, {
      name: FASTIFY_METRICS_DECORATOR,
      endpoint: null,
      defaultMetrics: { enabled: true, register: registry },
      routeMetrics: { enabled: false },
    })
  }
  if (opts.routeMetrics) registerRouteMetrics(fastify, registry)

  const llm = new LlmMetrics(registry, opts, fastify.log)
  // Labelled by the model as configured, not as the client named it: names an alias pattern matches are endless.
  fastify.llm.addHook('onUsage', (record, request) =>
    llm.recordUsage(record, request.llm.resumes, request.llm.configuredModel ?? record.model),
  )
  fastify.llm.addHook('onAttempt', (attempt) => llm.recordAttempt(attempt))
  fastify.llm.addHook('onReject', (rejection) => llm.recordRejection(rejection))

  let detachUsage: (() => void) | null = null
  // Other plugins may be registered after this one: look for their decorators once all are loaded.
  fastify.addHook('onReady', async () => {
    const upstreams = sourceOf(fastify, 'upstreams', isUpstreamsSource)
    if (upstreams !== undefined) registerUpstreamMetrics(registry, opts.prefix, upstreams, fastify.log)
    const usage = sourceOf(fastify, 'usage', isUsageSource)
    if (usage !== undefined) detachUsage = registerUsageMetrics(registry, opts.prefix, usage, fastify.log)
    const rateLimits = sourceOf(fastify, 'rateLimits', isRateLimitsSource)
    if (rateLimits !== undefined) registerRateLimitMetrics(registry, opts.prefix, rateLimits)
  })
  fastify.addHook('onClose', async () => {
    detachUsage?.()
  })

  fastify.decorate('llmMetrics', { registry })

  fastify.route({
    method: 'GET',
    url: opts.path,
    exposeHeadRoute: false,
    logLevel: 'warn',
    config: SCRAPE_ROUTE_CONFIG,
    handler: async (request, reply) => {
      try {
        const text = await registry.metrics()
        return reply.type(registry.contentType).send(text)
      } catch (err) {
        request.log.error({ err }, 'metrics collection failed')
        return sendError(reply, errors.internal({ cause: err }))
      }
    },
  })
}

function decoratorOf(fastify: FastifyInstance, name: string): unknown {
  return fastify.hasDecorator(name) ? Reflect.get(fastify, name) : undefined
}

/**
 * The decorator `name` of this plugin's context or, when it has none, of the context of another LLMProxy plugin whose
 * records this one hears: the gateway in a context of its own (examples/existing-app's layout) keeps its
 * `fastify.upstreams` there. Of several, the first (with a warning).
 */
function sourceOf<T>(fastify: FastifyInstance, name: string, isSource: (value: unknown) => value is T): T | undefined {
  const own = decoratorOf(fastify, name)
  if (isSource(own)) return own
  const found = new Set<T>()
  for (const context of fastify.llm.contextsHeard()) {
    const value = decoratorOf(context, name)
    if (isSource(value)) found.add(value)
  }
  if (found.size > 1) {
    fastify.log.warn(
      `@llmproxy/metrics: ${found.size} contexts have their own fastify.${name}; its metrics describe the first one's. ` +
        'Register @llmproxy/metrics in the context of the one to describe.',
    )
  }
  return found.values().next().value
}

/**
 * Prometheus metrics for LLMProxy: LLM request metrics from core's hooks, upstream / usage / rate-limit
 * state read at scrape time, and (via fastify-metrics) process and HTTP route metrics, on a registry of its own.
 */
export const llmMetrics = fp(metricsPlugin, { name: '@llmproxy/metrics', fastify: '5.x' })
