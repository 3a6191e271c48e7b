#!/usr/bin/env node
// Dev helper: CPU per request of two builds of the gateway (and the bare proxy) in alternating rounds, against one
// mock, pinned like `pnpm bench` (proxies on core 0; mock and this load generator on core 1, when taskset exists).
// Each checkout needs `pnpm build` (its packages/*/dist). Minimal config (router, upstreams, metrics).
//   node test/bench/ab-builds.mjs <checkout A> <checkout B> [rounds]
// e.g. before/after a change: `git worktree add /tmp/before <commit>`, build both, then compare.
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { Pool } from 'undici'

const [dirA, dirB, roundsArg] = process.argv.slice(2)
if (dirA === undefined || dirB === undefined) {
  console.error('usage: ab-builds.mjs <checkout A> <checkout B> [rounds]')
  process.exit(2)
}
const ROUNDS = Number(roundsArg ?? 8)
const root = new URL('../..', import.meta.url).pathname
const pin = spawnSync('taskset', ['-V']).status === 0 ? (core) => ['taskset', '-c', core] : () => []
const procs = []
process.on('exit', () => {
  for (const child of procs) child.kill()
})

function start(command, ready, env = {}) {
  return new Promise((done, fail) => {
    const child = spawn(command[0], command.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    procs.push(child)
    let out = ''
    const onData = (data) => {
      out += data
      const match = ready.exec(out)
      if (match) done({ child, url: match[1] })
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    child.once('exit', (code) => fail(new Error(`${command.join(' ')} exited (${code}):\n${out}`)))
  })
}

const cpuSeconds = (pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

async function load(url, total, concurrency, body) {
  const pool = new Pool(url, { connections: concurrency })
  let next = 0
  let errors = 0
  const worker = async () => {
    while (next++ < total) {
      try {
        const res = await pool.request({
          method: 'POST',
          path: '/v1/chat/completions',
          headers: { 'content-type': 'application/json' },
          body,
        })
        await res.body.dump()
        if (res.statusCode !== 200) errors++
      } catch {
        errors++
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  await pool.close()
  return errors
}

const tmp = mkdtempSync(join(tmpdir(), 'llmproxy-ab-'))
const mock = await start(
  [...pin('1'), 'node', join(root, 'packages/mock-upstream/dist/cli.js'), '--port', '0'],
  /listening on (http:\/\/\S+)/,
)
const config = join(tmp, 'config.json')
writeFileSync(
  config,
  JSON.stringify({
    server: { host: '127.0.0.1', port: 0, logLevel: 'warn' },
    upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
    models: [{ name: 'bench', upstreams: ['mock'] }],
    healthChecks: { enabled: false },
  }),
)
const targets = {}
const pids = {}
const bare = await start([...pin('0'), 'node', join(root, 'test/bench/bare-proxy.mjs')], /listening (http:\/\/\S+)/, {
  BENCH_UPSTREAM: mock.url,
})
targets.bare = bare.url
pids.bare = bare.child.pid
for (const [name, dir] of [
  ['A', resolve(dirA)],
  ['B', resolve(dirB)],
]) {
  // The CLI logs at warn: readiness is its first answer.
  const port = 47_000 + Math.floor(Math.random() * 2000)
  const command = [...pin('0'), 'node', join(dir, 'packages/server/dist/cli.js'), '--config', config, '--port', String(port)]
  const child = spawn(command[0], command.slice(1), { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] })
  procs.push(child)
  targets[name] = `http://127.0.0.1:${port}`
  pids[name] = child.pid // taskset execs node: the same pid
}
await new Promise((r) => setTimeout(r, 2000))

const body = (stream, tokens) =>
  JSON.stringify({ model: 'bench', stream, messages: [{ role: 'user', content: 'Benchmark me.' }], mock: { tokens, gapMs: 0 } })
const names = ['bare', 'A', 'B']
for (const name of names) await load(targets[name], 3000, 8, body(true, 8))
const median = (values) => [...values].sort((x, y) => x - y)[Math.floor(values.length / 2)]
for (const [title, total, concurrency, payload] of [
  ['unary, concurrency 32', 5000, 32, body(false, 16)],
  ['64-token streams, concurrency 64', 1500, 64, body(true, 64)],
]) {
  for (const name of names) await load(targets[name], total, concurrency, payload)
  const cpu = { bare: [], A: [], B: [] }
  let errors = 0
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < names.length; i++) {
      const name = names[(round + i) % names.length]
      const before = cpuSeconds(pids[name])
      errors += await load(targets[name], total, concurrency, payload)
      cpu[name].push(((cpuSeconds(pids[name]) - before) * 1000) / total)
    }
  }
  const ratio = (name) => cpu[name].map((value, i) => value / cpu.bare[i])
  const show = (values) => `${median(values).toFixed(2)} (${Math.min(...values).toFixed(2)}–${Math.max(...values).toFixed(2)})`
  console.log(
    `${title}: CPU ms/req bare ${median(cpu.bare).toFixed(3)}, A ${median(cpu.A).toFixed(3)}, B ${median(cpu.B).toFixed(3)}; ` +
      `vs bare A ${show(ratio('A'))}, B ${show(ratio('B'))}; B/A per round ${show(cpu.B.map((value, i) => value / cpu.A[i]))}; errors ${errors}`,
  )
}
process.exit(0)
