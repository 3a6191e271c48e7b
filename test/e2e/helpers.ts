import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { buildGateway, parseConfig } from '@llmproxy/server'
import type { FastifyInstance } from 'fastify'

export interface TestGateway {
  app: FastifyInstance
  url: string
  mock: MockUpstream
  close(): Promise<void>
}

/** The reference gateway (quiet logs) in front of one mock upstream, with extra config sections. */
export async function startGatewayWithMock(extra: Record<string, unknown> = {}): Promise<TestGateway> {
  const mock = await startMockUpstream({ defaults: { tokens: 5 } })
  try {
    const config = parseConfig(
      JSON.stringify({
        server: { host: '127.0.0.1', port: 0, logLevel: 'silent' },
        upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
        models: [{ name: 'gpt-test', aliases: ['alias-test'], upstreams: ['mock'], upstreamModel: 'mock-model' }],
        healthChecks: { enabled: false },
        passiveHealth: { failuresToEject: 1000 },
        ...extra,
      }),
      'e2e',
    )
    const app = await buildGateway(config)
    const url = await app.listen({ port: 0, host: '127.0.0.1' })
    return {
      app,
      url,
      mock,
      async close() {
        await app.close()
        await mock.close()
      },
    }
  } catch (err) {
    await mock.close()
    throw err
  }
}
