#!/usr/bin/env node
// `pnpm test`: every *.test.ts of the packages, the examples and test/ (not the benchmark), run by
// node:test with TypeScript through tsx and the workspace packages resolved to their sources.
// A Redis server for the Redis tests is started on its own port when one isn't reachable there.
import { spawn, spawnSync } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { connect } from 'node:net'
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

async function ensureRedis() {
  const url = process.env.LLMPROXY_TEST_REDIS_URL ?? 'redis://127.0.0.1:6390'
  process.env.LLMPROXY_TEST_REDIS_URL = url
  const port = Number(new URL(url).port || 6379)
  if (await reachable(port)) return
  const started = spawnSync('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no', '--daemonize', 'yes'], {
    stdio: 'inherit',
  })
  if (started.error || started.status !== 0) {
    console.warn(
      `run-tests: could not start redis-server on port ${port} (${started.error?.message ?? `exit ${started.status}`}); Redis tests will fail in CI`,
    )
    return
  }
  for (let i = 0; i < 50 && !(await reachable(port)); i++) await new Promise((r) => setTimeout(r, 100))
}

const files =
  args.length > 0 ? args : [...findTests(join(root, 'packages')), ...findTests(join(root, 'examples')), ...findTests(join(root, 'test'))]
await ensureRedis()
const child = spawn(
  process.execPath,
  ['--conditions=llmproxy-source', '--import', 'tsx', '--test', '--test-concurrency=1', '--test-timeout=120000', ...files],
  { stdio: 'inherit', cwd: root },
)
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)))
