// Credentials in query strings never reach the logs: request lines, error logs, admin logs (on the gateway and on
// the separate admin server).
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { request } from 'undici'
import { parseConfig, type RunningGateway, redactQueryCredentials, startGateway } from '../src/index.js'
import { eventually, logSink } from './helpers.js'

const CLIENT_KEY = 'sk-client-key-in-the-url-0001'
const TOKEN = 'admin-token-in-the-url-000001'

describe('query-string credentials in the logs', () => {
  let mock: MockUpstream
  let gateway: RunningGateway
  const lines: string[] = []
  const logText = () => lines.join('\n')
  before(async () => {
    mock = await startMockUpstream({ defaults: { tokens: 3 } })
    const config = parseConfig(
      JSON.stringify({
        server: { host: '127.0.0.1', port: 0 },
        upstreams: [{ name: 'gemini', url: mock.url, protocol: 'gemini' }],
        models: [{ name: 'gemini-test', upstreams: ['gemini'], upstreamModel: 'gemini-mock' }],
        healthChecks: { enabled: false },
        auth: { keys: [{ id: 'team-a', key: CLIENT_KEY }] },
        admin: { token: TOKEN, port: 0 },
      }),
      'logs test',
    )
    gateway = await startGateway(config, { logDestination: logSink(lines) })
  })
  after(async () => {
    await gateway.shutdown('test over')
    await mock.close()
  })

  const generate = (query: string, headers: Record<string, string>) =>
    request(`${gateway.url}/v1beta/models/gemini-test:generateContent?${query}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'Hi' }] }] }),
    })

  test('?key= on a Gemini request: refused (no other key) and served (with a Bearer key), never logged', async () => {
    const refused = await generate(`key=${CLIENT_KEY}`, {})
    await refused.body.dump()
    assert.equal(refused.statusCode, 401)
    const served = await generate(`key=${CLIENT_KEY}&alt=json`, { authorization: `Bearer ${CLIENT_KEY}` })
    await served.body.dump()
    assert.equal(served.statusCode, 200)
    // Encoded names are names too: `%6Bey` is `key` to whoever parses the query.
    const encoded = await generate(`%6Bey=${CLIENT_KEY}&api_key=${CLIENT_KEY}&access_token=${CLIENT_KEY}`, {})
    await encoded.body.dump()
    await eventually(() => lines.filter((l) => l.includes('"msg":"request"')).length >= 3)
    const requestLines = lines.filter((l) => l.includes('"msg":"request"')).map((l) => JSON.parse(l) as { url: string; status: number })
    assert.deepEqual(
      requestLines.map((l) => [l.status, l.url]),
      [
        [401, '/v1beta/models/gemini-test:generateContent?key=[redacted]'],
        [200, '/v1beta/models/gemini-test:generateContent?key=[redacted]&alt=json'],
        [401, '/v1beta/models/gemini-test:generateContent?%6Bey=[redacted]&api_key=[redacted]&access_token=[redacted]'],
      ],
    )
    assert.ok(!logText().includes(CLIENT_KEY))
  })

  test('?token= on the admin API (refused and accepted, on its own server) is never logged', async () => {
    const admin = gateway.adminUrl as string
    const refused = await request(`${admin}/admin/upstreams?token=${TOKEN}`)
    await refused.body.dump()
    assert.equal(refused.statusCode, 401)
    const accepted = await request(`${admin}/admin/upstreams?token=${TOKEN}&verbose=1`, { headers: { authorization: `Bearer ${TOKEN}` } })
    await accepted.body.dump()
    assert.equal(accepted.statusCode, 200)
    await eventually(() => lines.some((l) => l.includes('/admin/upstreams?token=[redacted]&verbose=1')))
    assert.ok(lines.some((l) => l.includes('admin: refused') && l.includes('?token=[redacted]')))
    // The token is logged nowhere, not even in the Authorization header of the accepted request.
    assert.ok(!logText().includes(TOKEN))
  })

  test('error logs: a message or stack holding a URL with a credential is logged redacted', () => {
    const err = new Error(`upstream call failed: GET https://api.example/v1?alt=sse&access_token=${CLIENT_KEY} (reset)`)
    gateway.app.log.error({ err, url: `/v1beta/models/m:generateContent?key=${CLIENT_KEY}` }, `failed at /x?api-key=${CLIENT_KEY}`)
    const line = lines.at(-1) ?? ''
    assert.ok(!line.includes(CLIENT_KEY), line)
    assert.match(line, /alt=sse&access_token=\[redacted\] \(reset\)/)
  })
})

test('redactQueryCredentials keeps what is not a credential', () => {
  assert.equal(redactQueryCredentials('/v1/chat/completions'), '/v1/chat/completions')
  assert.equal(
    redactQueryCredentials('/x?alt=sse&key=a&Signature=b&X-Amz-Credential=c&page=2'),
    '/x?alt=sse&key=[redacted]&Signature=[redacted]&X-Amz-Credential=[redacted]&page=2',
  )
  assert.equal(redactQueryCredentials('/x?%ZZ=undecodable'), '/x?%ZZ=[redacted]')
})
