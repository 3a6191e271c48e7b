// `pnpm bench`: the gateway against (a) the mock upstream directly and (b) a bare Fastify + @fastify/reply-from proxy,
// measured in the same run, in two configurations: the minimal one (router, upstreams, metrics: `gateway`) and one
// with every feature a deployment turns on (`full`: an API key with a per-key rpm and tpm limit on the memory store,
// Prometheus metrics, the usage webhook with its spool). Prints ratios to the bare proxy; the figures that separate
// proxies on a small machine are the added TTFT and the proxy's own CPU time per request.
// LLMPROXY_BENCH_SMOKE=1 runs tiny counts (CI checks the harness, not the numbers); LLMPROXY_BENCH_RECORD=1
// writes the results into docs/benchmarks.md. LLMPROXY_BENCH_ONLY=ttft,cpu,convert,streams,cold runs some of the scenarios.
// The gateway runs as users run it (`pnpm start`, the Dockerfile: build/llmproxy.cjs, see scripts/bundle.mjs) and the
// mock from its build; `pnpm bench` builds both first.
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Pool, request } from 'undici'
import {
  BENCH_API_KEY,
  BENCH_HEADERS,
  chatBody,
  cpuSeconds,
  firstTokenMs,
  load,
  median,
  type Proc,
  percentile,
  type RunResult,
  start,
} from './requests.js'

const SMOKE = process.env.LLMPROXY_BENCH_SMOKE === '1'
/** Tokens of the streamed answers of the CPU scenarios (same-format and converted). */
const STREAM_TOKENS = 64
// While working on one scenario; README.md is then left alone.
const ONLY = process.env.LLMPROXY_BENCH_ONLY?.split(',') ?? null
const runs = (scenario: 'ttft' | 'cpu' | 'convert' | 'streams' | 'cold') => ONLY === null || ONLY.includes(scenario)
const root = new URL('../..', import.meta.url).pathname
// The machine's cores, not this process's share: once pinned below, it may run on one core only.
const cores = (await import('node:os')).cpus().length
// Proxies on core 0, mock + webhook receiver + load generator (this process) on core 1, where possible.
const pinning = cores >= 2 && !SMOKE && spawnSync('taskset', ['-V']).status === 0
const pin = (core: string): string[] => (pinning ? ['taskset', '-c', core] : [])
if (pinning && process.env.LLMPROXY_BENCH_PINNED !== '1') {
  const { status } = spawnSync('taskset', ['-c', '1', process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, LLMPROXY_BENCH_PINNED: '1' },
  })
  process.exit(status ?? 1)
}

// nginx (Debian's, when installed) as a reverse proxy in front of the mock: a reference outside Node.js.
const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((path) => !SMOKE && spawnSync(path, ['-v']).status === 0) ?? null
type ProxyName = 'bare' | 'gateway' | 'full' | 'nginx'
const PROXIES: ProxyName[] = NGINX === null ? ['bare', 'gateway', 'full'] : ['bare', 'gateway', 'full', 'nginx']
/** The proxies compared with the bare one. */
const COMPARED = PROXIES.filter((proxy) => proxy !== 'bare')
type Name = 'direct' | ProxyName
const NAMES: Name[] = ['direct', ...PROXIES]
const LABEL: Record<Name, string> = {
  direct: 'direct',
  bare: 'bare',
  gateway: 'gateway (minimal)',
  full: 'gateway (all features)',
  nginx: 'nginx',
}

/** `{ name: make() }` for each name. */
function byName<T>(names: readonly string[], make: () => T): Record<string, T> {
  return Object.fromEntries(names.map((name) => [name, make()]))
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

/** Milliseconds until `url` answers a chat completion with 200 (polled every 2 ms while nothing listens). */
async function firstAnswer(url: string, since: number): Promise<number> {
  const body = chatBody(true, { tokens: 2, gapMs: 0 })
  for (;;) {
    try {
      const res = await request(`${url}/v1/chat/completions`, { method: 'POST', headers: BENCH_HEADERS, body })
      await res.body.dump()
      if (res.statusCode === 200) return performance.now() - since
    } catch {
      // not listening yet
    }
    if (performance.now() - since > 30_000) throw new Error(`${url} never answered`)
    await new Promise((r) => setTimeout(r, 2))
  }
}

function statusMb(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  const match = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return match ? Number(match[1]) / 1024 : Number.NaN
}

function countKind(kinds: Map<string, number>, kind: string): void {
  kinds.set(kind, (kinds.get(kind) ?? 0) + 1)
}

/** `count` streams started evenly over `rampMs`, each on its own connection, all read to the end. */
async function ramp(target: string, count: number, rampMs: number, body: string): Promise<RunResult> {
  const pool = new Pool(target, { connections: count, pipelining: 1, keepAliveTimeout: 60_000 })
  const ttfts: number[] = []
  const kinds = new Map<string, number>()
  let errors = 0
  const started = performance.now()
  const one = async () => {
    const t0 = performance.now()
    try {
      const res = await pool.request({ method: 'POST', path: '/v1/chat/completions', headers: BENCH_HEADERS, body })
      let first = true
      let text = ''
      for await (const chunk of res.body) {
        if (first) {
          ttfts.push(performance.now() - t0)
          first = false
        }
        if (res.statusCode !== 200) text += chunk
      }
      if (res.statusCode !== 200) {
        errors++
        countKind(kinds, `${res.statusCode} ${/"code":"([^"]+)"/.exec(text)?.[1] ?? ''}`.trim())
      }
    } catch (err) {
      errors++
      countKind(kinds, (err as { code?: string }).code ?? String(err))
    }
  }
  const streams: Promise<void>[] = []
  for (let i = 0; i < count; i++) {
    const due = started + (i * rampMs) / count
    const wait = due - performance.now()
    if (wait > 1) await new Promise((r) => setTimeout(r, wait))
    streams.push(one())
  }
  await Promise.all(streams)
  const seconds = (performance.now() - started) / 1000
  await pool.close()
  return { ttfts, errors, requests: count, seconds, kinds }
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
    const receiver = await start(
      'webhook receiver',
      [...pin('1'), 'node', 'test/bench/webhook-receiver.mjs'],
      {},
      /listening (http:\/\/\S+)/,
    )
    procs.push(receiver.child)
    // An Anthropic upstream for the converted-stream scenario (OpenAI client → Anthropic wire): 64 tokens an answer.
    const claude = await start(
      'anthropic mock',
      [...pin('1'), 'node', 'packages/mock-upstream/dist/cli.js', '--port', '0', '--tokens', String(STREAM_TOKENS)],
      {},
      /listening on (http:\/\/\S+)/,
    )
    procs.push(claude.child)

    const base = {
      server: { host: '127.0.0.1', port: 0, logLevel: 'warn' },
      upstreams: [
        { name: 'mock', url: mock.url, protocol: 'openai' },
        { name: 'claude', url: claude.url, protocol: 'anthropic', apiKey: 'sk-bench-anthropic' },
      ],
      models: [
        { name: 'bench', upstreams: ['mock'] },
        { name: 'bench-claude', upstreams: ['claude'], upstreamModel: 'mock-model' },
      ],
      healthChecks: { enabled: false },
    }
    // Limits far above what the benchmark sends: every request is counted and reserved, none refused.
    const key = { id: 'bench', key: BENCH_API_KEY, rateLimit: { rpm: 100_000_000, tpm: 1_000_000_000 } }
    let configs = 0
    const gatewayConfig = (proxy: 'gateway' | 'full'): string => {
      const file = join(tmp, `${proxy}-${++configs}.json`)
      // Each all-features process has its own spool (a spool has one writer).
      const features = {
        auth: { keys: [key] },
        rateLimit: { store: 'memory' },
        metrics: { path: '/metrics' },
        usage: { webhook: { url: `${receiver.url}/usage`, secret: 'bench-webhook-secret' }, spoolDir: join(tmp, `spool-${configs}`) },
      }
      writeFileSync(file, JSON.stringify(proxy === 'full' ? { ...base, ...features } : base))
      return file
    }
    // One process (no master), unbuffered like the others, kept-alive upstream connections like undici's pools.
    const nginxConfig = (port: number): string => {
      const file = join(tmp, `nginx-${port}.conf`)
      writeFileSync(
        file,
        `daemon off; master_process off; worker_processes 1; pid nginx-${port}.pid; worker_rlimit_nofile 20000;
events { worker_connections 19500; }
http {
  access_log off; client_body_temp_path tmp-body; proxy_temp_path tmp-proxy; fastcgi_temp_path tmp-fastcgi;
  uwsgi_temp_path tmp-uwsgi; scgi_temp_path tmp-scgi;
  upstream mock { server ${new URL(mock.url).host}; keepalive 1024; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off; proxy_request_buffering off;
    }
  }
}
`,
      )
      return file
    }
    const startProxy = async (proxy: ProxyName): Promise<Proc & { startedAt: number }> => {
      const startedAt = performance.now()
      if (proxy === 'bare') {
        const bare = await start(
          'bare proxy',
          [...pin('0'), 'node', 'test/bench/bare-proxy.mjs'],
          { BENCH_UPSTREAM: mock.url },
          /listening (http:\/\/\S+)/,
        )
        procs.push(bare.child)
        return { ...bare, startedAt }
      }
      const port = await freePort()
      const command =
        proxy === 'nginx'
          ? [...pin('0'), NGINX as string, '-p', tmp, '-e', 'stderr', '-c', nginxConfig(port)]
          : [...pin('0'), 'node', 'build/llmproxy.cjs', '--config', gatewayConfig(proxy), '--port', String(port)]
      const child = spawn(command[0] as string, command.slice(1), { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] })
      procs.push(child)
      return { child, url: `http://127.0.0.1:${port}`, startedAt }
    }
    const stopProxy = async (proc: Proc) => {
      const exited = new Promise((resolve) => proc.child.once('exit', resolve))
      proc.child.kill('SIGTERM')
      await exited
    }

    // Two processes of each proxy, taking turns by round: two processes of one build differ by up to ~5% in CPU
    // per request (JIT decisions, memory layout), about what separates one run of the benchmark from the next.
    const instances: { targets: Record<string, string>; pids: Record<string, number> }[] = []
    for (let i = 0; i < (SMOKE ? 1 : 2); i++) {
      const instance: (typeof instances)[number] = { targets: { direct: mock.url }, pids: {} }
      for (const proxy of PROXIES) {
        const proc = await startProxy(proxy)
        await firstAnswer(proc.url, proc.startedAt)
        instance.targets[proxy] = proc.url
        instance.pids[proxy] = proc.child.pid as number
      }
      instances.push(instance)
    }
    const targetOf = (round: number, name: string) => instances[round % instances.length]?.targets[name] as string
    const pidOf = (round: number, name: string) => instances[round % instances.length]?.pids[name] as number

    const n = (full: number, smoke: number) => (SMOKE ? smoke : full)
    const rows: string[] = []
    const print = (line: string) => {
      rows.push(line)
      process.stdout.write(`${line}\n`)
    }
    const range = (values: number[], digits = 2) => {
      const sorted = [...values].sort((a, b) => a - b)
      return `median ${median(values).toFixed(digits)}, range ${sorted[0]?.toFixed(digits)} to ${sorted[sorted.length - 1]?.toFixed(digits)}`
    }

    // Warm-up (JIT, connection pools). Measured: the gateway, more code than the bare proxy, needs a few
    // thousand requests before its TTFT settles (after 500 it was still ~0.1 ms above its steady state).
    for (const target of [mock.url, ...instances.flatMap(({ targets }) => PROXIES.map((p) => targets[p] as string))]) {
      await load(target, n(3000, 5), 8, chatBody(true, { tokens: 8, gapMs: 0 }))
    }

    // 1. Added TTFT, streams at concurrency 1 (mock TTFT 0). The targets take turns in short blocks over one
    // kept-alive connection each, in a rotating order, so the machine's drift (seconds) hits them alike; the
    // first requests of a block are dropped (the proxy that ran before evicted the caches of this one).
    // The first token of a paced stream is what TTFT means; the whole answer in one chunk (every token, the
    // usage chunk and [DONE] at once) also puts the end-of-stream work on the first chunk's path.
    const ttftPools = instances.map(({ targets }) =>
      Object.fromEntries(NAMES.map((name) => [name, new Pool(targets[name] as string, { connections: 1, keepAliveTimeout: 60_000 })])),
    )
    const ttftOf = async (title: string, mock: Record<string, number>) => {
      const body = chatBody(true, mock)
      const ttft = byName<number[]>(NAMES, () => [])
      const roundDiffs = byName<number[]>(COMPARED, () => [])
      const [warmUp, rounds, block, dropped] = SMOKE ? [1, 1, 3, 1] : [100, 60, 25, 5]
      // One at a time differs from the load above (idle gaps, timers): each target first serves this shape alone.
      for (const pools of ttftPools) {
        for (const name of NAMES) for (let k = 0; k < warmUp; k++) await firstTokenMs(pools[name] as Pool, body)
      }
      for (let round = 0; round < rounds; round++) {
        const p50: Record<string, number> = {}
        for (let i = 0; i < NAMES.length; i++) {
          const name = NAMES[(round + i) % NAMES.length] as Name
          const samples: number[] = []
          for (let k = 0; k < block; k++) {
            const ms = await firstTokenMs(ttftPools[round % ttftPools.length]?.[name] as Pool, body)
            if (k >= dropped) samples.push(ms)
          }
          ttft[name]?.push(...samples)
          p50[name] = median(samples)
        }
        for (const name of COMPARED) roundDiffs[name]?.push((p50[name] as number) - (p50.bare as number))
      }
      const p = (name: string, q: number) => percentile(ttft[name] ?? [], q)
      print(`\n### ${title}`)
      print('| target | p50 | p99 | added p50 vs direct | added p99 vs direct |')
      print('|---|---|---|---|---|')
      for (const name of NAMES) {
        print(
          `| ${LABEL[name]} | ${p(name, 50).toFixed(3)} | ${p(name, 99).toFixed(3)} | ${(p(name, 50) - p('direct', 50)).toFixed(3)} | ${(p(name, 99) - p('direct', 99)).toFixed(3)} |`,
        )
      }
      print('\nAdded TTFT p50 minus the bare proxy’s, ms:')
      for (const name of COMPARED) {
        print(`- ${LABEL[name]}: ${(p(name, 50) - p('bare', 50)).toFixed(3)} (per round: ${range(roundDiffs[name] ?? [], 3)})`)
      }
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
      for (const { targets } of instances) for (const proxy of PROXIES) await load(targets[proxy] as string, n(total, 5), concurrency, body)
      // Short interleaved rounds, the proxies' order rotating: the machine's speed drifts within seconds,
      // so the ratio is taken within each round and the median of those ratios reported.
      const rates = byName<number[]>(NAMES, () => [])
      const cpu = byName<number[]>(PROXIES, () => [])
      const ratios = byName<number[]>(COMPARED, () => [])
      let errorCount = 0
      for (let round = 0; round < (SMOKE ? 1 : 6); round++) {
        const order: Name[] = ['direct', ...PROXIES.map((_, i) => PROXIES[(round + i) % PROXIES.length] as ProxyName)]
        for (const name of order) {
          const pid = name === 'direct' ? null : pidOf(round, name)
          const cpu0 = pid === null ? 0 : cpuSeconds(pid)
          const result = await load(targetOf(round, name), total, concurrency, body)
          errorCount += result.errors
          rates[name]?.push(result.requests / result.seconds)
          if (pid !== null) cpu[name]?.push(((cpuSeconds(pid) - cpu0) * 1000) / total)
        }
        for (const name of COMPARED) ratios[name]?.push((cpu[name]?.[round] as number) / (cpu.bare?.[round] as number))
      }
      // Paired rounds: the proxies loaded at once for the same period, each at the same concurrency, so whatever
      // the machine does then it does to all; the ratio of their CPU per request.
      const paired = byName<number[]>(COMPARED, () => [])
      const pairedMs = SMOKE ? 200 : 2000
      for (let round = 0; round < (SMOKE ? 1 : 11); round++) {
        const until = performance.now() + pairedMs
        const cpu0 = PROXIES.map((proxy) => cpuSeconds(pidOf(round, proxy)))
        const results = await Promise.all(
          PROXIES.map((proxy) => load(targetOf(round, proxy), Number.POSITIVE_INFINITY, concurrency, body, until)),
        )
        const perRequest = byName<number>([], () => 0)
        PROXIES.forEach((proxy, i) => {
          const result = results[i] as RunResult
          errorCount += result.errors
          perRequest[proxy] = (cpuSeconds(pidOf(round, proxy)) - (cpu0[i] as number)) / result.requests
        })
        for (const name of COMPARED) paired[name]?.push((perRequest[name] as number) / (perRequest.bare as number))
      }
      print(`\n### ${title}`)
      print('| target | req/s | proxy CPU ms/req | CPU ratio vs bare, one at a time | CPU ratio vs bare, paired |')
      print('|---|---|---|---|---|')
      for (const name of NAMES) {
        const cpuMs = name === 'direct' ? '-' : median(cpu[name] ?? []).toFixed(3)
        const alone = name === 'direct' ? '-' : name === 'bare' ? '1.00' : median(ratios[name] ?? []).toFixed(2)
        const both = name === 'direct' ? '-' : name === 'bare' ? '1.00' : `**${median(paired[name] ?? []).toFixed(2)}**`
        print(`| ${LABEL[name]} | ${median(rates[name] ?? []).toFixed(0)} | ${cpuMs} | ${alone} | ${both} |`)
      }
      print(
        `\nErrors: ${errorCount}. One proxy at a time: ${ratios.gateway?.length} rounds; paired: all ${PROXIES.length} proxies loaded at once, ${paired.gateway?.length} rounds of ${pairedMs / 1000} s.`,
      )
      for (const name of COMPARED) {
        print(`- ${LABEL[name]}: one at a time ${range(ratios[name] ?? [])}; paired ${range(paired[name] ?? [])}`)
      }
    }
    if (runs('cpu')) {
      await throughput('Unary, concurrency 32', n(5_000, 20), 32, chatBody(false, { tokens: 16, gapMs: 0 }))
      await throughput('Streams of 64 tokens, concurrency 64', n(1_500, 10), 64, chatBody(true, { tokens: STREAM_TOKENS, gapMs: 0 }))
    }

    if (runs('convert')) {
      // 4. A converted stream (OpenAI client, Anthropic upstream: every event decoded and re-encoded) against the
      // same-format stream, on the same gateway process, the two loads alternating by round; CPU per request of each.
      const same = chatBody(true, { tokens: STREAM_TOKENS, gapMs: 0 })
      const converted = JSON.stringify({
        model: 'bench-claude',
        stream: true,
        max_tokens: 1024,
        messages: [{ role: 'user', content: 'Benchmark me.' }],
      })
      const total = n(1_500, 10)
      print(`\n### Converted streams: OpenAI client on an Anthropic upstream, ${STREAM_TOKENS} tokens, concurrency 64`)
      print('| gateway | same-format CPU ms/req | converted CPU ms/req | converted vs same-format | added per event, µs | errors |')
      print('|---|---|---|---|---|---|')
      for (const proxy of ['gateway', 'full'] as const) {
        const target = targetOf(0, proxy)
        const pid = pidOf(0, proxy)
        const cpu = { same: [] as number[], converted: [] as number[] }
        const ratios: number[] = []
        let errors = 0
        await load(target, n(total, 5), 64, converted)
        for (let round = 0; round < (SMOKE ? 1 : 8); round++) {
          const order = round % 2 === 0 ? (['same', 'converted'] as const) : (['converted', 'same'] as const)
          for (const kind of order) {
            const cpu0 = cpuSeconds(pid)
            const result = await load(target, total, 64, kind === 'same' ? same : converted)
            errors += result.errors
            cpu[kind].push(((cpuSeconds(pid) - cpu0) * 1000) / total)
          }
          ratios.push((cpu.converted[round] as number) / (cpu.same[round] as number))
        }
        const perEventUs = ((median(cpu.converted) - median(cpu.same)) * 1000) / STREAM_TOKENS
        print(
          `| ${LABEL[proxy]} | ${median(cpu.same).toFixed(3)} | ${median(cpu.converted).toFixed(3)} | **${median(ratios).toFixed(2)}** (${range(ratios)}) | ${perEventUs.toFixed(2)} | ${errors} |`,
        )
      }
    }

    if (runs('streams')) {
      // 5. Many concurrent streams on one core: started evenly over a few seconds, each lasting longer than the
      // ramp, so all are open at once at the end of it. Peak RSS: each process's high-water mark (VmHWM), after
      // the same history for every proxy.
      const count = n(9000, 50)
      // Over 8 s: 1,125 new connections a second to the proxy and from it to the mock (faster, on this 2-core machine
      // their listen backlogs overflow and connections wait for SYN retries). 15 tokens 800 ms apart, so that every
      // stream is still open when the last one starts; the mock and this load generator share a core, so their work
      // per stream is kept small.
      const rampMs = n(8000, 200)
      const gapMs = n(800, 10)
      const body = chatBody(true, { ttftMs: 50, tokens: 15, gapMs })
      print(`\n### ${count} concurrent streams (started over ${rampMs / 1000} s, ${(15 * gapMs) / 1000} s each)`)
      print('| target | TTFT p50 ms | TTFT p99 ms | errors | proxy peak RSS MB | RSS vs bare |')
      print('|---|---|---|---|---|---|')
      const peaks: Record<string, number> = {}
      for (const name of NAMES) {
        const result = await ramp(targetOf(0, name), count, rampMs, body)
        const pid = name === 'direct' ? null : pidOf(0, name)
        const peak = pid === null ? Number.NaN : statusMb(pid, 'VmHWM')
        if (name !== 'direct') peaks[name] = peak
        const versus = name === 'direct' ? '-' : (peak / (peaks.bare as number)).toFixed(2)
        const kinds = [...(result.kinds ?? [])].map(([kind, count]) => `${count}× ${kind}`).join(', ')
        print(
          `| ${LABEL[name]} | ${percentile(result.ttfts, 50).toFixed(1)} | ${percentile(result.ttfts, 99).toFixed(1)} | ${result.errors}${kinds === '' ? '' : ` (${kinds})`} | ${pid === null ? '-' : peak.toFixed(1)} | ${versus} |`,
        )
      }
    }

    // Requests the cold all-features processes metered (their records are delivered when they stop).
    let coldMetered = 0
    if (runs('cold')) {
      // 6. Cold start: a fresh process, from spawn to its first answered request (three starts, the median), its
      // memory then, and the TTFT of its first 1,000 requests (one at a time) against 1,000 on the warm process of the
      // same proxy. The two take turns in blocks of 25, the order alternating, so that the machine's drift (seconds)
      // hits them alike; every start is measured, and the median of the starts' differences is the figure.
      const starts = n(3, 1)
      const requests = n(1000, 10)
      const block = n(25, 5)
      const body = chatBody(true, { tokens: 2, gapMs: 5 })
      print(`\n### Cold start: first answer after spawn, and the first ${requests} requests`)
      print(
        `| target | first answer ms | RSS then MB | first ${requests}: TTFT mean ms | warm, in turns with them: TTFT mean ms | added by a cold process, mean ms (${starts} starts: median, range) |`,
      )
      print('|---|---|---|---|---|---|')
      const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length
      for (const proxy of PROXIES) {
        const firsts: number[] = []
        const colds: number[] = []
        const warms: number[] = []
        let idleRss = Number.NaN
        const warmPool = new Pool(targetOf(0, proxy), { connections: 1, keepAliveTimeout: 60_000 })
        for (let i = 0; i < starts; i++) {
          const proc = await startProxy(proxy)
          firsts.push(await firstAnswer(proc.url, proc.startedAt))
          if (i === 0) idleRss = statusMb(proc.child.pid as number, 'VmRSS')
          const coldPool = new Pool(proc.url, { connections: 1, keepAliveTimeout: 60_000 })
          const cold: number[] = []
          const warm: number[] = []
          for (let b = 0; b < requests / block; b++) {
            const turns: [Pool, number[]][] = [
              [coldPool, cold],
              [warmPool, warm],
            ]
            if (b % 2 === 1) turns.reverse()
            for (const [pool, times] of turns) for (let k = 0; k < block; k++) times.push(await firstTokenMs(pool, body))
          }
          await coldPool.close()
          await stopProxy(proc)
          colds.push(mean(cold))
          warms.push(mean(warm))
          if (proxy === 'full') coldMetered += requests + 1
        }
        await warmPool.close()
        const added = colds.map((cold, i) => cold - (warms[i] as number))
        print(
          `| ${LABEL[proxy]} | ${median(firsts).toFixed(0)} | ${idleRss.toFixed(1)} | ${median(colds).toFixed(3)} | ${median(warms).toFixed(3)} | **${median(added).toFixed(3)}** (${range(added, 3)}) |`,
        )
      }
    }

    // Every request the all-features gateways metered reached the webhook (after its batch wait).
    await new Promise((r) => setTimeout(r, 1500))
    let metered = coldMetered
    for (const { targets } of instances) {
      const text = await (await fetch(`${targets.full}/metrics`)).text()
      for (const match of text.matchAll(/^llmproxy_requests_total\{[^}]*\} (\d+)$/gm)) metered += Number(match[1])
    }
    const delivered = (await (await fetch(`${receiver.url}/count`)).json()) as { records: number }
    print(`\nUsage webhook: ${delivered.records} records delivered for ${metered} requests to the all-features gateways.`)

    if (SMOKE) print('\n(smoke run: tiny counts, numbers not meaningful)')
    else if (process.env.LLMPROXY_BENCH_RECORD === '1' && ONLY === null) {
      // Record the run in docs/benchmarks.md (between the bench markers), with when and where it ran.
      const { cpus } = await import('node:os')
      const { replaceSection } = await import('../../scripts/readme-sections.mjs')
      const readme = join(root, 'docs/benchmarks.md')
      const header = `Measured ${new Date().toISOString().slice(0, 10)} on ${cores} cores (${cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.version}.\n`
      writeFileSync(readme, replaceSection(readFileSync(readme, 'utf8'), 'bench', header + rows.join('\n')))
      execFileSync('npx', ['biome', 'format', '--write', 'docs/benchmarks.md'], { cwd: root, stdio: 'inherit' })
    }
  } finally {
    for (const child of procs) child.kill('SIGTERM')
    rmSync(tmp, { recursive: true, force: true })
  }
}

await main()
