// The metrics' `model` label is the model as configured, not the name a client sent: an alias pattern (`gpt-*`) lets
// any key send endless names, which filled `maxLabelValues` and reported every model first used after them as
// `other`. The usage record keeps the client's name (what billing reads). The reference gateway on real sockets.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { UsageRecord } from '@llmproxy/core'
import { startGatewayWithMock, type TestGateway } from './helpers.js'
import { metricValue } from './usage-helpers.js'

let gateway: TestGateway
const records: UsageRecord[] = []

before(async () => {
  gateway = await startGatewayWithMock({
    models: [
      { name: 'gpt-test', aliases: ['alias-test', 'gpt-*'], upstreams: ['mock'], upstreamModel: 'mock-model' },
      { name: 'other-model', upstreams: ['mock'], upstreamModel: 'mock-model' },
    ],
    metrics: { maxLabelValues: 4 },
  })
  gateway.app.llm.addHook('onUsage', (record) => {
    records.push(record)
  })
})

after(() => gateway.close())

const ask = (model: string) =>
  fetch(`${gateway.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
  })

test('names an alias pattern matched are labelled by the pattern: invented names do not use up the label budget', async () => {
  for (let i = 1; i <= 10; i++) assert.equal((await ask(`gpt-junk${i}`)).status, 200)
  for (const model of ['gpt-test', 'alias-test', 'other-model']) assert.equal((await ask(model)).status, 200)
  const metrics = await (await fetch(`${gateway.url}/metrics`)).text()
  const labels = new Set(metrics.match(/model="[^"]*"/g))
  assert.deepEqual([...labels].sort(), ['model="alias-test"', 'model="gpt-*"', 'model="gpt-test"', 'model="other-model"'])
  assert.equal(metricValue(metrics, 'llmproxy_requests_total', 'model="gpt-*",upstream="mock",status="200"'), 10)
  assert.equal(metricValue(metrics, 'llmproxy_requests_total', 'model="other-model",upstream="mock",status="200"'), 1)
  // The usage records keep the names the client sent.
  assert.deepEqual(
    records.slice(0, 2).map((r) => r.model),
    ['gpt-junk1', 'gpt-junk2'],
  )
})
