// Request bodies over real sockets: oversized ones, deep nesting, content codings (src/body.ts).
import assert from 'node:assert/strict'
import { request as httpRequest } from 'node:http'
import { Writable } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib'
import compress from '@fastify/compress'
import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { upstreams } from '@llmproxy/upstreams'
import Fastify, { type FastifyInstance } from 'fastify'
import { request } from 'undici'
import { MAX_JSON_DEPTH } from '../src/body.js'
import { router } from '../src/index.js'
import { chat } from './helpers.js'

interface Gateway {
  app: FastifyInstance
  url: string
  mock: MockUpstream
  /** Every log line, parsed. */
  logs: { level: number; msg: string }[]
  close(): Promise<void>
}

interface GatewayOptions {
  bodyLimit?: number
  /** @fastify/compress (its defaults) at the root, the gateway in its own context: examples/existing-app's layout. */
  compress?: boolean
}

/** Upstreams + router with a real logger (the tests check what is logged), in front of the mock. */
async function startGateway({ bodyLimit, compress: withCompress = false }: GatewayOptions = {}): Promise<Gateway> {
  const mock = await startMockUpstream({ defaults: { tokens: 3 } })
  const logs: { level: number; msg: string }[] = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n')) if (line !== '') logs.push(JSON.parse(line))
      callback()
    },
  })
  const app = Fastify({ logger: { level: 'info', stream } }) as unknown as FastifyInstance
  const gateway = async (scope: FastifyInstance): Promise<void> => {
    await scope.register(upstreams, { upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }], healthChecks: { enabled: false } })
    await scope.register(router, {
      models: [{ name: 'gpt-test', upstreams: ['mock'], upstreamModel: 'mock-model' }],
      ...(bodyLimit === undefined ? {} : { bodyLimit }),
    })
  }
  if (withCompress) {
    await app.register(compress)
    await app.register(gateway)
  } else await gateway(app)
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  return {
    app,
    url,
    mock,
    logs,
    async close() {
      await app.close()
      await mock.close()
    },
  }
}

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  json: { error: { code: string; message: string } }
}

async function post(url: string, body: string | Buffer, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await request(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body,
  })
  return { status: res.statusCode, headers: res.headers, json: (await res.body.json()) as Answer['json'] }
}

const MB = 1024 * 1024
const BIG = Buffer.alloc(55 * MB, 'a')

/**
 * Node's http client, the body sent whole (content-length) or in 1 MB chunks (chunked); with `close`, without an
 * agent (the request says `Connection: close`). Settles when the request closes: a connection closed under the
 * client fails its writes (EPIPE, ECONNRESET), even when it read the answer first.
 */
function nodeClient(url: string, chunked: boolean, close = false): Promise<string> {
  return new Promise((resolve, reject) => {
    let answer = 'no answer'
    let failure: Error | null = null
    const req = httpRequest(
      `${url}/v1/chat/completions`,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(chunked ? {} : { 'content-length': BIG.length }) },
        ...(close ? { agent: false } : {}),
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          text += chunk
        })
        res.on('end', () => {
          answer = `${res.statusCode} ${JSON.parse(text).error.code}`
        })
      },
    )
    req.on('error', (err) => {
      failure ??= err
    })
    req.on('close', () => (failure === null ? resolve(answer) : reject(failure)))
    if (!chunked) {
      req.end(BIG)
      return
    }
    for (let at = 0; at < BIG.length; at += MB) req.write(BIG.subarray(at, at + MB))
    req.end()
  })
}

/** fetch, the body a Buffer (content-length) or a ReadableStream of 1 MB chunks (chunked). */
async function fetchClient(url: string, chunked: boolean): Promise<string> {
  const body = chunked
    ? new ReadableStream<Uint8Array>({
        start(controller) {
          for (let at = 0; at < BIG.length; at += MB) controller.enqueue(BIG.subarray(at, at + MB))
          controller.close()
        },
      })
    : BIG
  const init = { method: 'POST', headers: { 'content-type': 'application/json' }, body, duplex: 'half' }
  const res = await fetch(`${url}/v1/chat/completions`, init as RequestInit)
  return `${res.status} ${((await res.json()) as Answer['json']).error.code}`
}

describe('a 55 MB body gets its 413, never EPIPE or ECONNRESET', () => {
  let g: Gateway
  before(async () => {
    g = await startGateway()
  })
  after(() => g.close())

  for (const [name, send] of [
    ['http.request', (url: string, chunked: boolean) => nodeClient(url, chunked)],
    ['http.request with Connection: close', (url: string, chunked: boolean) => nodeClient(url, chunked, true)],
    ['fetch', fetchClient],
  ] as const) {
    for (const chunked of [false, true]) {
      test(`${name}, ${chunked ? 'chunked' : 'content-length'}`, async () => {
        // The failure was a race (the answer and the close against the client's writes): try it a few times.
        for (let round = 0; round < 3; round++) assert.equal(await send(g.url, chunked), '413 llmproxy_body_too_large')
      })
    }
  }

  test('nothing reached the upstream, and the gateway still serves', async () => {
    assert.equal(g.mock.requests.length, 0)
    assert.equal(
      (await request(`${g.url}/v1/chat/completions`, { method: 'POST', body: chat(), headers: { 'content-type': 'application/json' } }))
        .statusCode,
      200,
    )
  })
})

/** `{"model":"gpt-test","messages":[],"x":[[…]]}`: the arrays make the body `depth` levels deep. */
function nested(depth: number): string {
  const arrays = depth - 1
  return `{"model":"gpt-test","messages":[],"x":${'['.repeat(arrays)}${']'.repeat(arrays)}}`
}

describe('deeply nested JSON', () => {
  let g: Gateway
  before(async () => {
    g = await startGateway()
  })
  after(() => g.close())

  test('10,000 nested arrays (20 KB) get a 400 llmproxy_json_too_deep, and nothing is logged as an error', async () => {
    const body = `{"model":"gpt-test","messages":${'['.repeat(10_000)}${']'.repeat(10_000)}}`
    for (let round = 0; round < 2; round++) {
      const res = await post(g.url, body)
      assert.equal(res.status, 400)
      assert.equal(res.json.error.code, 'llmproxy_json_too_deep')
      assert.equal(res.json.error.message, `The request body nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep.`)
    }
    assert.deepEqual(
      g.logs.filter((line) => line.level >= 50),
      [],
    )
    assert.equal(g.mock.requests.length, 0)
  })

  test(`${MAX_JSON_DEPTH} levels are accepted and forwarded; ${MAX_JSON_DEPTH + 1} are not`, async () => {
    g.mock.reset()
    const ok = await request(`${g.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: nested(MAX_JSON_DEPTH),
    })
    await ok.body.dump()
    assert.equal(ok.statusCode, 200)
    assert.equal(g.mock.requests.length, 1)
    const deeper = await post(g.url, nested(MAX_JSON_DEPTH + 1))
    assert.equal(deeper.status, 400)
    assert.equal(deeper.json.error.code, 'llmproxy_json_too_deep')
    assert.equal(g.mock.requests.length, 1)
  })
})

/** A gzip body that decompresses to `gb` GiB of zeros: 1 KB members of 1 MiB each, concatenated (RFC 1952 §2.2). */
function gzipBomb(gb: number): Buffer {
  const member = gzipSync(Buffer.alloc(MB))
  return Buffer.concat(Array.from({ length: gb * 1024 }, () => member))
}

describe('compressed request bodies', () => {
  let g: Gateway
  before(async () => {
    g = await startGateway({ bodyLimit: 64 * 1024 })
  })
  after(() => g.close())

  const body = chat({ stream: false })
  const codings: [string, Buffer][] = [
    ['gzip', gzipSync(body)],
    ['x-gzip', gzipSync(body)],
    ['deflate', deflateSync(body)],
    ['br', brotliCompressSync(body)],
    ['identity', Buffer.from(body)],
    ['GZip ', gzipSync(body)],
  ]
  for (const [coding, payload] of codings) {
    test(`Content-Encoding: ${JSON.stringify(coding)} is decoded; the upstream gets plain JSON without the header`, async () => {
      g.mock.reset()
      const res = await request(`${g.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-encoding': coding },
        body: payload,
      })
      const answer = (await res.body.json()) as { choices: unknown[] }
      assert.equal(res.statusCode, 200)
      assert.equal(answer.choices.length, 1)
      const seen = g.mock.requests[0]
      assert.equal(seen?.headers['content-encoding'], undefined)
      assert.deepEqual(seen?.body, { ...JSON.parse(body), model: 'mock-model' })
    })
  }

  test('a plain body labelled gzip is refused (400), not forwarded with the label', async () => {
    g.mock.reset()
    const res = await post(g.url, body, { 'content-encoding': 'gzip' })
    assert.equal(res.status, 400)
    assert.equal(res.json.error.code, 'llmproxy_invalid_content_encoding')
    assert.equal(g.mock.requests.length, 0)
  })

  test('an unknown coding is a 415 naming the accepted ones', async () => {
    const res = await post(g.url, gzipSync(body), { 'content-encoding': 'zstd' })
    assert.equal(res.status, 415)
    assert.equal(res.json.error.code, 'llmproxy_unsupported_content_encoding')
    assert.equal(res.headers['accept-encoding'], 'gzip, deflate, br')
    const stacked = await post(g.url, gzipSync(gzipSync(body)), { 'content-encoding': 'gzip, gzip' })
    assert.equal(stacked.status, 415)
  })

  test('the decompressed size counts against bodyLimit', async () => {
    const large = chat({ pad: 'x'.repeat(100 * 1024) })
    const compressed = gzipSync(large)
    assert.ok(compressed.length < 64 * 1024)
    const res = await post(g.url, compressed, { 'content-encoding': 'gzip' })
    assert.equal(res.status, 413)
    assert.equal(res.json.error.code, 'llmproxy_body_too_large')
    assert.equal(res.json.error.message, 'The request body exceeds the limit of 65536 bytes once decompressed.')
  })
})

describe('behind @fastify/compress, which decodes request bodies in a preParsing hook and leaves Content-Encoding', () => {
  let g: Gateway
  before(async () => {
    g = await startGateway({ compress: true })
  })
  after(() => g.close())

  const body = chat({ stream: false })
  for (const [coding, payload] of [
    ['gzip', gzipSync(body)],
    ['br', brotliCompressSync(body)],
  ] as const) {
    test(`a ${coding} body is decoded once; the upstream gets plain JSON without the header`, async () => {
      g.mock.reset()
      const res = await post(g.url, payload, { 'content-encoding': coding })
      assert.equal(res.status, 200)
      const seen = g.mock.requests[0]
      assert.equal(seen?.headers['content-encoding'], undefined)
      assert.deepEqual(seen?.body, { ...JSON.parse(body), model: 'mock-model' })
    })
  }

  test('a body that is not br data is a 400 saying so, not a client that closed the connection', async () => {
    g.mock.reset()
    const res = await post(g.url, body, { 'content-encoding': 'br' })
    assert.equal(res.status, 400)
    assert.equal(res.json.error.code, 'llmproxy_invalid_content_encoding')
    assert.equal(res.json.error.message, 'The request body is not valid "br" data (Content-Encoding).')
    assert.equal(g.mock.requests.length, 0)
  })
})

describe('a zip bomb', () => {
  let g: Gateway
  before(async () => {
    g = await startGateway()
  })
  after(() => g.close())

  test('4 GiB of zeros in a 4 MB gzip body get a 413 (decompression stops at the limit), and the gateway serves on', async () => {
    const bomb = gzipBomb(4)
    assert.ok(bomb.length < 8 * MB)
    const res = await post(g.url, bomb, { 'content-encoding': 'gzip' })
    assert.equal(res.status, 413)
    assert.equal(res.json.error.code, 'llmproxy_body_too_large')
    assert.match(res.json.error.message, /once decompressed/)
    assert.equal(g.mock.requests.length, 0)
    const ok = await request(`${g.url}/v1/chat/completions`, {
      method: 'POST',
      body: chat(),
      headers: { 'content-type': 'application/json' },
    })
    await ok.body.dump()
    assert.equal(ok.statusCode, 200)
  })
})
