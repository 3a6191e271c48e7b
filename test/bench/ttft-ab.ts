// Dev helper: TTFT at concurrency 1 of several targets, interleaved. usage: ttft-ab.ts URL... (POST /v1/chat/completions)
import { Pool } from 'undici'

const targets = process.argv.slice(2)
const body = JSON.stringify({ model: 'bench', stream: true, messages: [{ role: 'user', content: 'x' }], mock: { tokens: 4, gapMs: 0 } })
const pools = targets.map((t) => new Pool(t, { connections: 1 }))
const samples: number[][] = targets.map(() => [])
for (let round = 0; round < 2000; round++) {
  for (let i = 0; i < pools.length; i++) {
    const t0 = performance.now()
    const res = await (pools[i] as Pool).request({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { 'content-type': 'application/json' },
      body,
    })
    let first = true
    for await (const _ of res.body) {
      if (first) {
        if (round >= 200) samples[i]?.push(performance.now() - t0)
        first = false
      }
    }
  }
}
for (const [i, t] of targets.entries()) {
  const s = (samples[i] ?? []).sort((a, b) => a - b)
  console.log(t, 'p50', s[Math.floor(s.length / 2)]?.toFixed(3), 'p90', s[Math.floor(s.length * 0.9)]?.toFixed(3))
}
await Promise.all(pools.map((p) => p.close()))
