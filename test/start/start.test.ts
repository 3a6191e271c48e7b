// `pnpm start` (scripts/start.mjs): the gateway runs from its bundle, built JavaScript (built first when missing or
// older than the sources), never through the TypeScript loader.
import assert from 'node:assert/strict'
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { eventually } from '@llmproxy/mock-upstream'
import OpenAI from 'openai'

const root = fileURLToPath(new URL('../..', import.meta.url))
let child: ChildProcess | null = null
after(() => {
  child?.kill('SIGKILL')
})

test('pnpm start serves the demo from build/llmproxy.cjs, with no TypeScript loader in the process', async () => {
  const env = { ...process.env }
  delete env.LLMPROXY_CONFIG
  delete env.NODE_OPTIONS
  const started = spawn(process.execPath, ['scripts/start.mjs', '--port', '0'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
  child = started
  let output = ''
  started.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  started.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  // The bundle (and its code cache) may have to be built first.
  await eventually(() => /"url":"(http:\/\/[^"]+)"/.test(output), 120_000, 'the demo to start')
  const url = (/"url":"(http:\/\/[^"]+)"/.exec(output) as RegExpExecArray)[1] as string

  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused' })
  const stream = await client.chat.completions.create({ model: 'demo', stream: true, messages: [{ role: 'user', content: 'Hello' }] })
  let text = ''
  for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? ''
  assert.ok(text.length > 0, 'tokens streamed')

  // What runs: node and the start script (which loads build/llmproxy.cjs), no tsx, no source condition.
  const cmdline = readFileSync(`/proc/${started.pid}/cmdline`, 'utf8').split('\0')
  assert.deepEqual(cmdline.slice(1, 2), ['scripts/start.mjs'])
  assert.ok(!cmdline.some((arg) => arg.includes('tsx') || arg.includes('llmproxy-source')), cmdline.join(' '))
  const built = statSync(join(root, 'build/llmproxy.bundle.cjs')).mtimeMs
  assert.ok(built >= statSync(join(root, 'packages/server/src/cli.ts')).mtimeMs, 'the bundle is newer than the sources')
})

test('a code cache V8 rejects (a V8 flag in NODE_OPTIONS the build did not have) is said in one line; none without', (t) => {
  // A copy of the bundle with a cache written here without V8 flags, whatever flags the build had.
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-launcher-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  for (const file of ['llmproxy.cjs', 'llmproxy.bundle.cjs']) copyFileSync(join(root, 'build', file), join(dir, file))
  const run = (nodeOptions: string, extra: Record<string, string> = {}) => {
    const env = { ...process.env, NODE_OPTIONS: nodeOptions, ...extra }
    return spawnSync(process.execPath, [join(dir, 'llmproxy.cjs'), '--help'], { env, encoding: 'utf8', timeout: 30_000 })
  }
  assert.equal(run('', { LLMPROXY_WRITE_CODE_CACHE: '1' }).status, 0)
  const flagged = run('--max-old-space-size=300')
  assert.equal(flagged.status, 0, flagged.stderr)
  assert.match(flagged.stderr, /^llmproxy: V8 rejected the code cache .* this start compiles the bundle\n$/)
  const plain = run('')
  assert.equal(plain.status, 0, plain.stderr)
  assert.equal(plain.stderr, '')
  // A worker's process (started by the primary, which said it already) says nothing.
  assert.equal(run('--max-old-space-size=300', { LLMPROXY_WORKER_ID: '2' }).stderr, '')
})
