#!/usr/bin/env node
// `pnpm test`: every *.test.ts of the packages, the examples and test/ (not the benchmark), run by
// node:test with TypeScript through tsx and the workspace packages resolved to their sources.
// A Redis server for the Redis tests is started on its own port (in a temp dir) when one isn't reachable there,
// and stopped when the tests end. Tests that need their own Redis topology (a cluster, Sentinel, a Redis to pause
// or kill) start and stop it themselves (test/e2e/redis-cluster.ts).
import { spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'

const root = new URL('..', import.meta.url).pathname
const args = process.argv.slice(2)

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

const files =
  args.length > 0 ? args : [...findTests(join(root, 'packages')), ...findTests(join(root, 'examples')), ...findTests(join(root, 'test'))]
const stopRedis = await ensureRedis()
// Also when the run is interrupted: the Redis this script started never outlives it.
process.once('exit', stopRedis)
const child = spawn(
  process.execPath,
  ['--conditions=llmproxy-source', '--import', 'tsx', '--test', '--test-concurrency=1', '--test-timeout=120000', ...files],
  { stdio: 'inherit', cwd: root },
)
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal))
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)))
