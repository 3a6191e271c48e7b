// `pnpm bench`: the gateway against (a) the mock upstream directly and (b) a bare Fastify +
// @fastify/reply-from proxy, measured in the same run. Prints ratios; the figures that separate
// proxies on a small machine are the added TTFT and the proxy's own CPU time per request.
// LLMPROXY_BENCH_SMOKE=1 runs tiny counts (CI checks the harness, not the numbers); LLMPROXY_BENCH_README=1
// writes the results into README.md.
// The gateway and the mock run from their builds (`pnpm bench` builds first), as in production.
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Pool } from 'undici'
import { chatBody, firstChunkMs, median, percentile } from './requests.js'

const SMOKE = process.env.LLMPROXY_BENCH_SMOKE === '1'
// LLMPROXY_BENCH_ONLY=ttft,cpu,slow runs some of the scenarios (while working on one); README.md is then left alone.
const ONLY = process.env.LLMPROXY_BENCH_ONLY?.split(',') ?? null
const runs = (scenario: 'ttft' | 'cpu' | 'slow') => ONLY === null || ONLY.includes(scenario)
const root = new URL('../..', import.meta.url).pathname
const CLK_TCK = 100
// The machine's cores, not this process's share: once pinned below, it may run on one core only.
const cores = (await import('node:os')).cpus().length
// Gateway (or bare proxy) on core 0, mock + load generator (this process) on core 1, where possible.
const pinning = cores >= 2 && !SMOKE && spawnSync('taskset', ['-V']).status === 0
const pin = (core: string): string[] => (pinning ? ['taskset', '-c', core] : [])
if (pinning && process.env.LLMPROXY_BENCH_PINNED !== '1') {
  const { status } = spawnSync('taskset', ['-c', '1', process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, LLMPROXY_BENCH_PINNED: '1' },
  })
  process.exit(status ?? 1)
}

interface Proc {
  child: ChildProcess
  url: string
}

function start(label: string, command: string[], env: NodeJS.ProcessEnv, ready: RegExp): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const [bin, ...args] = command as [string, ...string[]]
    const child = spawn(bin, args, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    const onData = (data: Buffer) => {
      out += data.toString()
      const match = ready.exec(out)
      if (match) {
        child.stdout?.off('data', onData)
        child.stderr?.off('data', onData)
        child.stdout?.resume()
        child.stderr?.resume()
        resolve({ child, url: match[1] as string })
      }
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', onData)
    child.once('exit', (code) => reject(new Error(`${label} exited (${code}) before it was ready:\n${out}`)))
  })
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))))
    })
  })
}

async function waitHealthy(url: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      const res = await fetch(url)
      if (res.ok) return
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`${url} never became healthy`)
}

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK
}

function peakRssMb(pid: number): number {
  const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return match ? Number(match[1]) / 1024 : Number.NaN
}

interface RunResult {
  ttfts: number[]
  errors: number
  requests: number
  seconds: number
}

/**
 * `total` requests, `concurrency` at a time, and none started after `until` (a performance.now() time);
 * TTFT = first body chunk after the request was sent.
 */
async function load(
  target: string,
  total: number,
  concurrency: number,
  body: string,
  until = Number.POSITIVE_INFINITY,
): Promise<RunResult> {
  const pool = new Pool(target, { connections: concurrency, pipelining: 1, keepAliveTimeout: 60_000 })
  const ttfts: number[] = []
  let errors = 0
  let next = 0
  const started = performance.now()
  const worker = async () => {
    while (next < total && performance.now() < until) {
      next++
      const t0 = performance.now()
      try {
        const res = await pool.request({
          method: 'POST',
          path: '/v1/chat/completions',
          headers: { 'content-type': 'application/json' },
          body,
        })
        let first = true
        for await (const _chunk of res.body) {
          if (first) {
            ttfts.push(performance.now() - t0)
            first = false
          }
        }
        if (res.statusCode !== 200) errors++
      } catch {
        errors++
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  const seconds = (performance.now() - started) / 1000
  await pool.close()
  return { ttfts, errors, requests: next, seconds }
}

async function main() {
  const tmp = mkdtempSync(join(tmpdir(), 'llmproxy-bench-'))
  const procs: ChildProcess[] = []
  try {
    const mock = await start(
      'mock',
      [...pin('1'), 'node', 'packages/mock-upstream/dist/cli.js', '--port', '0'],
      {},
      /listening on (http:\/\/\S+)/,
    )
    procs.push(mock.child)
    const configFile = join(tmp, 'bench.json')
    writeFileSync(
      configFile,
      JSON.stringify({
        server: { host: '127.0.0.1', port: 0, logLevel: 'warn' },
        upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
        models: [{ name: 'bench', upstreams: ['mock'] }],
        healthChecks: { enabled: false },
      }),
    )
    const startGateway = async (): Promise<Proc> => {
      const port = await freePort()
      const [bin, ...args] = [...pin('0'), 'node', 'packages/server/dist/cli.js', '--config', configFile, '--port', String(port)]
      const child = spawn(bin as string, args, { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] })
      procs.push(child)
      const url = `http://127.0.0.1:${port}`
      await waitHealthy(`${url}/healthz`)
      return { child, url }
    }
    const startBare = async (): Promise<Proc> => {
      const bare = await start(
        'bare proxy',
        [...pin('0'), 'node', 'test/bench/bare-proxy.mjs'],
        { BENCH_UPSTREAM: mock.url },
        /listening (http:\/\/\S+)/,
      )
      procs.push(bare.child)
      return bare
    }
    // Two processes of each proxy, taking turns by round: two processes of one build differ by up to ~5% in CPU
    // per request (JIT decisions, memory layout), about what separates one run of the benchmark from the next.
    const instances: { targets: { direct: string; bare: string; gateway: string }; pids: { bare: number; gateway: number } }[] = []
    for (let i = 0; i < (SMOKE ? 1 : 2); i++) {
      const gateway = await startGateway()
      const bare = await startBare()
      instances.push({
        targets: { direct: mock.url, bare: bare.url, gateway: gateway.url },
        pids: { bare: bare.child.pid as number, gateway: gateway.child.pid as number },
      })
    }
    const instance = (round: number) => instances[round % instances.length] as (typeof instances)[number]
    const names = ['direct', 'bare', 'gateway'] as const

    const n = (full: number, smoke: number) => (SMOKE ? smoke : full)
    const rows: string[] = []
    const print = (line: string) => {
      rows.push(line)
      process.stdout.write(`${line}\n`)
    }

    // Warm-up (JIT, connection pools). Measured: the gateway, more code than the bare proxy, needs a few
    // thousand requests before its TTFT settles (after 500 it was still ~0.1 ms above its steady state).
    for (const target of [mock.url, ...instances.flatMap(({ targets }) => [targets.bare, targets.gateway])]) {
      await load(target, n(3000, 5), 8, chatBody(true, { tokens: 8, gapMs: 0 }))
    }

    // 1. Added TTFT, streams at concurrency 1 (mock TTFT 0). The targets take turns in short blocks over one
    // kept-alive connection each, in a rotating order, so the machine's drift (seconds) hits them alike; the
    // first requests of a block are dropped (the proxy that ran before evicted the caches of this one).
    // The first token of a paced stream is what TTFT means; the whole answer in one chunk (every token, the
    // usage chunk and [DONE] at once) also puts the end-of-stream work on the first chunk's path.
    const ttftPools = instances.map(({ targets }) =>
      Object.fromEntries(
        Object.entries(targets).map(([name, target]) => [name, new Pool(target, { connections: 1, keepAliveTimeout: 60_000 })]),
      ),
    )
    const ttftOf = async (title: string, mock: Record<string, number>) => {
      const body = chatBody(true, mock)
      const ttft: Record<string, number[]> = { direct: [], bare: [], gateway: [] }
      const roundDiffs: number[] = []
      const [warmUp, rounds, block, dropped] = SMOKE ? [1, 1, 3, 1] : [100, 60, 25, 5]
      // One at a time differs from the load above (idle gaps, timers): each target first serves this shape alone.
      for (const pools of ttftPools) {
        for (const name of names) for (let k = 0; k < warmUp; k++) await firstChunkMs(pools[name] as Pool, body)
      }
      for (let round = 0; round < rounds; round++) {
        const p50: Record<string, number> = {}
        for (let i = 0; i < names.length; i++) {
          const name = names[(round + i) % names.length] as string
          const samples: number[] = []
          for (let k = 0; k < block; k++) {
            const ms = await firstChunkMs(ttftPools[round % ttftPools.length]?.[name] as Pool, body)
            if (k >= dropped) samples.push(ms)
          }
          ttft[name]?.push(...samples)
          p50[name] = median(samples)
        }
        roundDiffs.push((p50.gateway as number) - (p50.bare as number))
      }
      const p = (name: string, q: number) => percentile(ttft[name] ?? [], q)
      print(`\n### ${title}`)
      print('| target | p50 | p99 | added p50 vs direct | added p99 vs direct |')
      print('|---|---|---|---|---|')
      for (const name of names) {
        print(
          `| ${name} | ${p(name, 50).toFixed(3)} | ${p(name, 99).toFixed(3)} | ${(p(name, 50) - p('direct', 50)).toFixed(3)} | ${(p(name, 99) - p('direct', 99)).toFixed(3)} |`,
        )
      }
      const sorted = [...roundDiffs].sort((a, b) => a - b)
      print(
        `\nGateway added TTFT p50 minus bare proxy added TTFT p50: ${(p('gateway', 50) - p('bare', 50)).toFixed(3)} ms ` +
          `(per round: median ${median(roundDiffs).toFixed(3)}, range ${sorted[0]?.toFixed(3)} to ${sorted[sorted.length - 1]?.toFixed(3)} ms)`,
      )
    }
    if (runs('ttft')) {
      await ttftOf('TTFT at concurrency 1: first token of a stream (2 tokens, 5 ms apart), ms', { tokens: 2, gapMs: 5 })
      await ttftOf('TTFT at concurrency 1: a 4-token answer in one chunk, ms', { tokens: 4, gapMs: 0 })
    }
    for (const pools of ttftPools) for (const pool of Object.values(pools)) await pool.close()

    // 2 and 3. Throughput and proxy CPU per request
    const throughput = async (title: string, total: number, concurrency: number, body: string) => {
      // Each proxy first serves this load unmeasured: the rounds measure a steady state, not the switch from the
      // one-at-a-time TTFT phase to concurrency (re-optimization, heap growth).
      for (const { targets } of instances)
        for (const target of [targets.bare, targets.gateway]) await load(target, n(total, 5), concurrency, body)
      // Short interleaved rounds, the proxies' order alternating: the machine's speed drifts within seconds,
      // so the ratio is taken within each round and the median of those ratios reported.
      const rates: Record<string, number[]> = { direct: [], bare: [], gateway: [] }
      const cpu: Record<string, number[]> = { bare: [], gateway: [] }
      const ratios: number[] = []
      let errorCount = 0
      for (let round = 0; round < (SMOKE ? 1 : 6); round++) {
        const { targets, pids } = instance(round)
        const order = round % 2 === 0 ? ['direct', 'bare', 'gateway'] : ['direct', 'gateway', 'bare']
        for (const name of order) {
          const pid = name === 'direct' ? null : pids[name as 'bare' | 'gateway']
          const cpu0 = pid === null ? 0 : cpuSeconds(pid)
          const result = await load(targets[name as keyof typeof targets], total, concurrency, body)
          errorCount += result.errors
          rates[name]?.push(result.requests / result.seconds)
          if (pid !== null) cpu[name]?.push(((cpuSeconds(pid) - cpu0) * 1000) / total)
        }
        ratios.push((cpu.gateway?.[round] as number) / (cpu.bare?.[round] as number))
      }
      // Paired rounds: the gateway and the bare proxy loaded at once for the same period, each at the same
      // concurrency, so whatever the machine does then it does to both; the ratio of their CPU per request.
      const paired: number[] = []
      const pairedMs = SMOKE ? 200 : 2000
      for (let round = 0; round < (SMOKE ? 1 : 11); round++) {
        const { targets, pids } = instance(round)
        const until = performance.now() + pairedMs
        const bare0 = cpuSeconds(pids.bare)
        const gateway0 = cpuSeconds(pids.gateway)
        const [bare, gateway] = await Promise.all([
          load(targets.bare, Number.POSITIVE_INFINITY, concurrency, body, until),
          load(targets.gateway, Number.POSITIVE_INFINITY, concurrency, body, until),
        ])
        errorCount += bare.errors + gateway.errors
        const bareCpu = (cpuSeconds(pids.bare) - bare0) / bare.requests
        paired.push((cpuSeconds(pids.gateway) - gateway0) / gateway.requests / bareCpu)
      }
      const range = (values: number[]) => {
        const sorted = [...values].sort((a, b) => a - b)
        return `median ${median(values).toFixed(2)}, range ${sorted[0]?.toFixed(2)} to ${sorted[sorted.length - 1]?.toFixed(2)}`
      }
      print(`\n### ${title}`)
      print(`| target | req/s | proxy CPU ms/req | CPU ratio vs bare |`)
      print('|---|---|---|---|')
      for (const name of names) {
        const cpuMs = name === 'direct' ? Number.NaN : median(cpu[name] ?? [])
        const ratio = name === 'gateway' ? median(ratios).toFixed(2) : name === 'bare' ? '1.00' : '-'
        print(`| ${name} | ${median(rates[name] ?? []).toFixed(0)} | ${Number.isNaN(cpuMs) ? '-' : cpuMs.toFixed(3)} | ${ratio} |`)
      }
      print(`\nErrors: ${errorCount}. CPU ratio, one proxy at a time: ${range(ratios)} (${ratios.length} rounds).`)
      print(`Paired CPU ratio, both proxies loaded at once (${paired.length} rounds of ${pairedMs / 1000} s): **${range(paired)}**.`)
    }
    if (runs('cpu')) {
      await throughput('Unary, concurrency 32', n(5_000, 20), 32, chatBody(false, { tokens: 16, gapMs: 0 }))
      await throughput('Streams of 64 tokens, concurrency 64', n(1_500, 10), 64, chatBody(true, { tokens: 64, gapMs: 0 }))
    }

    if (runs('slow')) {
      // 4. 1,000 concurrent slow streams (about 1 s each)
      print(`\n### ${n(1000, 20)} concurrent slow streams (1 s each)`)
      print('| target | TTFT p50 ms | TTFT p99 ms | errors | proxy peak RSS MB |')
      print('|---|---|---|---|---|')
      const slow = chatBody(true, { ttftMs: 50, tokens: 20, gapMs: 50 })
      const { targets, pids } = instance(0)
      for (const [name, target] of Object.entries(targets)) {
        const concurrent = n(1000, 20)
        const result = await load(target, concurrent, concurrent, slow)
        const pid = name === 'direct' ? null : pids[name as 'bare' | 'gateway']
        print(
          `| ${name} | ${percentile(result.ttfts, 50).toFixed(1)} | ${percentile(result.ttfts, 99).toFixed(1)} | ${result.errors} | ${pid === null ? '-' : peakRssMb(pid).toFixed(1)} |`,
        )
      }
    }
    if (SMOKE) print('\n(smoke run: tiny counts, numbers not meaningful)')
    else if (process.env.LLMPROXY_BENCH_README === '1' && ONLY === null) {
      // Record the run in README.md (between the bench markers), with when and where it ran.
      const { cpus } = await import('node:os')
      const { replaceSection } = await import('../../scripts/readme-sections.mjs')
      const readme = join(root, 'README.md')
      const header = `Measured ${new Date().toISOString().slice(0, 10)} on ${cores} cores (${cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.version}.\n`
      writeFileSync(readme, replaceSection(readFileSync(readme, 'utf8'), 'bench', header + rows.join('\n')))
      execFileSync('npx', ['biome', 'format', '--write', 'README.md'], { cwd: root, stdio: 'inherit' })
    }
  } finally {
    for (const child of procs) child.kill('SIGTERM')
    rmSync(tmp, { recursive: true, force: true })
  }
}

await main()
