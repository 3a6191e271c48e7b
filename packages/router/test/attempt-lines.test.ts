// What an operator reads of failed upstream attempts, from a real gateway's log: one `upstream attempt failed` line per
// failed attempt, the last one included, with the underlying cause; and the TTFT of the answer the client got only.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, type TestContext, test } from 'node:test'
import type { UsageRecord } from '@llmproxy/core'
import { upstreams } from '@llmproxy/upstreams'
import Fastify from 'fastify'
import { router } from '../src/index.js'
import { type Cluster, chatBody, errorOf, type LogLine, readAnswer, send, startCluster } from './failover-helpers.js'
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

describe('a failed attempt has one warn line: the last one too, and a timeout has no other', () => {
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

  test("a 5xx passed on to the client: the last attempt's line, as the earlier ones'", async () => {
    const logs = await linesOf(chatBody('m', { mock: { status: 500 } }))
    assert.deepEqual(
      failedLines(logs).map((line) => [line.upstream, line.failure, line.status]),
      [['a', 'status', 500]],
    )
  })

  for (const [name, stream, mock, error] of [
    ['a stream cut mid-answer', true, { fault: 'cut', faultAfter: 2 }, 'llmproxy_upstream_error'],
    ['a stream stalled mid-answer', true, { fault: 'stall', faultAfter: 2 }, 'llmproxy_upstream_timeout'],
    ['a JSON body cut', false, { fault: 'cut', faultAfter: 2 }, 'llmproxy_upstream_error'],
    ['a JSON body stalled', false, { fault: 'stall', faultAfter: 2 }, 'llmproxy_upstream_timeout'],
  ] as const) {
    test(`${name} after the commit: the attempt's line, as a cut`, async () => {
      const logs = await linesOf(chatBody('m', { stream, mock }))
      assert.deepEqual(
        failedLines(logs).map((line) => [line.upstream, line.failure, line.error]),
        [['a', 'cut', error]],
      )
    })
  }

  test("an in-band error mid-stream: the line carries the upstream's own reason", async () => {
    const logs = await linesOf(chatBody('m', { stream: true, mock: { fault: 'error-event', faultAfter: 2 } }))
    const lines = failedLines(logs)
    assert.deepEqual(
      lines.map((line) => [line.failure, line.error]),
      [['cut', 'llmproxy_upstream_error']],
    )
    assert.match(String(lines[0]?.message), /^The upstream reported an error mid-stream: .+/)
  })
})

test('a continuation that fails too has its own line, with its own failure (the client is told of the first cut)', async (t) => {
  const c = await startCluster({
    mocks: { a: { protocol: 'vllm' }, b: { protocol: 'vllm' } },
    models: [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered' }],
    router: { retry: { attempts: 2 }, timeouts: { idleMs: 300 } },
  })
  t.after(() => c.close())
  c.mock('a').program(() => ({ fault: 'cut', faultAfter: 2 }))
  c.mock('b').program(() => ({ fault: 'stall', faultAfter: 2 }))
  const res = await send(c.url, chatBody('m', { stream: true }))
  assert.equal(readAnswer(res).streamError?.code, 'llmproxy_upstream_error')
  await eventually(() => c.attempts.length === 2, 3000, 'both attempts reported')
  assert.deepEqual(
    failedLines(c.logs).map((line) => [line.upstream, line.failure, line.error]),
    [
      ['a', 'cut', 'llmproxy_upstream_error'],
      ['b', 'cut', 'llmproxy_upstream_timeout'],
    ],
  )
})

describe('TTFT is the answer the client got, for a request that produced one', () => {
  let c: Cluster
  before(async () => {
    c = await startCluster({
      mocks: { same: {}, converted: { protocol: 'anthropic' } },
      models: [
        { name: 'same', upstreams: ['same'] },
        { name: 'converted', upstreams: ['converted'], upstreamModel: 'mock-model' },
      ],
      // responseMs well above the 200 ms answer below: a loaded machine must not turn it into a timeout.
      router: { retry: { attempts: 2, backoffMs: 0 }, timeouts: { responseMs: 1000, idleMs: 300 } },
    })
  })
  after(() => c.close())

  async function recordOf(model: string, program: Record<string, unknown>[]): Promise<[number, UsageRecord]> {
    c.reset()
    let n = 0
    c.mock(model).program(() => program[n++] ?? {})
    const res = await send(c.url, chatBody(model))
    await eventually(() => c.records.length === 1, 3000, 'usage record')
    return [res.status, c.records[0] as UsageRecord]
  }

  test('a converted answer refused once read (malformed, cut, stalled) has none', async () => {
    // (A stall is the timeout it is: a 504 saying how long the upstream was silent, not a lost connection.)
    for (const [fault, expected] of [
      [{ fault: 'malformed' }, 502],
      [{ fault: 'cut', faultAfter: 2 }, 502],
      [{ fault: 'stall', faultAfter: 2 }, 504],
    ] as const) {
      const [status, record] = await recordOf('converted', [fault, fault])
      assert.deepEqual([status, record.ttftMs], [expected, null], JSON.stringify(fault))
      if (fault.fault === 'stall') assert.match(record.error?.message ?? '', /sent nothing for \d+ ms/)
    }
    const [status, record] = await recordOf('converted', [])
    assert.equal(status, 200)
    assert.equal(typeof record.ttftMs, 'number')
  })

  test("a discarded attempt's first chunk is not the request's first token", async () => {
    // The first answer is refused at its first chunk (not JSON), the second never comes.
    const [status, record] = await recordOf('same', [{ fault: 'malformed' }, { fault: 'no-response' }])
    assert.deepEqual([status, record.ttftMs], [504, null])
    // Refused, then answered: the answer's own first token, after the refusal.
    const [answered, ok] = await recordOf('same', [{ fault: 'malformed' }, { ttftMs: 200 }])
    assert.equal(answered, 200)
    assert.ok((ok.ttftMs ?? 0) >= 200, String(ok.ttftMs))
  })
})
