import * as fs from 'node:fs'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import { Writable } from 'node:stream'
import { after } from 'node:test'
import type { UsageRecord } from '@llmproxy/core'
import { eventually } from '@llmproxy/mock-upstream'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { type UsageOptionsInput, usage } from '../src/index.js'

export { usageRecord, usageStats } from '../../../test/support/usage.js'

/** Emits through core exactly as the router does (listeners here ignore the request). */
export function emit(app: FastifyInstance, record: UsageRecord): void {
  app.llm.emitUsage(record, { log: app.log } as unknown as FastifyRequest)
}

/** Resolves once the current event-loop turn has ended: the sink has then appended the records emitted in it. */
export function endOfTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}

export interface Delivery {
  headers: IncomingHttpHeaders
  raw: string
  ids: string[]
  status: number
}

export interface Receiver {
  url: string
  port: number
  /** Every request received, with the status answered. */
  deliveries: Delivery[]
  /** Distinct record ids acknowledged with a 2xx (what a deduping receiver keeps). */
  ids: Set<string>
  /** Decides the status of each request (default 200); 'hang' never answers, 'destroy' resets the socket. */
  respond: (n: number, delivery: Delivery) => number | 'hang' | 'destroy'
  close(): Promise<void>
}

export async function startReceiver(port = 0): Promise<Receiver> {
  const sockets = new Set<import('node:net').Socket>()
  const receiver: Receiver = {
    url: '',
    port: 0,
    deliveries: [],
    ids: new Set(),
    respond: () => 200,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString()
      const body = JSON.parse(raw) as { records: { id: string }[] }
      const delivery: Delivery = { headers: req.headers, raw, ids: body.records.map((r) => r.id), status: 0 }
      const decision = receiver.respond(receiver.deliveries.length, delivery)
      receiver.deliveries.push(delivery)
      if (decision === 'hang') return
      if (decision === 'destroy') {
        req.socket.destroy()
        return
      }
      delivery.status = decision
      if (decision >= 200 && decision < 300) for (const id of delivery.ids) receiver.ids.add(id)
      res.statusCode = decision
      res.end()
    })
  })
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  receiver.port = (server.address() as AddressInfo).port
  receiver.url = `http://127.0.0.1:${receiver.port}/usage`
  return receiver
}

/** A port that was free a moment ago and is now closed (connections are refused). */
export async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/**
 * A maker of fresh spool directories for one test file: each call gives a new empty directory, and all of
 * them are removed when the file's tests are done. Call it at the file's top level.
 */
export function spoolDirs(): () => string {
  const dirs: string[] = []
  after(() => {
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true })
  })
  return () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'llmproxy-usage-'))
    dirs.push(dir)
    return dir
  }
}

/** Log lines captured from the app's pino logger. */
export interface LogCapture {
  lines: { level: number; msg: string; [key: string]: unknown }[]
  stream: Writable
}

export function captureLogs(): LogCapture {
  const capture: LogCapture = {
    lines: [],
    stream: new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const line of chunk.toString().split('\n')) if (line) capture.lines.push(JSON.parse(line))
        cb()
      },
    }),
  }
  return capture
}

export async function buildApp(options: UsageOptionsInput, logs?: LogCapture): Promise<FastifyInstance> {
  const app = Fastify({ logger: logs ? { level: 'warn', stream: logs.stream } : false })
  await app.register(usage, options)
  await app.ready()
  return app
}

/** Polls `check` until it is true; fails after `timeoutMs` (generous: the machine is shared). */
export function waitFor(check: () => boolean, timeoutMs = 15_000, what = 'condition'): Promise<void> {
  return eventually(check, timeoutMs, what)
}

export function segmentFiles(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((n) => n.endsWith('.jsonl'))
    .sort()
}
