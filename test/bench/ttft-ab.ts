// Dev helper: TTFT at concurrency 1 of several targets, measured as `pnpm bench` does (blocks of 25 requests over
// one kept-alive connection each, the first 5 dropped, the order rotating by round), after a warm-up at concurrency 8.
// usage: ttft-ab.ts [--one-chunk] [--rounds N] URL... (POST /v1/chat/completions; the first URL is the reference)
// Run it on the other core than the targets (taskset -c 1): a client sharing their core skews the figures.
import { parseArgs } from 'node:util'
import { Pool } from 'undici'
import { chatBody, firstTokenMs, median } from './requests.js'

const { values, positionals: targets } = parseArgs({
  options: { 'one-chunk': { type: 'boolean', default: false }, rounds: { type: 'string', default: '30' } },
  allowPositionals: true,
})
const body = chatBody(true, values['one-chunk'] ? { tokens: 4, gapMs: 0 } : { tokens: 2, gapMs: 5 })

// A fresh gateway needs a few thousand requests before its TTFT settles (JIT).
for (const target of targets) {
  const pool = new Pool(target, { connections: 8 })
  const warm = chatBody(true, { tokens: 8, gapMs: 0 })
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 375; i++) await firstTokenMs(pool, warm)
    }),
  )
  await pool.close()
}

const pools = targets.map((t) => new Pool(t, { connections: 1, keepAliveTimeout: 60_000 }))
for (const pool of pools) for (let i = 0; i < 100; i++) await firstTokenMs(pool, body)
const all: number[][] = targets.map(() => [])
const diffs: number[][] = targets.map(() => [])
for (let round = 0; round < Number(values.rounds); round++) {
  const p50: number[] = []
  for (let j = 0; j < pools.length; j++) {
    const k = (round + j) % pools.length
    const samples: number[] = []
    for (let i = 0; i < 25; i++) {
      const ms = await firstTokenMs(pools[k] as Pool, body)
      if (i >= 5) samples.push(ms)
    }
    all[k]?.push(...samples)
    p50[k] = median(samples)
  }
  for (let k = 1; k < pools.length; k++) diffs[k]?.push((p50[k] as number) - (p50[0] as number))
}
for (const [k, target] of targets.entries()) {
  const versus = k === 0 ? '(reference)' : `minus reference: per-round median ${median(diffs[k] as number[]).toFixed(3)} ms`
  console.log(target, 'p50', median(all[k] as number[]).toFixed(3), versus)
}
await Promise.all(pools.map((p) => p.close()))
