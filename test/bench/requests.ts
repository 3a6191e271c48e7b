// What `pnpm bench` (run.ts) and its dev helpers share: the request they send, how they start processes, load them
// and read figures.
import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { Pool } from 'undici'

const root = new URL('../..', import.meta.url).pathname
/** Clock ticks per second of /proc/<pid>/stat's CPU times. */
const CLK_TCK = 100

/** The API key of the benchmark's all-features gateway; every target gets it (the others ignore it). */
export const BENCH_API_KEY = 'sk-bench-all-features-0123456789'
export const BENCH_HEADERS = { 'content-type': 'application/json', authorization: `Bearer ${BENCH_API_KEY}` }

/** A chat completion for the mock upstream, which answers in the given shape (tokens, gap between them). */
export const chatBody = (stream: boolean, mock: Record<string, number>) =>
  JSON.stringify({ model: 'bench', stream, messages: [{ role: 'user', content: 'Benchmark me.' }], mock })

/** A content delta with text in it: an answer token (the role chunk's `"content":""` is none). */
const TOKEN = /"content":"[^"]/

/**
 * Milliseconds from sending a streamed request to its first answer token (the first chunk holding text, not the role
 * chunk before it: what an SDK surfaces first); the rest is read so the connection is reused.
 */
export async function firstTokenMs(pool: Pool, body: string): Promise<number> {
  const t0 = performance.now()
  const res = await pool.request({
    method: 'POST',
    path: '/v1/chat/completions',
    headers: BENCH_HEADERS,
    body,
  })
  let ttft = Number.NaN
  // The end of the chunks so far, for a token split between two.
  let tail = ''
  for await (const chunk of res.body) {
    if (!Number.isNaN(ttft)) continue
    const text = tail + (chunk as Buffer).toString('latin1')
    if (TOKEN.test(text)) ttft = performance.now() - t0
    else tail = text.slice(-16)
  }
  if (res.statusCode !== 200) throw new Error(`TTFT request answered ${res.statusCode}`)
  if (Number.isNaN(ttft)) throw new Error('TTFT request: no token in the answer')
  return ttft
}

export function median(values: number[]): number {
  return percentile(values, 50)
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number
}

/** A process started by `start`, with the URL it said it listens on. */
export interface Proc {
  child: ChildProcess
  url: string
}

/** Starts `command` in the repository root; resolves once its output matches `ready` (group 1: its URL). */
export function start(label: string, command: string[], env: NodeJS.ProcessEnv, ready: RegExp): Promise<Proc> {
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

/** The process's CPU time so far (user + system, all threads), from /proc. */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK
}

export interface RunResult {
  ttfts: number[]
  errors: number
  requests: number
  seconds: number
  /** What the errors were: HTTP statuses and error codes, with their counts. */
  kinds?: Map<string, number>
}

/**
 * `total` requests, `concurrency` at a time, and none started after `until` (a performance.now() time);
 * TTFT = first body chunk after the request was sent.
 */
export async function load(
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
        const res = await pool.request({ method: 'POST', path: '/v1/chat/completions', headers: BENCH_HEADERS, body })
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
