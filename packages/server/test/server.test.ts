import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { type AddressInfo, connect, createServer as createTcpServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { rawExchange } from '@llmproxy/mock-upstream'
import { request } from 'undici'
import { parseConfig, startGateway } from '../src/index.js'
import { eventually, readOnlyDirectory, type ServerHarness, startServer } from './helpers.js'

const chat = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'Hi' }], ...extra })

describe('the reference server', () => {
  let h: ServerHarness
  before(async () => {
    h = await startServer({ server: 'headersTimeoutMs: 300, requestTimeoutMs: 600, keepAliveTimeoutMs: 200', extraYaml: 'bodyLimit: 4096' })
  })
  after(() => h.close())

  test('x-request-id is accepted from the client, returned, and sent upstream', async () => {
    h.mock.reset()
    const res = await request(`${h.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'client-id-42' },
      body: chat(),
    })
    await res.body.text()
    assert.equal(res.headers['x-request-id'], 'client-id-42')
    assert.equal(h.mock.requests[0]?.headers['x-request-id'], 'client-id-42')
  })

  test('a request id is generated when absent or unsafe', async () => {
    const res = await request(`${h.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'bad id\twith "quotes"' },
      body: chat(),
    })
    await res.body.text()
    assert.match(String(res.headers['x-request-id']), /^[0-9a-f-]{36}$/)
  })

  test('one structured log line per request, with model, upstream, TTFT, tokens and no secrets', async () => {
    h.logs.length = 0
    const res = await request(`${h.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer sk-client-secret-value' },
      body: chat({ stream: true }),
    })
    await res.body.text()
    // A request after it, whose line comes after anything the first one logs when its response finishes.
    await (await request(`${h.url}/healthz`)).body.text()
    await eventually(() => h.logs.some((l) => l.msg === 'request' && l.url === '/healthz'))
    const lines = h.logs.filter((l) => l.msg === 'request' && l.url !== '/healthz')
    assert.equal(lines.length, 1)
    const line = lines[0] as Record<string, unknown>
    assert.equal(line.model, 'gpt-test')
    assert.equal(line.upstream, 'mock')
    assert.equal(line.status, 200)
    assert.equal(typeof line.ttftMs, 'number')
    assert.equal(typeof line.durationMs, 'number')
    assert.equal(line.completionTokens, 5)
    assert.equal(line.attempts, 1)
    assert.equal(line.resumed, false)
    assert.equal(typeof line.reqId, 'string')
    assert.ok(!h.logText().includes('sk-client-secret-value'))
    assert.ok(!h.logText().includes('sk-upstream-secret-value'))
  })

  test('a request answered without a usage record (refused, or estimated) has its line, with its error code, and its id', async () => {
    h.logs.length = 0
    h.mock.reset()
    const refusals: [string, string, string][] = [
      ['/v1/chat/completions', '{bad', 'llmproxy_invalid_json'],
      ['/v1/chat/completions', chat({ model: 'nope' }), 'model_not_found'],
      // The model is known (resolved) but not served on this route: no usage record, still a line.
      ['/v1/messages/count_tokens', JSON.stringify({ model: 'gpt-test', messages: [] }), ''],
    ]
    for (const [path, body, code] of refusals) {
      const res = await request(`${h.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-request-id': `refused-${code || 'estimate'}` },
        body,
      })
      await res.body.text()
      assert.equal(res.headers['x-request-id'], `refused-${code || 'estimate'}`, path)
    }
    await eventually(() => h.logs.filter((l) => l.msg === 'request').length >= refusals.length)
    const lines = h.logs.filter((l) => l.msg === 'request').map((l) => [l.reqId, l.status, l.error, l.model])
    assert.deepEqual(lines, [
      ['refused-llmproxy_invalid_json', 400, 'llmproxy_invalid_json', undefined],
      ['refused-model_not_found', 404, 'model_not_found', 'nope'],
      ['refused-estimate', 200, undefined, 'gpt-test'],
    ])
    assert.equal(h.mock.requests.length, 0)
  })

  test('a client that leaves while sending its body, or while its request is routed, has one line and one observation each', async () => {
    h.logs.length = 0
    h.mock.reset()
    const aborted = async () => {
      const text = await (await request(`${h.url}/metrics`)).body.text()
      const count = /^http_request_duration_seconds_count\{method="POST",route="\/v1\/chat\/completions",status_code="0"\} (\d+)$/m
      return Number(count.exec(text)?.[1] ?? 0)
    }
    const before = await aborted()
    const { hostname, port } = new URL(h.url)
    const leaveAfter = async (head: string, body: string, until: () => Promise<unknown>) => {
      const socket = connect(Number(port), hostname)
      socket.on('error', () => {})
      socket.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n${head}\r\n${body}`)
      await until()
      socket.destroy()
    }
    // Half of its body sent.
    await leaveAfter('x-request-id: left-in-body\r\ncontent-length: 100\r\n', '{"model":"gpt-test",', () => sleep(100))
    // Its whole body sent, routed, waiting for the upstream's answer.
    const routed = chat({ mock: { ttftMs: 5000 } })
    await leaveAfter(`x-request-id: left-when-routed\r\ncontent-length: ${Buffer.byteLength(routed)}\r\n`, routed, () =>
      h.mock.waitForRequests(1),
    )
    const lineOf = (id: string) => h.logs.filter((l) => l.msg === 'request' && l.reqId === id)
    await eventually(() => lineOf('left-in-body').length > 0 && lineOf('left-when-routed').length > 0)
    // Anything else they would log has come by the time a later request has its line.
    await (await request(`${h.url}/healthz`)).body.text()
    await eventually(() => h.logs.some((l) => l.msg === 'request' && l.url === '/healthz'))
    assert.deepEqual(
      lineOf('left-in-body').map((l) => [l.status, l.clientAborted, typeof l.durationMs]),
      [[0, true, 'number']],
    )
    assert.deepEqual(
      lineOf('left-when-routed').map((l) => [l.status, l.clientAborted, l.model]),
      [[0, true, 'gpt-test']],
    )
    assert.equal(await aborted(), before + 2)
  })

  test('unknown paths and methods answer 404 in the OpenAI shape and reach no upstream', async () => {
    h.mock.reset()
    for (const [method, path] of [
      ['GET', '/v1/chat/completions'],
      ['POST', '/v1/other'],
      ['POST', '/v1/chat/completions/../../admin'],
      ['POST', '/v1/chat/completions/%2e%2e/%2e%2e/admin'],
      ['POST', '/admin'],
    ] as const) {
      const res = await request(`${h.url}${path}`, {
        method,
        headers: { 'content-type': 'application/json' },
        body: method === 'GET' ? undefined : chat(),
      })
      const body = (await res.body.json()) as { error: { code: string } }
      assert.equal(res.statusCode, 404, `${method} ${path}`)
      assert.equal(body.error.code, 'llmproxy_not_found')
    }
    assert.equal(h.mock.requests.length, 0)
  })

  test('an absolute-URI request target cannot choose the upstream', async () => {
    h.mock.reset()
    const body = chat()
    const response = await rawExchange(
      h.url,
      `POST http://169.254.169.254/v1/chat/completions HTTP/1.1\r\nhost: 169.254.169.254\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    )
    // Either it is served by the configured upstream (the host is ignored), or refused; never sent elsewhere.
    assert.match(response, /^HTTP\/1\.1 (200|400|404)/)
    for (const seen of h.mock.requests) assert.equal(seen.path, '/v1/chat/completions')
  })

  test('a 413 reaches a client that is still sending its body', async () => {
    const response = await new Promise<string>((resolve, reject) => {
      const { hostname, port } = new URL(h.url)
      const socket = connect(Number(port), hostname)
      let out = ''
      let sending: NodeJS.Timeout | undefined
      socket.on('data', (d: Buffer) => {
        out += d.toString()
      })
      socket.on('error', () => {
        clearInterval(sending)
        resolve(out)
      })
      socket.on('close', () => {
        clearInterval(sending)
        resolve(out)
      })
      socket.setTimeout(5000, () => reject(new Error(`no answer: ${out}`)))
      socket.write(
        'POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n\r\n{"model":"gpt-test","pad":"',
      )
      // Keep sending while the server answers.
      sending = setInterval(() => {
        if (!socket.destroyed) socket.write('x'.repeat(16 * 1024))
      }, 5)
    })
    assert.match(response, /^HTTP\/1\.1 413/)
    assert.match(response, /llmproxy_body_too_large/)
  })

  test('an oversized body to a path the router does not serve gets its 413, and the client can send all of it', async () => {
    const body = Buffer.alloc(20 * 1024 * 1024, 'a')
    const events = await new Promise<string[]>((resolve) => {
      const seen: string[] = []
      const req = httpRequest(
        `${h.url}/v1/not-a-route`,
        { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': body.length } },
        (res) => {
          seen.push(`${res.statusCode}`)
          res.resume()
        },
      )
      // Closed under the client while it sends, its write fails (EPIPE) even after it read the answer.
      req.on('error', (err: NodeJS.ErrnoException) => seen.push(`error ${err.code}`))
      req.on('close', () => resolve(seen))
      req.end(body)
    })
    assert.deepEqual(events, ['413'])
  })

  test('a client that sends its headers too slowly is disconnected', async () => {
    const { hostname, port } = new URL(h.url)
    const started = Date.now()
    const closed = await new Promise<number>((resolve) => {
      const socket = connect(Number(port), hostname)
      socket.write('POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n')
      socket.on('data', () => {})
      socket.on('error', () => {})
      socket.on('close', () => resolve(Date.now() - started))
    })
    assert.ok(closed < 3000, `closed after ${closed} ms`)
  })

  test('a client that sends its body too slowly is disconnected', async () => {
    const { hostname, port } = new URL(h.url)
    const started = Date.now()
    const result = await new Promise<{ ms: number; out: string }>((resolve) => {
      const socket = connect(Number(port), hostname)
      let out = ''
      socket.write('POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"mod')
      socket.on('data', (d: Buffer) => {
        out += d.toString()
      })
      socket.on('error', () => {})
      socket.on('close', () => resolve({ ms: Date.now() - started, out }))
    })
    assert.ok(result.ms < 3000, `closed after ${result.ms} ms`)
  })

  test("what Node or Fastify refuse before a route runs gets a catalogue error in the route API's shape", async () => {
    const json = 'content-type: application/json; charset=utf-8'
    const cases: [string, string, number, string][] = [
      ['malformed', 'GARBAGE\r\n\r\n', 400, 'llmproxy_malformed_request'],
      ['headers too large', `GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'llmproxy_headers_too_large'],
      [
        'body too slow',
        'POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{',
        408,
        'llmproxy_request_timeout',
      ],
      ['bad percent-encoding', 'GET /v1/chat/%E0%A4%A HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n', 400, 'llmproxy_invalid_url'],
    ]
    for (const [name, raw, status, code] of cases) {
      const response = await rawExchange(h.url, raw)
      assert.match(response, new RegExp(`^HTTP/1\\.1 ${status} `), name)
      assert.ok(response.toLowerCase().includes(json), `${name}: ${response}`)
      const body = JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4)) as { error: { code: string; type: string } }
      assert.equal(body.error.code, code, name)
      assert.equal(body.error.type, 'invalid_request_error', name)
    }
    // On a Gemini route, Gemini's shape: the HTTP status as `code`, the catalogue code as the ErrorInfo reason.
    const tooLong = `POST /v1beta/models/${'y'.repeat(200)}:generateContent HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`
    const response = await rawExchange(h.url, tooLong)
    assert.match(response, /^HTTP\/1\.1 414 /)
    const body = JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4)) as {
      error: { code: number; status: string; details: { reason: string }[] }
    }
    assert.equal(body.error.code, 414)
    assert.equal(body.error.status, 'INVALID_ARGUMENT')
    assert.equal(body.error.details[0]?.reason, 'llmproxy_url_too_long')
  })

  test('idle keep-alive connections are closed', async () => {
    const { hostname, port } = new URL(h.url)
    const started = Date.now()
    const ms = await new Promise<number>((resolve) => {
      const socket = connect(Number(port), hostname)
      socket.write('GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n')
      socket.on('data', () => {})
      socket.on('error', () => {})
      socket.on('close', () => resolve(Date.now() - started))
    })
    assert.ok(ms < 3000, `closed after ${ms} ms`)
  })

  test('/healthz and /readyz', async () => {
    const live = await request(`${h.url}/healthz`)
    assert.equal(live.statusCode, 200)
    await live.body.dump()
    const ready = await request(`${h.url}/readyz`)
    assert.equal(ready.statusCode, 200)
    assert.deepEqual(await ready.body.json(), { status: 'ready' })
  })

  test('the gateway still serves after all that', async () => {
    const res = await request(`${h.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: chat(),
    })
    assert.equal(res.statusCode, 200)
    await res.body.json()
  })
})

test('a port in use or a host that is not this machine stops the start with the setting named', async () => {
  const blocker = createTcpServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  const port = (blocker.address() as AddressInfo).port
  const configWith = (server: string) =>
    parseConfig(
      `server: { ${server} }\nupstreams: [{ name: a, url: "http://127.0.0.1:9", protocol: openai }]\nmodels: [{ name: m, upstreams: [a] }]\nhealthChecks: { enabled: false }\n`,
      'listen-test',
      {},
    )
  try {
    await assert.rejects(startGateway(configWith(`host: 127.0.0.1, port: ${port}, logLevel: silent`)), {
      name: 'ConfigError',
      message: `Invalid listen address:\n  - /server/port: ${port} is already in use on 127.0.0.1`,
    })
    await assert.rejects(startGateway(configWith('host: 192.0.2.1, port: 0, logLevel: silent')), {
      message: 'Invalid listen address:\n  - /server/host: 192.0.2.1 is not an address of this machine',
    })
    await assert.rejects(startGateway(configWith('host: no-such-host.invalid, port: 0, logLevel: silent')), {
      message: 'Invalid listen address:\n  - /server/host: no-such-host.invalid does not resolve to an address',
    })
  } finally {
    await new Promise((resolve) => blocker.close(resolve))
  }
})

/** A gateway config with `extra` (YAML) added, for the tests of the paths it writes. */
const configWith = (extra: string) =>
  parseConfig(
    `server: { host: 127.0.0.1, port: 0, logLevel: silent }\nupstreams: [{ name: a, url: "http://127.0.0.1:9", protocol: openai }]\nmodels: [{ name: m, upstreams: [a] }]\nhealthChecks: { enabled: false }\n${extra}\n`,
    'paths-test',
    {},
  )

test('a quota state file or spool directory it cannot use stops the start, named as in the config file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-start-paths-'))
  try {
    // A directory where the file goes: was a bare EISDIR and its stack trace.
    const keys = 'auth: { keys: [{ id: k, key: sk-k-0123456789, quota: { tokens: 1000, per: day } }] }'
    await assert.rejects(startGateway(configWith(`${keys}\nrateLimit: { quotaStateFile: "${dir}" }`), { configFile: 'gateway.yaml' }), {
      name: 'ConfigError',
      message: 'Invalid config gateway.yaml:\n  - /rateLimit/quotaStateFile: cannot be read: EISDIR',
    })
    // A plugin's own path (/spoolDir) is the config's (/usage/spoolDir).
    const file = join(dir, 'a-file')
    writeFileSync(file, '')
    await assert.rejects(
      startGateway(configWith(`usage: { webhook: { url: "http://127.0.0.1:9/usage" }, spoolDir: "${file}/spool" }`)),
      (err: Error) => {
        assert.equal(err.name, 'ConfigError')
        assert.match(err.message, /^Invalid config:\n {2}- \/usage\/spoolDir: cannot be used: ENOTDIR/)
        return true
      },
    )
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('a quota state file no save could write stops the start, named as in the config file, with the reason', async (t) => {
  const keys = 'auth: { keys: [{ id: k, key: sk-k-0123456789, quota: { tokens: 1000, per: day } }] }'
  const refusal = (quotaStateFile: string) =>
    startGateway(configWith(`${keys}\nrateLimit: { quotaStateFile: "${quotaStateFile}" }`), { configFile: 'gateway.yaml' }).then(
      () => assert.fail(`started with quotaStateFile ${quotaStateFile}`),
      (err: Error) => {
        assert.equal(err.name, 'ConfigError')
        return err.message
      },
    )
  // sysfs, where no process creates a file (root neither): it was accepted, every save failed (an error line every
  // 5 s, the one at shutdown too) and quotas started from zero at each start.
  assert.match(
    await refusal('/sys/llmproxy-quota.json'),
    /^Invalid config gateway\.yaml:\n {2}- \/rateLimit\/quotaStateFile: cannot be written: E(ACCES|ROFS|PERM) \(.*'\/sys\/llmproxy-quota\.json\.\d+\.tmp'\)$/,
  )
  const readOnly = readOnlyDirectory(t)
  if (readOnly === null) {
    t.diagnostic('mounting a read-only tmpfs needs root on Linux: the read-only filesystem is not tried')
    return
  }
  // A container's read-only root: the file, and a directory to make for it.
  assert.equal(
    await refusal(join(readOnly, 'quota.json')),
    `Invalid config gateway.yaml:\n  - /rateLimit/quotaStateFile: cannot be written: EROFS (EROFS: read-only file system, open '${join(readOnly, `quota.json.${process.pid}.tmp`)}')`,
  )
  assert.equal(
    await refusal(join(readOnly, 'state/quota.json')),
    `Invalid config gateway.yaml:\n  - /rateLimit/quotaStateFile: cannot be written: EROFS (EROFS: read-only file system, mkdir '${join(readOnly, 'state')}')`,
  )
})

test('a spool directory on a read-only filesystem is refused as EROFS, the reason, not ENOENT', async (t) => {
  const readOnly = readOnlyDirectory(t)
  if (readOnly === null) {
    t.skip('mounting a read-only tmpfs needs root on Linux')
    return
  }
  // Its parent exists: Node's recursive mkdir said ENOENT, which sent the operator looking for a missing directory.
  for (const spoolDir of [join(readOnly, 'usage'), join(readOnly, 'usage/spool')]) {
    await assert.rejects(startGateway(configWith(`usage: { webhook: { url: "http://127.0.0.1:9/usage" }, spoolDir: "${spoolDir}" }`)), {
      name: 'ConfigError',
      message: `Invalid config:\n  - /usage/spoolDir: cannot be used: EROFS (EROFS: read-only file system, mkdir '${join(readOnly, 'usage')}')`,
    })
  }
})
