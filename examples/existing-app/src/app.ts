// LLMProxy's plugins inside an app you already have: your own routes and hooks stay as they are, the
// gateway adds the OpenAI-compatible routes. Shows two extension points: a custom balancing strategy
// (registered by name) and a custom usage hook (here: a per-team token tally your app can serve).
import type { UsageRecord } from '@llmproxy/core'
import { router } from '@llmproxy/router'
import { type StrategyFactory, type Upstream, upstreams } from '@llmproxy/upstreams'
import Fastify, { type FastifyInstance } from 'fastify'

/** A custom strategy: always the first upstream listed that is available (primary/backup). */
const primaryFirst: StrategyFactory = () => ({
  pick: (candidates: readonly Upstream[]) => candidates[0],
})

export async function buildApp(upstreamUrls: { primary: string; backup: string }): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })

  // Your existing app: routes, hooks, decorators.
  app.get('/hello', async () => ({ hello: 'world' }))

  await app.register(upstreams, {
    upstreams: [
      { name: 'primary', url: upstreamUrls.primary, protocol: 'openai' },
      { name: 'backup', url: upstreamUrls.backup, protocol: 'openai' },
    ],
    strategies: { 'primary-first': primaryFirst },
    healthChecks: { enabled: false },
  })
  await app.register(router, {
    models: [{ name: 'chat', upstreams: ['primary', 'backup'], strategy: 'primary-first', upstreamModel: 'mock-model' }],
  })

  // A custom usage hook: every request that reached routing, once, with its exact token counts.
  const tokensByModel = new Map<string, number>()
  app.llm.addHook('onUsage', (record: UsageRecord) => {
    tokensByModel.set(record.model, (tokensByModel.get(record.model) ?? 0) + record.totalTokens)
  })
  app.get('/usage', async () => Object.fromEntries(tokensByModel))
  return app
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { startMockUpstream } = await import('@llmproxy/mock-upstream')
  const primary = await startMockUpstream()
  const backup = await startMockUpstream()
  const app = await buildApp({ primary: primary.url, backup: backup.url })
  const url = await app.listen({ port: 8080 })
  console.log(`listening on ${url}: POST ${url}/v1/chat/completions {"model":"chat",…}; GET ${url}/usage`)
}
