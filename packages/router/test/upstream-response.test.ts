import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, test } from 'node:test'
import { Agent } from 'undici'
import { AttemptSignal } from '../src/signal.js'
import { UpstreamResponse, type UpstreamResponseData } from '../src/upstream-response.js'

// The handler undici calls for each upstream request, and the body the router reads: here against a real server
// through a real undici Agent, as the dispatcher uses it.

const CHUNK = Buffer.alloc(64 * 1024, 0x61)
let onRequest: (res: ServerResponse) => void = () => {}
const server = createServer((_req, res) => onRequest(res))
const agent = new Agent({ bodyTimeout: 0 })
let origin = ''

before(async () => {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
})
after(async () => {
  await agent.close()
  server.close()
})

function dispatch(signal = new AttemptSignal()): { signal: AttemptSignal; answer: Promise<UpstreamResponseData> } {
  const answer = new Promise<UpstreamResponseData>((resolve, reject) => {
    agent.dispatch(
      { origin, path: '/', method: 'GET' },
      new UpstreamResponse(signal, (err, data) => (err === null ? resolve(data) : reject(err))),
    )
  })
  return { signal, answer }
}

test('a paused body stops the upstream: the server cannot write until resume, then every byte comes, then the end', async () => {
  let written = 0
  let blocked = false
  const serverBlocked = new Promise<void>((resolve) => {
    onRequest = (res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-test': 'yes' })
      const writeMore = (): void => {
        while (written < 400) {
          written++
          if (!res.write(CHUNK)) {
            blocked = true
            resolve()
            res.once('drain', writeMore)
            return
          }
        }
        res.end()
      }
      writeMore()
    }
  })
  const { answer } = dispatch()
  const { statusCode, headers, body } = await answer
  assert.equal(statusCode, 200)
  assert.equal(headers['x-test'], 'yes')
  let received = 0
  let ended = false
  body.on('data', (chunk: Buffer) => {
    if (received === 0) body.pause()
    received += chunk.length
  })
  body.once('end', () => {
    ended = true
  })
  await serverBlocked
  // Paused after the first chunk: the server's socket fills and stays full while the body is paused.
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.ok(blocked && written < 400, `the server wrote ${written} chunks into a paused body`)
  assert.ok(received <= 2 * CHUNK.length, `${received} bytes delivered while paused`)
  assert.equal(body.isPaused(), true)
  const done = new Promise<void>((resolve) => body.once('end', resolve))
  body.resume()
  await done
  assert.equal(received, 400 * CHUNK.length)
  assert.ok(ended)
})

test('destroying the body mid-answer aborts the upstream request: the server sees its response closed', async () => {
  let serverRes: ServerResponse | null = null
  onRequest = (res) => {
    serverRes = res
    res.writeHead(200)
    res.write('first')
  }
  const { statusCode, body } = await dispatch().answer
  assert.equal(statusCode, 200)
  await new Promise<void>((resolve) => body.on('data', () => resolve()))
  const closed = once(serverRes as unknown as ServerResponse, 'close')
  const errors: Error[] = []
  body.on('error', (err) => errors.push(err))
  const reason = new Error('given up')
  body.destroy(reason)
  await closed
  await new Promise((resolve) => setImmediate(resolve))
  assert.deepEqual(errors, [reason])
})

test("the attempt's signal cancels a request before its headers (nobody hears of it: no callback) and after them (the body errors)", async () => {
  // Never answers; its request closes when the gateway cancels it.
  const cancelled = new Promise<void>((resolve) => {
    onRequest = (res) => res.once('close', resolve)
  })
  const early = dispatch()
  let heard = false
  early.answer.then(
    () => (heard = true),
    () => (heard = true),
  )
  await new Promise((resolve) => setTimeout(resolve, 50))
  early.signal.abort(new Error('first-byte deadline'))
  await cancelled
  await new Promise((resolve) => setImmediate(resolve))
  // The attempt failed itself: reply-from, told, would log the cancel as an upstream failure.
  assert.equal(heard, false)

  onRequest = (res) => {
    res.writeHead(200)
    res.write('partial')
  }
  const late = dispatch()
  const { body } = await late.answer
  const failed = new Promise<Error>((resolve) => body.on('error', resolve))
  const gone = new Error('the client went away')
  late.signal.abort(gone)
  assert.equal(await failed, gone)
})
