import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { type Config, parseConfig } from './config.js'

/**
 * The built-in demo: an embedded mock LLM (streams tokens 40 ms apart after a 150 ms "prefill") and a
 * config routing `demo` (alias `gpt-4o-mini`) to it, so `curl` streams at once with no other setup.
 */
export async function startDemo(port: number, host: string): Promise<{ config: Config; mock: MockUpstream }> {
  const mock = await startMockUpstream({
    port: 0,
    host: '127.0.0.1',
    defaults: { ttftMs: 150, gapMs: 40, tokens: 24 },
    models: ['demo-model'],
    record: false,
  })
  const config = parseConfig(
    JSON.stringify({
      server: { host, port },
      upstreams: [{ name: 'demo-mock', url: mock.url, protocol: 'openai' }],
      models: [{ name: 'demo', aliases: ['gpt-4o-mini'], upstreams: ['demo-mock'], upstreamModel: 'demo-model' }],
    }),
    'built-in demo',
  )
  return { config, mock }
}
