import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { expectedContent } from '../src/index.js'

const root = fileURLToPath(new URL('../../..', import.meta.url))
const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url))

function run(args: string[]) {
  return spawn(process.execPath, ['--conditions=llmproxy-source', '--import', 'tsx', cli, ...args], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
}

test('CLI: starts, prints its URL, answers, and stops cleanly on SIGTERM', { timeout: 30_000 }, async (t) => {
  const child = run(['--port', '0', '--tokens', '3', '--models', 'alpha, beta'])
  const exited = once(child, 'exit')
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  let stdout = ''
  let stderr = ''
  child.stderr.on('data', (chunk) => {
    stderr += String(chunk)
  })
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      stdout += String(chunk)
      const match = /mock upstream listening on (http:\/\/127\.0\.0\.1:(\d+))/.exec(stdout)
      if (match?.[1] !== undefined) resolve(match[1])
    })
    child.once('exit', (code) => reject(new Error(`exited with ${code}: ${stderr}`)))
  })
  assert.notEqual(url.endsWith(':0'), true)

  const models = await request(`${url}/v1/models`)
  const list = (await models.body.json()) as { data: { id: string }[] }
  assert.deepEqual(
    list.data.map((m) => m.id),
    ['alpha', 'beta'],
  )
  const chat = await request(`${url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ messages: [] }) })
  const body = (await chat.body.json()) as { model: string; choices: { message: { content: string } }[] }
  assert.equal(body.choices[0]?.message.content, expectedContent(3))
  assert.equal(body.model, 'alpha')

  child.kill('SIGTERM')
  const [code] = await exited
  assert.equal(code, 0, stderr)
  assert.match(stdout, /mock upstream stopped/)
})

test('CLI: a bad option exits 1 with a message', { timeout: 30_000 }, async () => {
  const child = run(['--tokens', 'lots'])
  let stderr = ''
  child.stderr.on('data', (chunk) => {
    stderr += String(chunk)
  })
  const [code] = await once(child, 'exit')
  assert.equal(code, 1)
  assert.match(stderr, /--tokens must be an integer/)
})
