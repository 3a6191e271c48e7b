// What an operator reads of failed upstream attempts, from a real gateway's log: one `upstream attempt failed` line per
// failed attempt, the last one included, with the underlying cause; and the TTFT of the answer the client got only.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, type TestContext, test } from 'node:test'
import { upstreams } from '@llmproxy/upstreams'
import Fastify from 'fastify'
import { router } from '../src/index.js'
import { type Cluster, chatBody, errorOf, type LogLine, send, startCluster } from './failover-helpers.js'
import { eventually } from './helpers.js'

const failedLines = (logs: LogLine[]) => logs.filter((line) => line.msg === 'upstream attempt failed')

test("a connection that failed is logged with its underlying code, not reply-from's wrapper; a DNS failure says so", async (t: TestContext) => {
  // A port nothing listens on, a name no resolver knows (RFC 6761), and an https upstream that answers in plain HTTP.
  const closed = createServer()
  closed.listen(0, '127.0.0.1')
  await once(closed, 'listening')
  const refusedPort = (closed.address() as AddressInfo).port
  await new Promise((resolve) => closed.close(resolve))
  const plain = createServer((_req, res) => res.end('{}'))
  plain.listen(0, '127.0.0.1')
  await once(plain, 'listening')
  const logs: LogLine[] = []
  const app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => logs.push(JSON.parse(line)) } } })
  t.after(async () => {
    await app.close()
    plain.close()
  })
  await app.register(upstreams, {
    upstreams: [
      { name: 'refused', url: `http://127.0.0.1:${refusedPort}`, protocol: 'openai' },
      { name: 'nxdomain', url: 'http://no-such-host.invalid:8000', protocol: 'openai' },
      { name: 'tls', url: `https://127.0.0.1:${(plain.address() as AddressInfo).port}`, protocol: 'openai' },
    ],
    healthChecks: { enabled: false },
  })
  await app.register(router, {
    models: ['refused', 'nxdomain', 'tls'].map((name) => ({ name, upstreams: [name] })),
    retry: { attempts: 1 },
  })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  const seen: Record<string, [number, string, unknown, unknown]> = {}
  for (const model of ['refused', 'nxdomain', 'tls']) {
    const res = await send(url, chatBody(model))
    await eventually(() => failedLines(logs).some((line) => line.upstream === model), 2000, `${model}'s line`)
    const line = failedLines(logs).find((l) => l.upstream === model) as LogLine
    seen[model] = [res.status, errorOf(res).message, line.failure, line.cause]
  }
  assert.deepEqual(seen.refused, [503, 'The upstream refused the connection.', 'connect', 'ECONNREFUSED'])
  // (A resolver that cannot answer says EAI_AGAIN.)
  const [status, message, failure, cause] = seen.nxdomain ?? []
  assert.deepEqual([status, message, failure], [503, "The upstream's host name could not be resolved.", 'connect'])
  assert.ok(cause === 'ENOTFOUND' || cause === 'EAI_AGAIN', String(cause))
  assert.deepEqual(seen.tls, [502, 'The upstream connection failed before a response.', 'connect', 'ERR_SSL_WRONG_VERSION_NUMBER'])
})

describe('a failed attempt has one warn line: a timeout has no other', () => {
  let c: Cluster
  before(async () => {
    c = await startCluster({
      mocks: { a: {} },
      models: [{ name: 'm', upstreams: ['a'], resume: false }],
      router: { retry: { attempts: 1 }, timeouts: { responseMs: 300, firstTokenMs: 300, idleMs: 300 } },
    })
  })
  after(() => c.close())

  /** The gateway's warn lines of a request whose one attempt fails, once that attempt is reported. */
  async function linesOf(body: Record<string, unknown>): Promise<LogLine[]> {
    c.reset()
    // (A JSON answer failing after its commit is cut: the client reads a reset.)
    await send(c.url, body).catch(() => null)
    await eventually(() => c.attempts.length === 1, 3000, 'the attempt reported')
    assert.notEqual(c.attempts[0]?.result, 'ok')
    return c.logs
  }

  test("no headers within responseMs: the attempt line alone, not reply-from's `response errored` with a stack", async () => {
    const logs = await linesOf(chatBody('m', { mock: { fault: 'no-response' } }))
    assert.deepEqual(
      logs.map((line) => [line.msg, line.failure, line.error, line.cause]),
      [['upstream attempt failed', 'timeout', 'llmproxy_upstream_timeout', undefined]],
    )
  })
})
