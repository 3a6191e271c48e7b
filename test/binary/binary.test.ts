// The single executable (scripts/build-binary.mjs, `pnpm build:binary`): built when missing or older than
// its sources, then run as a real process in front of a mock upstream, with no Node.js flags, no tsx and no
// node_modules next to it (its working directory is a temp dir).
import assert from 'node:assert/strict'
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { expectedContent, type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'

const root = fileURLToPath(new URL('../..', import.meta.url))
const binary = join(root, 'build', process.platform === 'win32' ? 'llmproxy.exe' : 'llmproxy')
const BUILD_TIMEOUT_MS = 5 * 60_000
const START_TIMEOUT_MS = 30_000

let buildMs: number | null = null
let dir = ''
let mock: MockUpstream | null = null
let child: ChildProcess | null = null
let childOutput = ''

/** The newest modification time of what goes into the binary (the node binary itself included). */
function newestSource(): number {
  let newest = 0
  const visit = (path: string): void => {
    const stat = statSync(path)
    if (stat.isDirectory()) {
      for (const name of readdirSync(path)) {
        if (name !== 'node_modules' && name !== 'dist' && name !== 'test') visit(join(path, name))
      }
    } else {
      newest = Math.max(newest, stat.mtimeMs)
    }
  }
  for (const pkg of readdirSync(join(root, 'packages'))) {
    visit(join(root, 'packages', pkg, 'src'))
    visit(join(root, 'packages', pkg, 'package.json'))
  }
  for (const file of ['scripts/build-binary.mjs', 'pnpm-lock.yaml']) visit(join(root, file))
  return Math.max(newest, statSync(process.execPath).mtimeMs)
}

function isStale(): boolean {
  try {
    return statSync(binary).mtimeMs < newestSource()
  } catch {
    return true
  }
}

function run(file: string, args: string[], timeout: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: dir, timeout, maxBuffer: 32 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null
      resolve({ code, stdout, stderr })
    })
  })
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

function exited(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => proc.once('exit', () => resolve()))
}

before(
  async () => {
    dir = mkdtempSync(join(tmpdir(), 'llmproxy-binary-'))
    if (isStale()) {
      const started = performance.now()
      const result = await run(process.execPath, [join(root, 'scripts/build-binary.mjs')], BUILD_TIMEOUT_MS)
      assert.equal(result.code, 0, `build-binary failed:\n${result.stdout}\n${result.stderr}`)
      buildMs = performance.now() - started
    }
    mock = await startMockUpstream({ defaults: { tokens: 6 } })
  },
  { timeout: BUILD_TIMEOUT_MS + 60_000 },
)

after(async () => {
  if (child !== null) {
    const proc = child
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await exited(proc)
    }
  }
  await mock?.close()
  if (dir !== '') rmSync(dir, { recursive: true, force: true })
})

test('build/llmproxy is built (or fresh) and executable', (t) => {
  t.diagnostic(buildMs === null ? 'binary up to date, not rebuilt' : `binary built in ${(buildMs / 1000).toFixed(1)} s`)
  const stat = statSync(binary)
  assert.ok(stat.isFile())
  assert.ok((stat.mode & 0o111) !== 0, 'not executable')
})

test('the binary serves a streamed chat completion from a config file, then stops on SIGTERM', async () => {
  assert.ok(mock !== null)
  const upstream = mock
  const port = await freePort()
  const config = join(dir, 'config.yaml')
  writeFileSync(
    config,
    `server: { host: 127.0.0.1, port: 1 }
upstreams:
  - { name: mock, url: "${upstream.url}", protocol: openai, apiKey: "\${UPSTREAM_KEY}" }
models:
  - { name: gpt-test, upstreams: [mock], upstreamModel: mock-model }
healthChecks: { enabled: false }
`,
  )
  const proc = spawn(binary, ['--config', config, '--port', String(port)], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '', UPSTREAM_KEY: 'sk-upstream-from-env' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child = proc
  proc.stdout?.on('data', (chunk: Buffer) => {
    childOutput += chunk.toString()
  })
  proc.stderr?.on('data', (chunk: Buffer) => {
    childOutput += chunk.toString()
  })

  const base = `http://127.0.0.1:${port}`
  const until = Date.now() + START_TIMEOUT_MS
  for (;;) {
    assert.ok(proc.exitCode === null && proc.signalCode === null, `the binary exited early:\n${childOutput}`)
    assert.ok(Date.now() < until, `no /healthz within ${START_TIMEOUT_MS} ms:\n${childOutput}`)
    const ok = await fetch(`${base}/healthz`).then(
      (res) => res.ok,
      () => false,
    )
    if (ok) break
    await new Promise((resolve) => setTimeout(resolve, 100))
  }

  const res = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'Hello' }] }),
  })
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/)
  const text = await res.text()
  const data = text
    .split('\n')
    .filter((line) => line.startsWith('data: '))
    .map((line) => line.slice('data: '.length))
  assert.equal(data.at(-1), '[DONE]', text)
  let content = ''
  for (const event of data.slice(0, -1)) {
    const chunk = JSON.parse(event) as { choices?: { delta?: { content?: string } }[] }
    content += chunk.choices?.[0]?.delta?.content ?? ''
  }
  assert.equal(content, expectedContent(6))

  const seen = upstream.requests.filter((r) => r.path === '/v1/chat/completions')
  const [forwarded] = seen
  assert.ok(forwarded !== undefined && seen.length === 1, `${seen.length} upstream requests`)
  assert.equal((forwarded.body as { model?: string }).model, 'mock-model')
  assert.equal(forwarded.headers.authorization, 'Bearer sk-upstream-from-env')

  const stopped = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)))
  proc.kill('SIGTERM')
  assert.equal(await stopped, 0, childOutput)
  assert.match(childOutput, /"msg":"stopped"/)
})

test('`llmproxy schema` prints the config JSON Schema', async () => {
  const result = await run(binary, ['schema'], 30_000)
  assert.equal(result.code, 0, result.stderr)
  const schema = JSON.parse(result.stdout) as { title?: string; type?: string; properties?: Record<string, unknown> }
  assert.equal(schema.type, 'object')
  assert.ok(schema.properties?.upstreams !== undefined, 'no upstreams property')
  assert.equal(result.stderr, '', 'nothing on stderr (no SEA warning)')
})

test('`llmproxy check` exits 1 and lists each problem with its path', async () => {
  const bad = join(dir, 'bad.yaml')
  writeFileSync(
    bad,
    `server: { port: 99999 }
upstreams:
  - { name: a, url: "http://127.0.0.1:1", protocol: carrier-pigeon }
models:
  - { name: m, upstreams: [a] }
`,
  )
  const result = await run(binary, ['check', '--config', bad], 30_000)
  assert.equal(result.code, 1, `${result.stdout}\n${result.stderr}`)
  assert.match(result.stderr, /\/server\/port/)
  assert.match(result.stderr, /\/upstreams\/0\/protocol/)
  assert.doesNotMatch(result.stderr, /\n\s+at /, 'a config problem prints no stack trace')

  const good = join(dir, 'good.yaml')
  writeFileSync(
    good,
    'upstreams:\n  - { name: a, url: "http://127.0.0.1:1", protocol: openai }\nmodels:\n  - { name: m, upstreams: [a] }\n',
  )
  const ok = await run(binary, ['check', '--config', good], 30_000)
  assert.equal(ok.code, 0, ok.stderr)
  assert.match(ok.stdout, /valid/)
})
