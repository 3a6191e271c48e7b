// The webhook sink's CPU per usage record: serialise, spool (one write per event-loop turn), deliver in batches of
// 100 to a receiver in another process, acknowledge (cursor). Without the gateway around it, so that its own cost shows.
// Run: node --conditions=llmproxy-source --import tsx packages/usage/bench/sink.ts [records per round] [records per turn]
// Pin it (taskset -c 0) with the receiver elsewhere for steadier figures; "base" is the same loop building records only.
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { UsageRecord } from '@llmproxy/core'
import { validateOptions } from '@llmproxy/core'
import Fastify from 'fastify'
import { UsageOptionsSchema } from '../src/options.js'
import { WebhookSink } from '../src/sink.js'
import type { Counters } from '../src/types.js'

const PER_ROUND = Number(process.argv[2] ?? 50_000)
const PER_TURN = Number(process.argv[3] ?? 4)

const receiver = spawn(process.execPath, [new URL('../../../test/bench/webhook-receiver.mjs', import.meta.url).pathname], {
  stdio: ['ignore', 'pipe', 'inherit'],
})
const url = await new Promise<string>((resolve) => {
  receiver.stdout.on('data', (data: Buffer) => {
    const match = /listening (http:\/\/\S+)/.exec(data.toString())
    if (match) resolve(match[1] as string)
  })
})
const dir = mkdtempSync(join(tmpdir(), 'llmproxy-sink-bench-'))
const options = validateOptions(UsageOptionsSchema, { webhook: { url: `${url}/usage`, secret: 'bench' }, spoolDir: dir }, 'bench')
const counters: Counters = { delivered: 0, deliveryFailures: 0, dropped: 0, notSpooled: 0, lastDeliveryAt: null, lastError: null }
const sink = new WebhookSink(
  { ...options, spoolDir: dir, webhook: options.webhook as NonNullable<typeof options.webhook> },
  counters,
  new EventEmitter(),
  Fastify({ logger: { level: 'warn' } }).log,
)
sink.start()

function record(): UsageRecord {
  const ms = Math.round(Math.random() * 5000) / 1000
  return {
    id: randomUUID(),
    timestamp: new Date().toISOString(),
    requestId: randomUUID(),
    keyId: 'bench',
    model: 'bench',
    upstreamModel: 'bench',
    upstream: 'mock',
    protocol: 'openai',
    clientApi: 'openai',
    stream: false,
    status: 200,
    promptTokens: 11,
    completionTokens: 16,
    totalTokens: 27,
    estimated: false,
    ttftMs: ms,
    durationMs: ms,
    attempts: 1,
    resumed: false,
    clientAborted: false,
  }
}

/** µs of CPU per record: `PER_TURN` records per event-loop turn, handed to `use`; with the sink, until delivered. */
async function round(use: (record: UsageRecord) => void, flush: boolean): Promise<number> {
  const start = process.cpuUsage()
  let made = 0
  await new Promise<void>((resolve) => {
    const turn = (): void => {
      for (let i = 0; i < PER_TURN && made < PER_ROUND; i++, made++) use(record())
      if (made < PER_ROUND) setImmediate(turn)
      else resolve()
    }
    turn()
  })
  if (flush) await sink.flush()
  const used = process.cpuUsage(start)
  return (used.user + used.system) / PER_ROUND
}

const base = (): void => {}
await round(sink.listener, true)
const rows: string[] = []
for (let i = 0; i < 5; i++) {
  const without = await round(base, false)
  const withSink = await round(sink.listener, true)
  rows.push(`${withSink.toFixed(2)} (base ${without.toFixed(2)})`)
}
console.log(`sink, µs of CPU per record, ${PER_TURN} per turn: ${rows.join(', ')}; delivered ${counters.delivered}`)
await sink.close(5000)
receiver.kill()
rmSync(dir, { recursive: true, force: true })
