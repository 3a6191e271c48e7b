// What `pnpm bench` (run.ts) and its dev helpers share: the request they send and how they read figures.
import type { Pool } from 'undici'

/** The API key of the benchmark's all-features gateway; every target gets it (the others ignore it). */
export const BENCH_API_KEY = 'sk-bench-all-features-0123456789'
export const BENCH_HEADERS = { 'content-type': 'application/json', authorization: `Bearer ${BENCH_API_KEY}` }

/** A chat completion for the mock upstream, which answers in the given shape (tokens, gap between them). */
export const chatBody = (stream: boolean, mock: Record<string, number>) =>
  JSON.stringify({ model: 'bench', stream, messages: [{ role: 'user', content: 'Benchmark me.' }], mock })

/** Milliseconds from sending a streamed request to its first body chunk; the rest is read so the connection is reused. */
export async function firstChunkMs(pool: Pool, body: string): Promise<number> {
  const t0 = performance.now()
  const res = await pool.request({
    method: 'POST',
    path: '/v1/chat/completions',
    headers: BENCH_HEADERS,
    body,
  })
  let ttft = Number.NaN
  for await (const _chunk of res.body) if (Number.isNaN(ttft)) ttft = performance.now() - t0
  if (res.statusCode !== 200) throw new Error(`TTFT request answered ${res.statusCode}`)
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
