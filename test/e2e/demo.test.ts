// The README's first command: `pnpm start` with no config runs the built-in demo, and its curl streams tokens.
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { after, test } from 'node:test'
import { eventually } from '@llmproxy/mock-upstream'
import { request } from 'undici'

const root = new URL('../..', import.meta.url).pathname
let child: ChildProcess | null = null
after(() => {
  child?.kill('SIGKILL')
})

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer()
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0))
    })
  })
}

test('`pnpm start` without a config serves the demo: the README curl streams tokens', async () => {
  const scripts = (JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { scripts: { start: string } }).scripts
  const [bin, ...args] = scripts.start.split(' ') as [string, ...string[]]
  const port = await freePort()
  let output = ''
  const env = { ...process.env }
  delete env.LLMPROXY_CONFIG
  child = spawn(bin, [...args, '--port', String(port)], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout?.on('data', (d: Buffer) => {
    output += d.toString()
  })
  child.stderr?.on('data', (d: Buffer) => {
    output += d.toString()
  })
  await eventually(() => output.includes('demo mode'), 30_000, `the demo to start:\n${output}`)
  const res = await request(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'demo', stream: true, messages: [{ role: 'user', content: 'Hello' }] }),
  })
  assert.equal(res.statusCode, 200)
  const text = await res.body.text()
  assert.ok((text.match(/"content":"[^"]+"/g) ?? []).length >= 5, text)
  assert.ok(text.endsWith('data: [DONE]\n\n'))
  const exited = new Promise<number | null>((resolve) => child?.once('exit', (code) => resolve(code)))
  child.kill('SIGTERM')
  assert.equal(await exited, 0)
  child = null
})
