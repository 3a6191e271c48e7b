// How the CLI process ends, as a service manager sees it: a SIGTERM or SIGINT at any moment of the start (and a second
// one while stopping) stops it gracefully with exit 0; and an exit still comes when stdout's reader stalls, then leaves.
import assert from 'node:assert/strict'
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import {
  closeSync,
  constants,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { open } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { startMockUpstream } from '@llmproxy/mock-upstream'
import { eventually } from './helpers.js'

const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'llmproxy-cli-exit-'))
const processes: ChildProcess[] = []
after(() => {
  // Its workers too: one stuck at its exit outlives the primary.
  for (const child of processes) {
    for (const pid of childPids(child.pid as number)) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // Gone meanwhile.
      }
    }
    child.kill('SIGKILL')
  }
  rmSync(dir, { recursive: true, force: true })
})

interface Cli {
  child: ChildProcess
  /** stdout (unless it is given), then stderr. */
  output(): string
  /** The JSON log lines so far. */
  lines(): Record<string, unknown>[]
  /** "exit CODE SIGNAL" once it has exited. */
  exited: Promise<string>
}

/** The CLI from source with `args`; its stdout is `stdout` when given (not read here). */
function startCli(args: string[], { env = {}, stdout }: { env?: NodeJS.ProcessEnv; stdout?: number } = {}): Cli {
  const childEnv = { ...process.env, ...env }
  delete childEnv.NODE_TEST_CONTEXT
  const child = spawn(process.execPath, ['--conditions=llmproxy-source', '--import', 'tsx', cli, ...args], {
    env: childEnv,
    stdio: ['ignore', stdout ?? 'pipe', 'pipe'],
  })
  processes.push(child)
  let out = ''
  let err = ''
  child.stdout?.setEncoding('utf8').on('data', (s: string) => {
    out += s
  })
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    err += s
  })
  const exited = new Promise<string>((resolve) => child.once('exit', (code, signal) => resolve(`exit ${code} ${signal}`)))
  const output = () => `${out}${err === '' ? '' : `\n[stderr]\n${err}`}`
  const lines = () =>
    out
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
  return { child, output, lines, exited }
}

/** Its exit, or "still running" after `ms`. */
function exitWithin(gateway: Cli, ms: number): Promise<string> {
  return Promise.race([gateway.exited, sleep(ms, `still running ${ms} ms on`, { ref: false })])
}

/** The pids of the processes `pid` started (Linux). */
function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(' ').filter(Boolean).map(Number)
  } catch {
    return []
  }
}

function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

/** A config (YAML) of a gateway with its files in `files`: a usage spool and a quota state file. */
function configText(files: string, server: string): string {
  return `server: { host: 127.0.0.1, port: 0, ${server} }
upstreams: [{ name: a, url: "http://127.0.0.1:9", protocol: openai }]
models: [{ name: m, upstreams: [a] }]
healthChecks: { enabled: false }
auth: { keys: [{ id: k, key: sk-k-0123456789, quota: { tokens: 1000, per: day } }] }
rateLimit: { quotaStateFile: ${join(files, 'quota.json')} }
usage: { spoolDir: ${join(files, 'spool')}, webhook: { url: "http://127.0.0.1:9/usage", secret: cli-exit-secret-0123 }, shutdownFlushMs: 200 }
`
}

test('a SIGTERM before the config is read: the gateway starts, then stops as after a start (exit 0), its files released', async () => {
  const files = mkdtempSync(join(dir, 'early-'))
  // The config file as a FIFO: the start waits in its read, from the moment the test opens it, until the test writes it.
  const fifo = join(files, 'config.yaml')
  execFileSync('mkfifo', [fifo])
  const gateway = startCli(['--config', fifo])
  const writer = await Promise.race([open(fifo, 'w'), gateway.exited.then((how) => assert.fail(`${how}:\n${gateway.output()}`))])
  try {
    gateway.child.kill('SIGTERM')
    await sleep(200)
    assert.equal(gateway.child.signalCode, null, "SIGTERM's default action ended the start")
    await writer.writeFile(configText(files, 'shutdownGraceMs: 1000'))
  } finally {
    await writer.close()
  }
  assert.equal(await exitWithin(gateway, 60_000), 'exit 0 null', gateway.output())
  const stopping = gateway.lines().filter((line) => String(line.msg).startsWith('shutting down'))
  assert.deepEqual(
    stopping.map((line) => line.reason),
    ['SIGTERM (received while starting)'],
    gateway.output(),
  )
  assert.ok(
    gateway.lines().some((line) => line.msg === 'stopped'),
    gateway.output(),
  )
  assert.deepEqual(readdirSync(join(files, 'spool')), ['cursor.json'], 'the spool lock was released')
  assert.ok(existsSync(join(files, 'quota.json')))
})

test('workers: 2: SIGTERM, twice, while a worker still starts: no worker left waited for, each stops, exit 0', async () => {
  const files = mkdtempSync(join(dir, 'workers-'))
  const file = join(files, 'config.yaml')
  writeFileSync(file, configText(files, 'workers: 2, shutdownGraceMs: 1000'))
  // Worker 2 listens 3 s late: the primary still waits for it when worker 1 listens.
  const slowListen = join(files, 'slow-listen.cjs')
  writeFileSync(
    slowListen,
    `if (process.env.LLMPROXY_WORKER_ID === '2') {
  const { Server } = require('node:net')
  const listen = Server.prototype.listen
  Server.prototype.listen = function (...args) {
    setTimeout(() => listen.apply(this, args), 3000)
    return this
  }
}
`,
  )
  const gateway = startCli(['--config', file], { env: { NODE_OPTIONS: `--require ${slowListen}` } })
  await eventually(
    () => gateway.lines().some((line) => line.worker === 1 && String(line.msg).startsWith('Server listening')),
    60_000,
    'worker 1',
  )
  const workers = childPids(gateway.child.pid as number)
  assert.equal(workers.length, 2, gateway.output())
  gateway.child.kill('SIGTERM')
  await sleep(100)
  // A second one while stopping (a Ctrl-C pressed twice) changes nothing.
  gateway.child.kill('SIGTERM')
  assert.equal(await exitWithin(gateway, 30_000), 'exit 0 null', gateway.output())
  const lines = gateway.lines()
  assert.deepEqual(
    lines.filter((line) => line.role === 'primary' && String(line.msg).startsWith('shutting down')).map((line) => line.reason),
    ['SIGTERM (received while starting)'],
  )
  assert.ok(!gateway.output().includes('with 2 workers'), gateway.output())
  // Worker 2 got the primary's SIGTERM while it started: it stopped once it had, without saying it was ready.
  assert.deepEqual(
    lines
      .filter((line) => line.worker === 2 && (String(line.msg).startsWith('shutting down') || line.msg === 'stopped'))
      .map((line) => line.reason ?? line.msg),
    ['SIGTERM (received while starting)', 'stopped'],
    gateway.output(),
  )
  assert.deepEqual(workers.filter(running), [], 'no worker left running')
  assert.ok(
    !existsSync(join(files, 'spool', 'lock')) && !existsSync(join(files, 'spool', 'worker-2', 'lock')),
    'the spool locks were released',
  )
})

test('a second SIGTERM while the stop waits for a stream in flight does not end the process: the stream completes, exit 0', async () => {
  const mock = await startMockUpstream({ defaults: { tokens: 30, gapMs: 50 } })
  try {
    const file = join(dir, 'twice.yaml')
    writeFileSync(
      file,
      `server: { host: 127.0.0.1, port: 0, shutdownGraceMs: 10000 }
upstreams: [{ name: mock, url: "${mock.url}", protocol: openai }]
models: [{ name: m, upstreams: [mock] }]
healthChecks: { enabled: false }
`,
    )
    const gateway = startCli(['--config', file])
    await eventually(() => /Server listening at (http:\/\/\S+?)"/.test(gateway.output()), 60_000, 'the gateway to listen')
    const url = (/Server listening at (http:\/\/\S+?)"/.exec(gateway.output()) as RegExpExecArray)[1] as string
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    })
    const text = res.text()
    await mock.waitForRequests(1)
    gateway.child.kill('SIGTERM')
    await sleep(300)
    gateway.child.kill('SIGTERM')
    assert.ok((await text).endsWith('data: [DONE]\n\n'), 'the stream in flight completed')
    assert.equal(await exitWithin(gateway, 30_000), 'exit 0 null', gateway.output())
  } finally {
    await mock.close()
  }
})

for (const workers of [1, 2]) {
  test(`workers: ${workers}: a start that fails, with stdout a full pipe whose reader then goes away, exits 1`, async (t) => {
    const taken = createServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
    t.after(() => taken.close())
    const adminPort = (taken.address() as { port: number }).port
    const files = mkdtempSync(join(dir, 'full-pipe-'))
    const file = join(files, 'config.yaml')
    // The gateway listens, logs, then fails on the admin port; shutdownGraceMs 0: the primary kills a worker that
    // does not exit within 10 s.
    writeFileSync(
      file,
      `server: { host: 127.0.0.1, port: 0, workers: ${workers}, shutdownGraceMs: 0 }
upstreams: [{ name: a, url: "http://127.0.0.1:9", protocol: openai }]
models: [{ name: m, upstreams: [a] }]
healthChecks: { enabled: false }
admin: { host: 127.0.0.1, port: ${adminPort}, token: admin-token-0123456789abcdef-exit }
`,
    )
    // stdout: a FIFO already full (a log reader that stopped reading), blocking as a shell's pipe is.
    const fifo = join(files, 'stdout')
    execFileSync('mkfifo', [fifo])
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK)
    const writer = openSync(fifo, constants.O_WRONLY)
    const filler = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK)
    try {
      for (;;) writeSync(filler, Buffer.alloc(4096, 0x20))
    } catch {
      // EAGAIN: full.
    } finally {
      closeSync(filler)
    }
    const gateway = startCli(['--config', file], { stdout: writer })
    closeSync(writer)
    let readerOpen = true
    t.after(() => {
      if (readerOpen) closeSync(reader)
    })
    // The error is printed on the way out: the log lines are still held then. Then the reader goes away (EPIPE).
    await eventually(() => gateway.output().includes('already in use') || gateway.child.exitCode !== null, 60_000, 'the start to fail')
    closeSync(reader)
    readerOpen = false
    assert.equal(await exitWithin(gateway, 15_000), 'exit 1 null', gateway.output())
    assert.match(gateway.output(), /llmproxy: Invalid listen address:\n {2}- \/admin\/port: \d+ is already in use on 127\.0\.0\.1\n/)
  })
}
