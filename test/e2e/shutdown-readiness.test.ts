// SIGTERM to the real CLI: readiness turns 503 first (load balancers stop sending) and the gateway stays answerable
// until the stream in flight is done; then it stops listening and exits 0, also when no one reads its stdout any more.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { after, before, test } from 'node:test'
import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { type GatewayChild, spawnGateway, workersReady } from './gateway-process.js'
import { pollUntil } from './http-helpers.js'

let dir: string
let mock: MockUpstream
const stops: (() => Promise<void>)[] = []
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'llmproxy-readiness-'))
  mock = await startMockUpstream()
})
after(async () => {
  for (const stop of stops) await stop()
  await mock.close()
  rmSync(dir, { recursive: true, force: true })
})

async function readyz(url: string): Promise<string> {
  try {
    const res = await fetch(`${url}/readyz`)
    return `${res.status} ${((await res.json()) as { status: string }).status}`
  } catch (err) {
    return `refused: ${(err as { cause?: { code?: string } }).cause?.code ?? String(err)}`
  }
}

test('SIGTERM with a long stream in flight: /readyz answers 503 while the stream finishes, then the gateway exits', async () => {
  const file = join(dir, 'gateway.yaml')
  writeFileSync(
    file,
    JSON.stringify({
      server: { host: '127.0.0.1', port: 0, shutdownGraceMs: 20_000 },
      upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
      models: [{ name: 'gpt-test', upstreams: ['mock'] }],
      healthChecks: { enabled: false },
    }),
  )
  const gateway: GatewayChild = await spawnGateway(file, (stop) => stops.push(stop))
  assert.equal(await readyz(gateway.url), '200 ready')

  // 30 tokens, 100 ms apart: three seconds of stream.
  const res = await fetch(`${gateway.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-test', stream: true, messages: [], mock: { tokens: 30, gapMs: 100 } }),
  })
  assert.equal(res.status, 200)
  const reader = (res.body as ReadableStream<Uint8Array>).getReader()
  const first = await reader.read()
  assert.ok(first.value !== undefined && first.value.length > 0, 'the stream has started')
  const exited = new Promise<number | null>((resolve) => gateway.child.once('exit', (code) => resolve(code)))
  gateway.child.kill('SIGTERM')

  await pollUntil(
    () => readyz(gateway.url),
    (answer) => answer === '503 shutting down',
    '/readyz to answer 503',
  )
  let text = Buffer.from(first.value).toString()
  let readyzWhileStreaming = 0
  for (;;) {
    const chunk = await reader.read()
    if (chunk.done) break
    text += Buffer.from(chunk.value).toString()
    if (readyzWhileStreaming < 3) {
      assert.equal(await readyz(gateway.url), '503 shutting down', 'still answerable, still not ready')
      readyzWhileStreaming++
    }
  }
  assert.equal(readyzWhileStreaming, 3)
  assert.ok(text.endsWith('data: [DONE]\n\n'), 'the stream in flight completed')
  assert.equal(await exited, 0, gateway.output())
  assert.match(await readyz(gateway.url), /^refused/)
})

for (const workers of [1, 2]) {
  test(`workers: ${workers}: SIGTERM after the reader of the gateway's stdout is gone (a dead \`| tee\`): the gateway exits`, async () => {
    const file = join(dir, `no-reader-${workers}.yaml`)
    writeFileSync(
      file,
      JSON.stringify({
        server: { host: '127.0.0.1', port: 0, workers },
        upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
        models: [{ name: 'gpt-test', upstreams: ['mock'] }],
        healthChecks: { enabled: false },
      }),
    )
    const gateway = await spawnGateway(file, (stop) => stops.push(stop))
    await workersReady(gateway, workers)
    const exited = new Promise<string>((resolve) => gateway.child.once('exit', (code, signal) => resolve(`exit ${code} ${signal}`)))
    const stdout = gateway.child.stdout as Readable
    stdout.destroy()
    await once(stdout, 'close')
    // Its stop logs a few lines at once: they used to stay buffered at exit, where pino's exit hook retried the failing
    // write (EPIPE) for ever.
    gateway.child.kill('SIGTERM')
    const stillRunning = new Promise<string>((resolve) => setTimeout(resolve, 15_000, 'still running 15 s after SIGTERM').unref())
    assert.equal(await Promise.race([exited, stillRunning]), 'exit 0 null', gateway.output())
  })
}
