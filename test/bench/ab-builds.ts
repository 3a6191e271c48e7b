// Dev helper: CPU per request of two builds of the gateway (and the bare proxy) in alternating rounds, against one
// mock, pinned like `pnpm bench` (proxies on core 0; mock and this load generator on core 1, when taskset exists).
// Each checkout needs `pnpm build` (its packages/*/dist); a path ending in .cjs is run as it is instead (a bundle's
// build/llmproxy.cjs, or a copy of its build/ directory, to compare bundles). Minimal config (router, upstreams, metrics), plus the
// features named after `@` (comma-separated: auth, limit, usage, usage-nosync (no fsync), usage-hold (spooled, not
// delivered during the run), noresume (the model's resume: false); `full` = auth,limit,usage), so one
// build can also be compared with itself feature by feature.
//   node --import tsx test/bench/ab-builds.ts <checkout A>[@features] <checkout B>[@features] [rounds]
// e.g. before/after a change: `git worktree add /tmp/before <commit>`, build both, then compare;
// or the cost of the usage webhook: `ab-builds.ts . .@usage`.
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { BENCH_API_KEY, cpuSeconds, load, median, type Proc, start } from './requests.js'

const [dirA, dirB, roundsArg] = process.argv.slice(2)
if (dirA === undefined || dirB === undefined) {
  console.error('usage: ab-builds.ts <checkout A> <checkout B> [rounds]')
  process.exit(2)
}
const ROUNDS = Number(roundsArg ?? 8)
const pin = spawnSync('taskset', ['-V']).status === 0 ? (core: string) => ['taskset', '-c', core] : () => []
const procs: Proc['child'][] = []
process.on('exit', () => {
  for (const child of procs) child.kill()
})

const tmp = mkdtempSync(join(tmpdir(), 'llmproxy-ab-'))
const mock = await start(
  'mock',
  [...pin('1'), 'node', 'packages/mock-upstream/dist/cli.js', '--port', '0'],
  {},
  /listening on (http:\/\/\S+)/,
)
procs.push(mock.child)
const receiver = await start('webhook receiver', [...pin('1'), 'node', 'test/bench/webhook-receiver.mjs'], {}, /listening (http:\/\/\S+)/)
procs.push(receiver.child)
/** Writes the config of one side: the minimal one plus the named features (as `pnpm bench`'s all-features one). */
function configFor(side: string, features: string[]): string {
  const names = new Set(features.flatMap((name) => (name === 'full' ? ['auth', 'limit', 'usage'] : [name])))
  const usage = (fsync: string) => ({
    webhook: { url: `${receiver.url}/usage`, secret: 'bench-webhook-secret' },
    spoolDir: join(tmp, `spool-${side}`),
    spool: { fsync },
  })
  const limit = { rpm: 100_000_000, tpm: 1_000_000_000 }
  const file = join(tmp, `config-${side}.json`)
  writeFileSync(
    file,
    JSON.stringify({
      server: { host: '127.0.0.1', port: 0, logLevel: 'warn' },
      upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
      models: [{ name: 'bench', upstreams: ['mock'], ...(names.has('noresume') && { resume: false }) }],
      healthChecks: { enabled: false },
      ...(names.has('auth') && { auth: { keys: [{ id: 'bench', key: BENCH_API_KEY, ...(names.has('limit') && { rateLimit: limit }) }] } }),
      ...(names.has('limit') && { rateLimit: { store: 'memory' } }),
      ...(names.has('usage') && { usage: usage('interval') }),
      ...(names.has('usage-nosync') && { usage: usage('never') }),
      ...(names.has('usage-hold') && { usage: { ...usage('never'), batch: { maxRecords: 1000000, maxWaitMs: 600000 } } }),
    }),
  )
  return file
}
type Name = 'bare' | 'A' | 'B'
const names: Name[] = ['bare', 'A', 'B']
const bare = await start(
  'bare proxy',
  [...pin('0'), 'node', 'test/bench/bare-proxy.mjs'],
  { BENCH_UPSTREAM: mock.url },
  /listening (http:\/\/\S+)/,
)
procs.push(bare.child)
const targets: Record<Name, string> = { bare: bare.url, A: '', B: '' }
const pids: Record<Name, number> = { bare: bare.child.pid as number, A: 0, B: 0 }
for (const [name, spec] of [
  ['A', dirA],
  ['B', dirB],
] as const) {
  const [path, features] = spec.split('@') as [string, string | undefined]
  const dir = resolve(path)
  const config = configFor(name, features ? features.split(',') : [])
  // The CLI logs at warn: readiness is its first answer (the warm-up below waits for it).
  // Below the ephemeral range (32768+ on Linux), where the load generators' own connections cannot take it first.
  const port = 20_000 + Math.floor(Math.random() * 10_000)
  const entry = dir.endsWith('.cjs') ? dir : join(dir, 'packages/server/dist/cli.js')
  const [bin, ...args] = [...pin('0'), 'node', entry, '--config', config, '--port', String(port)]
  const child = spawn(bin as string, args, { cwd: dirname(entry), stdio: ['ignore', 'ignore', 'inherit'] })
  procs.push(child)
  targets[name] = `http://127.0.0.1:${port}`
  pids[name] = child.pid as number // taskset execs node: the same pid
}
await new Promise((r) => setTimeout(r, 2000))

const body = (stream: boolean, tokens: number) =>
  JSON.stringify({ model: 'bench', stream, messages: [{ role: 'user', content: 'Benchmark me.' }], mock: { tokens, gapMs: 0 } })
for (const name of names) await load(targets[name], 3000, 8, body(true, 8))
const scenarios: [string, number, number, string][] = [
  ['unary, concurrency 32', 5000, 32, body(false, 16)],
  ['64-token streams, concurrency 64', 1500, 64, body(true, 64)],
]
for (const [title, total, concurrency, payload] of scenarios) {
  for (const name of names) await load(targets[name], total, concurrency, payload)
  const cpu: Record<Name, number[]> = { bare: [], A: [], B: [] }
  let errors = 0
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < names.length; i++) {
      const name = names[(round + i) % names.length] as Name
      const before = cpuSeconds(pids[name])
      errors += (await load(targets[name], total, concurrency, payload)).errors
      cpu[name].push(((cpuSeconds(pids[name]) - before) * 1000) / total)
    }
  }
  const ratio = (name: Name) => cpu[name].map((value, i) => value / (cpu.bare[i] as number))
  const show = (values: number[]) => `${median(values).toFixed(2)} (${Math.min(...values).toFixed(2)}–${Math.max(...values).toFixed(2)})`
  console.log(
    `${title}: CPU ms/req bare ${median(cpu.bare).toFixed(3)}, A ${median(cpu.A).toFixed(3)}, B ${median(cpu.B).toFixed(3)}; ` +
      `vs bare A ${show(ratio('A'))}, B ${show(ratio('B'))}; B/A per round ${show(cpu.B.map((value, i) => value / (cpu.A[i] as number)))}; errors ${errors}`,
  )
}
process.exit(0)
