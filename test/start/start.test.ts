// `pnpm start` (scripts/start.mjs): the gateway runs from its bundle, built JavaScript (built first when missing or
// older than the sources), never through the TypeScript loader.
import assert from 'node:assert/strict'
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process'
import {
  closeSync,
  constants,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs'
import { open } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, type TestContext, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { eventually } from '@llmproxy/mock-upstream'
import OpenAI from 'openai'

const root = fileURLToPath(new URL('../..', import.meta.url))
const gateways: ChildProcess[] = []
after(() => {
  for (const gateway of gateways) gateway.kill('SIGKILL')
})

/** The processes `pid` started, and theirs (Linux). */
function descendants(pid: number): number[] {
  let children: number[]
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(' ').filter(Boolean).map(Number)
  } catch {
    return []
  }
  return children.flatMap((child) => [child, ...descendants(child)])
}

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')
  } catch {
    return ''
  }
}

/** The environment of a gateway the tests start: none of the test runner's loader, context or config. */
function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env }
  delete env.LLMPROXY_CONFIG
  delete env.NODE_OPTIONS
  delete env.NODE_TEST_CONTEXT
  return env
}

/** A config file in `dir` for a gateway that starts with no upstream to reach (health checks off). */
function quietConfig(dir: string): string {
  const file = join(dir, 'config.yaml')
  writeFileSync(
    file,
    'server: { host: 127.0.0.1, port: 0 }\nupstreams: [{ name: a, url: "http://127.0.0.1:9", protocol: openai }]\nmodels: [{ name: m, upstreams: [a] }]\nhealthChecks: { enabled: false }\n',
  )
  return file
}

test('pnpm start serves the demo from build/llmproxy.cjs, with no TypeScript loader in the process', async () => {
  const env = childEnv()
  const started = spawn(process.execPath, ['scripts/start.mjs', '--port', '0'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
  gateways.push(started)
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

/**
 * The start script and the bundle copied to a temp dir (the packages and node_modules linked there), so that the
 * bundle can be made stale without touching the repository's. Returns the copy and its entry (made stale).
 */
function startScriptCopy(t: TestContext): { copy: string; entry: string; makeStale(): void } {
  const copy = mkdtempSync(join(tmpdir(), 'llmproxy-start-copy-'))
  t.after(() => rmSync(copy, { recursive: true, force: true }))
  mkdirSync(join(copy, 'scripts'))
  mkdirSync(join(copy, 'build'))
  for (const file of ['start.mjs', 'bundle.mjs', 'launcher.cjs']) {
    copyFileSync(join(root, 'scripts', file), join(copy, 'scripts', file))
  }
  for (const file of ['llmproxy.cjs', 'llmproxy.bundle.cjs']) copyFileSync(join(root, 'build', file), join(copy, 'build', file))
  copyFileSync(join(root, 'pnpm-lock.yaml'), join(copy, 'pnpm-lock.yaml'))
  for (const dir of ['packages', 'node_modules']) symlinkSync(join(root, dir), join(copy, dir))
  const entry = join(copy, 'build/llmproxy.cjs')
  const makeStale = () => utimesSync(entry, new Date(0), new Date(0))
  makeStale()
  return { copy, entry, makeStale }
}

test('pnpm start with workers: only the primary checks (and builds) the bundle, a replacement worker runs it as built, and no esbuild process stays', async (t) => {
  const { copy, entry, makeStale } = startScriptCopy(t)

  const env = childEnv()
  const started = spawn(process.execPath, ['scripts/start.mjs', '--port', '0', '--workers', '2'], {
    cwd: copy,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  gateways.push(started)
  let output = ''
  for (const stream of [started.stdout, started.stderr]) {
    stream?.on('data', (chunk: Buffer) => {
      output += chunk.toString()
    })
  }
  const builds = () => output.split('llmproxy: building build/llmproxy.cjs').length - 1
  await eventually(() => output.includes('with 2 workers'), 120_000, 'the gateway to start with 2 workers')
  assert.equal(builds(), 1, output)
  // The build's esbuild service process was stopped: the primary's processes are its two workers.
  const processes = descendants(started.pid as number).map(commandLine)
  assert.equal(processes.length, 2, processes.join('\n'))
  for (const line of processes) assert.ok(line.includes(entry), `a worker runs ${entry}: ${line}`)

  // Stale again (sources changed on disk since), and a worker dies: its replacement runs the bundle as it is.
  makeStale()
  // Worker 1's own listening line (the primary's lines about it say "workerPid").
  const workerPid = Number(/"pid":(\d+),[^\n]*"worker":1,[^\n]*"msg":"Server listening/.exec(output)?.[1])
  assert.ok(workerPid > 0, output)
  process.kill(workerPid, 'SIGKILL')
  await eventually(() => output.includes('replacement worker ready'), 60_000, 'the replacement worker')
  assert.equal(builds(), 1, output)
  assert.equal(statSync(entry).mtimeMs, 0, 'the bundle was not rebuilt')
  started.kill('SIGTERM')
  await new Promise((resolve) => started.once('exit', resolve))
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

test('pnpm start: a SIGHUP while the stale bundle is rebuilt is held, then taken as one reload once the gateway serves', async (t) => {
  const { copy } = startScriptCopy(t)
  const file = quietConfig(copy)
  const env = childEnv()
  const started = spawn(process.execPath, ['scripts/start.mjs', '--config', file], { cwd: copy, env, stdio: ['ignore', 'pipe', 'pipe'] })
  gateways.push(started)
  let output = ''
  for (const stream of [started.stdout, started.stderr]) {
    stream?.on('data', (chunk: Buffer) => {
      output += chunk.toString()
    })
  }
  // The build takes seconds: the signal comes while it runs, before the launcher (or any of the CLI) has.
  await eventually(() => output.includes('llmproxy: building build/llmproxy.cjs'), 60_000, 'the build')
  started.kill('SIGHUP')
  await eventually(() => output.includes('"msg":"config reloaded"') || started.exitCode !== null, 120_000, 'the reload')
  assert.equal(started.signalCode, null, "SIGHUP's default action ended pnpm start")
  assert.equal(output.match(/"msg":"config reloaded"/g)?.length, 1, output)
  started.kill('SIGTERM')
  await new Promise((resolve) => started.once('exit', resolve))
})

/**
 * The bundle's launcher (a copy in a temp dir, with a config file there) started with its bundle a FIFO: its read waits
 * there, before any of the CLI has run, until `release()` writes the bundle.
 */
async function launcherReadingBundle(t: TestContext): Promise<{ gateway: ChildProcess; output(): string; release(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-launcher-hold-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  copyFileSync(join(root, 'build/llmproxy.cjs'), join(dir, 'llmproxy.cjs'))
  const fifo = join(dir, 'llmproxy.bundle.cjs')
  execFileSync('mkfifo', [fifo])
  const file = quietConfig(dir)
  const env = childEnv()
  const gateway = spawn(process.execPath, [join(dir, 'llmproxy.cjs'), '--config', file], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(() => {
    gateway.kill('SIGKILL')
  })
  let output = ''
  gateway.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  gateway.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  // Opens once the launcher opened the bundle to read it.
  const opening = open(fifo, 'w')
  const exited = new Promise<never>((_, reject) => gateway.once('exit', () => reject(new Error(`the launcher exited:\n${output}`))))
  const writer = await Promise.race([opening, exited]).catch((err: unknown) => {
    // The open above would wait for a reader for ever: one of our own ends it.
    closeSync(openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK))
    throw err
  })
  const release = async () => {
    try {
      await writer.writeFile(readFileSync(join(root, 'build/llmproxy.bundle.cjs')))
    } finally {
      await writer.close()
    }
  }
  return { gateway, output: () => output, release }
}

test('a SIGHUP while the launcher reads the bundle is held, then taken as one reload once the gateway serves', async (t) => {
  const { gateway, output, release } = await launcherReadingBundle(t)
  try {
    gateway.kill('SIGHUP')
    await sleep(200)
    assert.equal(gateway.signalCode, null, "SIGHUP's default action ended the launcher")
  } finally {
    await release()
  }
  await eventually(() => output().includes('"msg":"config reloaded"') || gateway.exitCode !== null, 60_000, 'the reload')
  // Held by the CLI while it starts (replayed once it serves), or, when the start ran to the end before the event loop
  // handed the signal on, taken by the reload listener it then has.
  assert.match(output(), /"msg":"Server listening at .*\n.*"msg":"SIGHUP( \(received while starting\))?: reloading the config"/)
  assert.equal(output().match(/"msg":"config reloaded"/g)?.length, 1, output())
})

test('a SIGTERM while the launcher reads the bundle is held: the gateway starts, then stops as after a start (exit 0)', async (t) => {
  const { gateway, output, release } = await launcherReadingBundle(t)
  const exited = new Promise<string>((resolve) => gateway.once('exit', (code, signal) => resolve(`exit ${code} ${signal}`)))
  try {
    gateway.kill('SIGTERM')
    await sleep(200)
    assert.equal(gateway.signalCode, null, "SIGTERM's default action ended the launcher")
  } finally {
    await release()
  }
  assert.equal(await exited, 'exit 0 null', output())
  // Received while starting, or (as the SIGHUP above) by the stop listener the CLI has once the start ran to its end.
  assert.match(output(), /"reason":"SIGTERM( \(received while starting\))?".*"msg":"shutting down"/)
  assert.match(output(), /"msg":"stopped"/)
})
