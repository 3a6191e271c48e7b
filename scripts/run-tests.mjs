#!/usr/bin/env node
// `pnpm test`: every *.test.ts of the packages, the examples and test/ (not the benchmark), run by node:test with
// TypeScript through tsx and the workspace packages resolved to their sources. Test files run side by side
// (LLMPROXY_TEST_CONCURRENCY at a time, each in its own process), except those in SERIAL below, which run one at a
// time once the others are done. Test files therefore share no fixed port, Redis key, file or environment
// variable: ports are ephemeral, Redis keys take a per-run prefix, files go to a fresh temp dir.
//
// `pnpm test:unit`: the files in UNIT only, in seconds. They run in one process (in `pnpm test` too): a unit test
// opens no socket and starts no process (scripts/unit-guard.mjs makes either throw), and registers no top-level
// before/after hook (it would apply to every file of the process).
//
// Arguments: `--unit`; test files (run in the group each belongs to); anything else starting with `-` is passed
// to node's test runner (`--test-name-pattern=…`, `--test-reporter=tap`).
//
// A Redis server for the Redis tests is started on its own port (in a temp dir) when one isn't reachable there,
// and stopped when the tests end. Tests that need their own Redis topology (a cluster, Sentinel, a Redis to pause
// or kill) start and stop it themselves (test/e2e/redis-cluster.ts).
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { availableParallelism, tmpdir } from 'node:os'
import { join, relative, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

const root = new URL('..', import.meta.url).pathname

/** Files that cannot share the machine, with the reason. They run alone, after the others. */
const SERIAL = new Map([
  ['packages/router/test/abort.test.ts', 'the upstream must be released at once (under 500 ms) on a client abort'],
  ['packages/router/test/failover.test.ts', 'Retry-After holds, budgets and recovery are checked against the clock'],
  ['packages/router/test/retry-order.test.ts', 'a failover must finish within 1 s'],
  [
    'packages/router/test/slow-clients.test.ts',
    'a stalled client is cut clientStallMs after its last read, measured from the upstream side',
  ],
  ['packages/router/test/streaming.test.ts', 'each chunk must reach the client before the upstream sends the next'],
  ['packages/router/test/tls-stall.test.ts', 'a 150 ms connectMs must fail the handshake within 140–700 ms'],
  ['packages/mock-upstream/test/timing.test.ts', "checks the mock's own delays against the clock"],
  ['packages/server/test/server.test.ts', 'its server has 300/600 ms header/request timeouts (slow clients): a busy machine trips them'],
  ['packages/rate-limit/test/redis-outage.test.ts', 'pauses its Redis (SIGSTOP) against a 200 ms command timeout'],
  ['test/e2e/redis-outage.test.ts', 'pauses its Redis (SIGSTOP) against a 250 ms command timeout'],
  ['test/e2e/sentinel.test.ts', 'kills the Sentinel master and checks the fallback window against the clock'],
  [
    'packages/rate-limit/test/redis-failover.test.ts',
    'stalls a Sentinel or a Cluster master and checks the failover window against the clock',
  ],
])

/** Pure tests (`pnpm test:unit`, and one process in `pnpm test`): no socket, no process, no top-level hook. */
const UNIT = [
  'packages/auth/test/ip.test.ts',
  'packages/auth/test/keys.test.ts',
  'packages/auth/test/resolve-key.test.ts',
  'packages/core/test/bytes.test.ts',
  'packages/core/test/json-scan.test.ts',
  'packages/core/test/usage-build.test.ts',
  'packages/metrics/test/collectors.test.ts',
  'packages/metrics/test/equivalence.test.ts',
  'packages/metrics/test/llm.test.ts',
  'packages/metrics/test/route-metrics.test.ts',
  'packages/metrics/test/sources.test.ts',
  'packages/protocols/test/request-claude-code.test.ts',
  'packages/protocols/test/request-messages.test.ts',
  'packages/protocols/test/request-params.test.ts',
  'packages/protocols/test/request-prefill.test.ts',
  'packages/protocols/test/request-reasoning.test.ts',
  'packages/protocols/test/request-roundtrip.test.ts',
  'packages/protocols/test/request-tools.test.ts',
  'packages/protocols/test/request-validators.test.ts',
  'packages/protocols/test/response.test.ts',
  'packages/protocols/test/stream-decode.test.ts',
  'packages/protocols/test/stream-encode.test.ts',
  'packages/protocols/test/stream-sdk.test.ts',
  'packages/protocols/test/usage-extract.test.ts',
  'packages/rate-limit/test/units.test.ts',
  'packages/router/test/keep-alives.test.ts',
  'packages/router/test/meter.test.ts',
  'packages/router/test/planner.test.ts',
  'packages/router/test/scanner.test.ts',
  'packages/router/test/tap.test.ts',
  'packages/server/test/config-dependencies.test.ts',
  'packages/server/test/config.test.ts',
  'packages/server/test/lazy-logger.test.ts',
  'packages/upstreams/test/panic.test.ts',
  'packages/upstreams/test/passive.test.ts',
  'packages/upstreams/test/queue.test.ts',
  'packages/upstreams/test/strategies.test.ts',
  'packages/usage/test/signature.test.ts',
  'test/docs/readme.test.ts',
]

// Test files mostly wait (on sockets, timers, child processes): one more than the cores keeps both busy.
const concurrency = Number(process.env.LLMPROXY_TEST_CONCURRENCY ?? availableParallelism() + 1)

function findTests(dir, out = []) {
  let entries
  try {
    entries = readdirSync(dir)
  } catch {
    return out
  }
  for (const name of entries) {
    if (name === 'node_modules' || name === 'dist' || name === 'bench') continue
    const path = join(dir, name)
    if (statSync(path).isDirectory()) findTests(path, out)
    else if (name.endsWith('.test.ts')) out.push(relative(root, path))
  }
  return out
}

function reachable(port) {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

/** Starts redis-server on the port of LLMPROXY_TEST_REDIS_URL unless something listens there; returns its stopper. */
async function ensureRedis() {
  const url = process.env.LLMPROXY_TEST_REDIS_URL ?? 'redis://127.0.0.1:6390'
  process.env.LLMPROXY_TEST_REDIS_URL = url
  const port = Number(new URL(url).port || 6379)
  if (await reachable(port)) return () => {}
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-test-redis-'))
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no']
  const server = spawn('redis-server', args, { stdio: 'ignore' })
  const stop = () => {
    if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
  const failed = await new Promise((resolve) => {
    server.once('error', (err) => resolve(err.message))
    server.once('exit', (code) => resolve(`exit ${code}`))
    const poll = async () => {
      for (let i = 0; i < 50; i++) {
        if (await reachable(port)) return resolve(null)
        await new Promise((r) => setTimeout(r, 100))
      }
      resolve('not listening after 5 s')
    }
    poll()
  })
  if (failed !== null) {
    stop()
    console.warn(`run-tests: could not start redis-server on port ${port} (${failed}); Redis tests will fail in CI`)
    return () => {}
  }
  return stop
}

const args = process.argv.slice(2)
const unitOnly = args.includes('--unit')
const testerArgs = args.filter((arg) => arg.startsWith('-') && arg !== '--unit')
const named = args.filter((arg) => !arg.startsWith('-')).map((file) => relative(root, resolve(file)))
const all =
  named.length > 0 ? named : [...findTests(join(root, 'packages')), ...findTests(join(root, 'examples')), ...findTests(join(root, 'test'))]
const files = unitOnly && named.length === 0 ? UNIT : all

const work = mkdtempSync(join(tmpdir(), 'llmproxy-test-run-'))
const stops = [() => rmSync(work, { recursive: true, force: true })]
// Also when the run is interrupted: what this script started never outlives it.
process.once('exit', () => {
  for (const stop of stops) stop()
})
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1))

// Every Node process of the run loads scripts/test-process.mjs: the test files, and the gateways they start.
const typebox = join(work, 'typebox.mjs')
execFileSync(process.execPath, [join(root, 'packages/core/scripts/bundle-typebox.mjs'), typebox], { stdio: 'inherit' })
process.env.LLMPROXY_TEST_TYPEBOX = typebox
const preload = `--import=${pathToFileURL(join(root, 'scripts/test-process.mjs')).href}`
process.env.NODE_OPTIONS = [process.env.NODE_OPTIONS, preload].filter(Boolean).join(' ')

/** One node:test run over `entries`; resolves with whether it passed. */
function runTests(entries, atOnce) {
  const child = spawn(
    process.execPath,
    [
      '--conditions=llmproxy-source',
      '--import',
      'tsx',
      '--test',
      `--test-concurrency=${atOnce}`,
      '--test-timeout=120000',
      ...testerArgs,
      ...entries,
    ],
    { stdio: 'inherit', cwd: root },
  )
  stops.push(() => child.kill('SIGTERM'))
  return new Promise((resolve) => child.on('exit', (code) => resolve(code === 0)))
}

/** The unit files as one test file that imports them all, after the guard. */
function unitEntry(unitFiles) {
  const entry = join(work, 'unit.test.mjs')
  const imports = ['scripts/unit-guard.mjs', ...unitFiles].map((file) => `import ${JSON.stringify(pathToFileURL(join(root, file)).href)}\n`)
  writeFileSync(entry, imports.join(''))
  return entry
}

let passed = true
if (unitOnly) {
  console.log(`run-tests: ${files.length} unit test files in one process`)
  passed = await runTests([unitEntry(files)], 1)
} else {
  stops.push(await ensureRedis())
  const unit = files.filter((file) => UNIT.includes(file))
  const serial = files.filter((file) => SERIAL.has(file))
  const rest = files.filter((file) => !UNIT.includes(file) && !SERIAL.has(file))
  const together = unit.length > 0 ? [unitEntry(unit), ...rest] : rest
  // (node --test given no file would look for test files itself)
  if (together.length > 0) {
    console.log(`run-tests: ${rest.length} files and the ${unit.length} unit test files, ${concurrency} at a time`)
    passed = await runTests(together, concurrency)
  }
  if (serial.length > 0) {
    console.log(`run-tests: ${serial.length} files one at a time (see SERIAL in scripts/run-tests.mjs)`)
    passed = (await runTests(serial, 1)) && passed
  }
}
process.exit(passed ? 0 : 1)
