import type { UsageRecord } from '@llmproxy/core'
import { type MockBehavior, type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { upstreams } from '@llmproxy/upstreams'
import Fastify, { type FastifyInstance } from 'fastify'
import { type RouterOptions, router } from '../src/index.js'

export interface Harness {
  app: FastifyInstance
  url: string
  mock: MockUpstream
  records: UsageRecord[]
  close(): Promise<void>
}

export interface HarnessOptions {
  mock?: MockBehavior
  router?: Partial<RouterOptions>
  apiKey?: string
}

/** A real gateway (upstreams + router) in front of a real mock upstream, both on loopback sockets. */
export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const mock = await startMockUpstream({ defaults: { tokens: 5, ...options.mock } })
  const app = Fastify({ logger: false })
  await app.register(upstreams, {
    upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai', ...(options.apiKey ? { apiKey: options.apiKey } : {}) }],
    healthChecks: { enabled: false },
    // These tests provoke failures on purpose; passive ejection has its own tests in @llmproxy/upstreams.
    passive: { failuresToEject: 1000 },
  })
  await app.register(router, {
    models: [{ name: 'gpt-test', aliases: ['alias-test'], upstreams: ['mock'], upstreamModel: 'mock-model' }],
    retry: { attempts: 1 },
    ...options.router,
  })
  const records: UsageRecord[] = []
  app.llm.addHook('onUsage', (record) => {
    records.push(record)
  })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  return {
    app,
    url,
    mock,
    records,
    async close() {
      await app.close()
      await mock.close()
    },
  }
}

export function chat(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'Hello there' }], ...extra })
}

export { eventually, parseSse, type SseEvent } from '@llmproxy/mock-upstream'
