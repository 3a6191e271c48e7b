/**
 * A minimal LLMProxy usage webhook receiver: verifies the signature, dedupes records by id,
 * and sums tokens per key.
 *
 *   WEBHOOK_SECRET=... PORT=9000 node --conditions=llmproxy-source --import tsx src/receiver.ts
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { type UsageRecord, verifySignature, type WebhookPayload } from '@llmproxy/usage'

const MAX_BODY_BYTES = 10 * 1024 * 1024

export interface KeyTotals {
  requests: number
  promptTokens: number
  completionTokens: number
  totalTokens: number
}

export interface Receiver {
  server: Server
  port: number
  /** Tokens per keyId (`null` keys are grouped under "anonymous"). */
  totals: Map<string, KeyTotals>
  close(): Promise<void>
}

export async function startReceiver({
  port = 0,
  secret,
  host = '127.0.0.1',
}: {
  port?: number
  secret: string
  host?: string
}): Promise<Receiver> {
  // Delivery is at-least-once: the same record can arrive twice (a retry after a lost 2xx, a restart).
  // Dedupe by record id. In memory here; in a real system, insert the records with a UNIQUE index on
  // `id` (INSERT … ON CONFLICT DO NOTHING) in the same transaction as the totals, then answer 2xx.
  const seen = new Set<string>()
  const totals = new Map<string, KeyTotals>()

  function account(record: UsageRecord): void {
    if (seen.has(record.id)) return
    seen.add(record.id)
    const key = record.keyId ?? 'anonymous'
    let t = totals.get(key)
    if (t === undefined) {
      t = { requests: 0, promptTokens: 0, completionTokens: 0, totalTokens: 0 }
      totals.set(key, t)
    }
    t.requests++
    t.promptTokens += record.promptTokens
    t.completionTokens += record.completionTokens
    t.totalTokens += record.totalTokens
  }

  function answer(res: ServerResponse, status: number, body: object): void {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body))
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'POST') return answer(res, 405, { error: 'POST only' })
    // The signature covers the raw bytes: read them before parsing.
    const chunks: Buffer[] = []
    let size = 0
    for await (const chunk of req) {
      size += (chunk as Buffer).length
      if (size > MAX_BODY_BYTES) return answer(res, 413, { error: 'body too large' })
      chunks.push(chunk as Buffer)
    }
    const raw = Buffer.concat(chunks)
    if (!verifySignature(secret, req.headers['x-llmproxy-signature'], raw)) return answer(res, 401, { error: 'bad signature' })
    let payload: WebhookPayload
    try {
      payload = JSON.parse(raw.toString('utf8')) as WebhookPayload
    } catch {
      return answer(res, 400, { error: 'invalid JSON' })
    }
    if (!Array.isArray(payload.records)) return answer(res, 400, { error: 'records must be an array' })
    for (const record of payload.records) account(record)
    answer(res, 200, { received: payload.records.length })
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => answer(res, 500, { error: 'internal error' }))
  })
  await new Promise<void>((resolve) => server.listen(port, host, resolve))
  return {
    server,
    port: (server.address() as AddressInfo).port,
    totals,
    close: () => new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve()))),
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const secret = process.env.WEBHOOK_SECRET
  if (!secret) {
    console.error('Set WEBHOOK_SECRET (the usage.webhook.secret of the gateway).')
    process.exit(1)
  }
  const receiver = await startReceiver({ port: Number(process.env.PORT ?? 9000), secret, host: process.env.HOST ?? '127.0.0.1' })
  console.log(`usage webhook receiver on http://127.0.0.1:${receiver.port}/`)
  setInterval(() => console.log(Object.fromEntries(receiver.totals)), 10_000).unref()
  process.on('SIGINT', () => {
    receiver.close().then(() => process.exit(0))
  })
}
