import { strict as assert } from 'node:assert'
import { test } from 'node:test'
import { signPayload, type UsageRecord } from '@llmproxy/usage'
import { startReceiver } from '../src/receiver.js'

const record: UsageRecord = {
  id: 'rec-1',
  timestamp: new Date().toISOString(),
  requestId: 'req-1',
  keyId: 'team-a',
  model: 'qwen-7b',
  upstreamModel: 'Qwen/Qwen2.5-7B-Instruct',
  upstream: 'vllm-a',
  protocol: 'openai',
  clientApi: 'openai',
  stream: false,
  status: 200,
  promptTokens: 11,
  completionTokens: 22,
  totalTokens: 33,
  estimated: false,
  ttftMs: null,
  durationMs: 120,
  attempts: 1,
  resumed: false,
  clientAborted: false,
}

test('a signed batch is accepted and counted once even when delivered twice; a bad signature gets 401', async (t) => {
  const receiver = await startReceiver({ port: 0, secret: 'whsec' })
  t.after(() => receiver.close())
  const url = `http://127.0.0.1:${receiver.port}/usage`
  const body = JSON.stringify({ records: [record] })
  for (let i = 0; i < 2; i++) {
    const res = await fetch(url, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json', 'x-llmproxy-signature': signPayload('whsec', body), 'x-llmproxy-delivery': 'd-1' },
    })
    assert.equal(res.status, 200)
    assert.deepEqual(await res.json(), { received: 1 })
  }
  assert.deepEqual(receiver.totals.get('team-a'), { requests: 1, promptTokens: 11, completionTokens: 22, totalTokens: 33 })

  const bad = await fetch(url, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json', 'x-llmproxy-signature': signPayload('wrong', body) },
  })
  assert.equal(bad.status, 401)
  await bad.arrayBuffer()
  const unsigned = await fetch(url, { method: 'POST', body })
  assert.equal(unsigned.status, 401)
  await unsigned.arrayBuffer()
  assert.equal(receiver.totals.get('team-a')?.requests, 1)
})
