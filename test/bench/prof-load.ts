import { Pool } from 'undici'
import { BENCH_HEADERS } from './requests.js'

const [target, totalArg, concArg, stream] = process.argv.slice(2)
const total = Number(totalArg)
const body = JSON.stringify({
  model: 'bench',
  stream: stream === 'stream',
  messages: [{ role: 'user', content: 'Benchmark me.' }],
  mock: { tokens: stream === 'stream' ? 64 : 16, gapMs: 0 },
})
const pool = new Pool(target as string, { connections: Number(concArg) })
let next = 0
const t0 = performance.now()
await Promise.all(
  Array.from({ length: Number(concArg) }, async () => {
    while (next++ < total) {
      const res = await pool.request({
        method: 'POST',
        path: '/v1/chat/completions',
        headers: BENCH_HEADERS,
        body,
      })
      await res.body.dump()
    }
  }),
)
console.log(`${total} in ${(performance.now() - t0).toFixed(0)} ms`)
await pool.close()
