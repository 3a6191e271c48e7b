// Helpers for the usage e2e tests: a signature-checking webhook receiver that can go down and come back
// on the same port, a gateway child process that can be SIGKILLed, a worker pool and client requests
// of every kind (streamed, aborted mid-stream, …).
import { readFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { isDeepStrictEqual } from 'node:util'
import { type UsageRecord, verifySignature } from '@llmproxy/usage'
import { sleep } from './http-helpers.js'

// ---------------------------------------------------------------------------------------------------------------
// Webhook receiver

/** One accepted POST: its `x-llmproxy-delivery` and the ids of its records, in order. */
export interface ReceivedBatch {
  deliveryId: string
  ids: string[]
}

/**
 * A webhook receiver on `node:http`: verifies `x-llmproxy-signature` on the raw body (401 otherwise),
 * answers 200 and keeps every record. It dedupes by record id (`records`) while counting copies and
 * noting anything that breaks the delivery contract (`problems`). `close()` closes its port (open
 * connections included) and `listen(port)` opens it again: the state survives.
 */
export class UsageReceiver {
  /** The first copy of each record, by id. */
  readonly records = new Map<string, UsageRecord>()
  /** How many times each id arrived. */
  readonly copies = new Map<string, number>()
  /** Every accepted batch, in arrival order. */
  readonly batches: ReceivedBatch[] = []
  /** Contract violations seen (a duplicate id inside a batch, a changed record, a missing header, …). */
  readonly problems: string[] = []
  /** Requests refused because of their signature. */
  badSignatures = 0
  private server: Server | null = null
  private currentPort = 0
  private readonly secret: string

  constructor(secret: string) {
    this.secret = secret
  }

  get port(): number {
    return this.currentPort
  }

  get url(): string {
    return `http://127.0.0.1:${this.currentPort}/usage`
  }

  get listening(): boolean {
    return this.server !== null
  }

  /** Records that arrived more than once (after a redelivery). */
  duplicateIds(): string[] {
    return [...this.copies].filter(([, n]) => n > 1).map(([id]) => id)
  }

  /**
   * Starts listening: on `port`, retrying while it is still taken (up to `timeoutMs`), or without one on
   * a free port outside the kernel's ephemeral range, so that no outgoing connection can take it while
   * the receiver is down.
   */
  async listen(port?: number, timeoutMs = 10_000): Promise<number> {
    if (this.server !== null) throw new Error('the receiver is already listening')
    if (port === undefined) {
      const [low] = ephemeralRange()
      const floor = 10_000
      const span = Math.max(1, low - floor)
      for (let i = 0; i < 200; i++) {
        const candidate = floor + Math.floor(Math.random() * span)
        const server = await this.tryListen(candidate)
        if (server !== null) return this.adopt(server)
      }
      throw new Error('no free port found for the webhook receiver')
    }
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const server = await this.tryListen(port)
      if (server !== null) return this.adopt(server)
      if (Date.now() > deadline) throw new Error(`port ${port} stayed taken for ${timeoutMs} ms`)
      await sleep(100)
    }
  }

  /** Closes the port and every open connection (the gateway's keep-alive one too). Idempotent. */
  async close(): Promise<void> {
    const server = this.server
    if (server === null) return
    this.server = null
    await new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
  }

  private adopt(server: Server): number {
    this.server = server
    this.currentPort = (server.address() as AddressInfo).port
    return this.currentPort
  }

  /** A listening server, or null when the port is taken. */
  private tryListen(port: number): Promise<Server | null> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.problems.push(`receiver failed: ${String(err)}`)
        if (!res.headersSent) res.writeHead(500).end()
      })
    })
    // The gateway must see a closed port as soon as close() is called: no lingering keep-alive.
    server.keepAliveTimeout = 1000
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        if (err.code === 'EADDRINUSE' || err.code === 'EACCES') resolve(null)
        else reject(err)
      }
      server.once('error', onError)
      server.listen(port, '127.0.0.1', () => {
        server.off('error', onError)
        resolve(server)
      })
    })
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const raw = Buffer.concat(chunks)
    if (req.method !== 'POST') {
      this.problems.push(`${req.method} ${req.url}`)
      res.writeHead(405).end()
      return
    }
    if (!verifySignature(this.secret, req.headers['x-llmproxy-signature'], raw)) {
      this.badSignatures++
      res.writeHead(401).end()
      return
    }
    const deliveryId = req.headers['x-llmproxy-delivery']
    if (typeof deliveryId !== 'string' || deliveryId === '') this.problems.push('a batch without x-llmproxy-delivery')
    let records: unknown
    try {
      records = (JSON.parse(raw.toString('utf8')) as { records?: unknown }).records
    } catch {
      this.problems.push('a body that is not JSON')
      res.writeHead(400).end()
      return
    }
    if (!Array.isArray(records)) {
      this.problems.push('a body without a records array')
      res.writeHead(400).end()
      return
    }
    const ids: string[] = []
    for (const item of records as unknown[]) {
      const record = item as UsageRecord
      if (item === null || typeof item !== 'object' || typeof record.id !== 'string') {
        this.problems.push(`a record without an id: ${JSON.stringify(item)}`)
        continue
      }
      if (ids.includes(record.id)) this.problems.push(`record ${record.id} twice in one batch`)
      ids.push(record.id)
      const known = this.records.get(record.id)
      if (known === undefined) this.records.set(record.id, record)
      else if (!isDeepStrictEqual(known, record)) this.problems.push(`record ${record.id} changed between deliveries`)
      this.copies.set(record.id, (this.copies.get(record.id) ?? 0) + 1)
    }
    this.batches.push({ deliveryId: typeof deliveryId === 'string' ? deliveryId : '', ids })
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ received: ids.length }))
  }
}

/** The kernel's range of ephemeral ports (Linux), or the usual default. */
function ephemeralRange(): [number, number] {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
    if (low !== undefined && high !== undefined && Number.isInteger(low) && Number.isInteger(high) && low > 10_001) return [low, high]
  } catch {
    // not Linux: fall through
  }
  return [32768, 60999]
}

/** The value of a metric in a Prometheus text exposition (NaN when absent); `labels` as exposed, e.g. `model="m"`. */
export function metricValue(text: string, name: string, labels?: string): number {
  const series = labels === undefined ? name : `${name}{${labels}}`
  const found = new RegExp(`^${series.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} (\\S+)$`, 'm').exec(text)
  return found?.[1] === undefined ? Number.NaN : Number(found[1])
}

// ---------------------------------------------------------------------------------------------------------------
// Load

/** Runs `fn(0..count-1)` with at most `concurrency` calls in flight; rejects with the first error. */
export async function runPool(count: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++
      await fn(i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
}

export interface ClientResult {
  status: number
  /** The whole body as text ('' for an aborted stream). */
  text: string
  requestId: string | null
}

/** POSTs a JSON body and reads the whole answer. */
export async function request(url: string, body: unknown, headers: Record<string, string>): Promise<ClientResult> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  })
  const text = await res.text()
  return { status: res.status, text, requestId: res.headers.get('x-request-id') }
}

/**
 * POSTs a streamed request, waits for the first SSE `data:` event and then goes away (aborts the
 * connection mid-stream). Resolves with the status seen.
 */
export async function requestAndAbort(url: string, body: unknown, headers: Record<string, string>): Promise<ClientResult> {
  const controller = new AbortController()
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
    signal: controller.signal,
  })
  const requestId = res.headers.get('x-request-id')
  const reader = res.body?.getReader()
  if (reader === undefined) throw new Error('a streamed answer without a body')
  const decoder = new TextDecoder()
  let seen = ''
  try {
    while (!seen.includes('data:')) {
      const { value, done } = await reader.read()
      if (done) throw new Error(`the stream ended before it could be aborted: ${seen}`)
      seen += decoder.decode(value, { stream: true })
    }
  } finally {
    controller.abort()
    await reader.cancel().catch(() => undefined)
  }
  return { status: res.status, text: '', requestId }
}
