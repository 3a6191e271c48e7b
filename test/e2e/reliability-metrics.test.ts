// What an operator sees of the gateway's reliability work on /metrics, through the reference gateway on a real
// socket: a stream cut mid-way and finished by the other upstream counts as a completed resume; one that nothing can
// finish counts as failed; a request sent while every upstream of the pool is out counts as a panic pick.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { buildGateway, parseConfig } from '@llmproxy/server'
import type { FastifyInstance } from 'fastify'
import OpenAI from 'openai'
import { pollUntil } from './http-helpers.js'
import { metricValue } from './usage-helpers.js'

let a: MockUpstream
let b: MockUpstream
let app: FastifyInstance
let url: string

before(async () => {
  a = await startMockUpstream({ defaults: { tokens: 12 } })
  b = await startMockUpstream({ defaults: { tokens: 12 } })
  const config = parseConfig(
    JSON.stringify({
      server: { host: '127.0.0.1', port: 0, logLevel: 'silent' },
      upstreams: [
        { name: 'a', url: a.url, protocol: 'vllm' },
        { name: 'b', url: b.url, protocol: 'vllm' },
      ],
      models: [{ name: 'm', upstreams: ['a', 'b'], upstreamModel: 'mock-model', strategy: 'round-robin' }],
      timeouts: { firstTokenMs: 2000, idleMs: 300 },
      retry: { attempts: 3, backoffMs: 20 },
      healthChecks: { enabled: false },
      passiveHealth: { failuresToEject: 1, baseEjectionMs: 60_000, maxEjectionMs: 60_000 },
    }),
    'e2e-reliability-metrics',
  )
  app = await buildGateway(config)
  url = await app.listen({ host: '127.0.0.1', port: 0 })
})

after(async () => {
  await app?.close()
  await Promise.all([a?.close(), b?.close()])
})

/** The value of one series of /metrics (0 when absent). */
async function metric(name: string, labels: string): Promise<number> {
  return metricValue(await (await fetch(`${url}/metrics`)).text(), name, labels) || 0
}

async function streamText(client: OpenAI): Promise<string> {
  const stream = await client.chat.completions.create({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] })
  let text = ''
  for await (const part of stream) text += part.choices[0]?.delta.content ?? ''
  return text
}

test('a cut stream finished elsewhere is a completed resume; one nothing can finish is a failed resume; panic picks', async () => {
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 })
  // Whichever upstream the first request goes to cuts it after 4 tokens; the other finishes it.
  let cuts = 1
  const cutOnce = () => (cuts-- > 0 ? { fault: 'cut' as const, faultAfter: 4 } : undefined)
  a.program(cutOnce)
  b.program(cutOnce)
  const whole = await streamText(client)
  assert.equal(whole.length > 0, true)
  await pollUntil(
    () => metric('llmproxy_stream_resumes_total', 'model="m",outcome="completed"'),
    (v) => v === 1,
    'a completed resume',
  )
  assert.equal(await metric('llmproxy_stream_resumes_total', 'model="m",outcome="failed"'), 0)

  // One upstream was ejected by the cut (failuresToEject: 1), so the other serves; now both cut every stream: the
  // continuation fails too, and the client sees an error, not a truncated answer.
  a.program(() => ({ fault: 'cut', faultAfter: 4 }))
  b.program(() => ({ fault: 'cut', faultAfter: 4 }))
  await assert.rejects(streamText(client))
  await pollUntil(
    () => metric('llmproxy_stream_resumes_total', 'model="m",outcome="failed"'),
    (v) => v === 1,
    'a failed resume',
  )

  // Both upstreams are ejected now: the pool is in panic and still sends requests (its strategy balancing among them).
  a.program(null)
  b.program(null)
  assert.ok((await streamText(client)).length > 0)
  const picks =
    (await metric('llmproxy_upstream_panic_picks_total', 'upstream="a"')) +
    (await metric('llmproxy_upstream_panic_picks_total', 'upstream="b"'))
  assert.ok(picks >= 1, `panic picks ${picks}`)
})
