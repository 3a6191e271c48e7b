// LLMProxy's plugins inside an app you already have: your own routes, hooks and rate limiter stay as they are,
// the gateway adds the OpenAI-compatible routes in its own encapsulated context, with its own limits. Shows
// three extension points: a custom balancing strategy (registered by name), a custom usage hook (here: a per-model
// token tally your app can serve), and LLMProxy's rate limits next to the app's own @fastify/rate-limit; and the
// gateway's Prometheus metrics on the app's /metrics.
import { fileURLToPath } from 'node:url'
import fastifyRateLimit from '@fastify/rate-limit'
import { llmCore, type UsageRecord } from '@llmproxy/core'
import { llmMetrics } from '@llmproxy/metrics'
import { rateLimit } from '@llmproxy/rate-limit'
import { router } from '@llmproxy/router'
import { type StrategyFactory, type Upstream, upstreams } from '@llmproxy/upstreams'
import Fastify, { type FastifyInstance } from 'fastify'

/** A custom strategy: always the first upstream listed that is available (primary/backup). */
const primaryFirst: StrategyFactory = () => ({
  pick: (candidates: readonly Upstream[]) => candidates[0],
})

/** LLMProxy's request limit in this example: per client IP (there is no auth), for the gateway routes only. */
export const GATEWAY_RPM = 20

export async function buildApp(upstreamUrls: { primary: string; backup: string }): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })

  // Your existing app: routes, hooks, decorators, and your own @fastify/rate-limit for your own API.
  await app.register(fastifyRateLimit, { global: false })
  app.get('/hello', { config: { rateLimit: { max: 3, timeWindow: '1 minute' } } }, async () => ({ hello: 'world' }))

  // The LLM hook registry at the root, so that hooks added here (below) see the gateway's requests.
  await app.register(llmCore)
  // Prometheus on GET /metrics: the LLM metrics (TTFT, tokens, attempts by upstream …) and the app's HTTP routes.
  await app.register(llmMetrics, { path: '/metrics' })

  // The gateway in its own context: its hooks (the rate limits) apply to its routes, not to yours.
  await app.register(async (gateway) => {
    await gateway.register(upstreams, {
      upstreams: [
        { name: 'primary', url: upstreamUrls.primary, protocol: 'openai' },
        { name: 'backup', url: upstreamUrls.backup, protocol: 'openai' },
      ],
      strategies: { 'primary-first': primaryFirst },
      healthChecks: { enabled: false },
    })
    await gateway.register(rateLimit, { perKey: { rpm: GATEWAY_RPM } })
    await gateway.register(router, {
      models: [{ name: 'chat', upstreams: ['primary', 'backup'], strategy: 'primary-first', upstreamModel: 'mock-model' }],
    })
  })

  // A custom usage hook: every request that reached routing, once, with its exact token counts.
  const tokensByModel = new Map<string, number>()
  app.llm.addHook('onUsage', (record: UsageRecord) => {
    tokensByModel.set(record.model, (tokensByModel.get(record.model) ?? 0) + record.totalTokens)
  })
  app.get('/usage', async () => Object.fromEntries(tokensByModel))
  return app
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { startMockUpstream } = await import('@llmproxy/mock-upstream')
  const primary = await startMockUpstream()
  const backup = await startMockUpstream()
  const app = await buildApp({ primary: primary.url, backup: backup.url })
  const url = await app.listen({ port: Number(process.env.PORT ?? 8080) })
  console.log(`listening on ${url}: POST ${url}/v1/chat/completions {"model":"chat",…}; GET ${url}/usage, ${url}/metrics`)
}
