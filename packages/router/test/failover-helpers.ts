import type { IncomingHttpHeaders } from 'node:http'
import type { Attempt, UsageRecord } from '@llmproxy/core'
import { type MockBehavior, type MockUpstream, type RecordedRequest, startMockUpstream } from '@llmproxy/mock-upstream'
import { type PassiveHealthOptions, type QueueOptions, type StrategyFactory, type UpstreamConfig, upstreams } from '@llmproxy/upstreams'
import Fastify, { type FastifyInstance } from 'fastify'
import { request } from 'undici'
import { type ModelRoute, type RouterOptions, router } from '../src/index.js'
import { parseSse } from './helpers.js'

/** One mock upstream of a cluster: its default behavior and its upstream settings. */
export interface MockSpec {
  behavior?: MockBehavior
  weight?: number
  maxConcurrency?: number
  /** The upstream's protocol (default openai). */
  protocol?: UpstreamConfig['protocol']
  prefill?: boolean
}

export interface ClusterOptions {
  /** Upstream name → its mock. Each gets its own @llmproxy/mock-upstream on a loopback port. */
  mocks: Record<string, MockSpec>
  models: ModelRoute[]
  router?: Omit<Partial<RouterOptions>, 'models'>
  /** Passive health of @llmproxy/upstreams (default: no ejection, so each test sees every attempt). */
  passive?: Partial<PassiveHealthOptions>
  queue?: Partial<QueueOptions>
  /** Custom strategies by name; `ordered` (always the first available upstream in pool order) is always there. */
  strategies?: Record<string, StrategyFactory>
}

/** Always the first candidate in pool order: makes "the primary" and "the next one" deterministic. */
export const ordered: StrategyFactory = () => ({ pick: (candidates) => candidates[0] })

export interface RecordedAttempt extends Attempt {
  requestId: string
}

/** A real gateway (upstreams + router) in front of several real mock upstreams, all on loopback sockets. */
/** A gateway log line (pino JSON). */
export type LogLine = Record<string, unknown>

export interface Cluster {
  app: FastifyInstance
  url: string
  /** The gateway's log lines at warn level and above. */
  logs: LogLine[]
  /** Upstream name → its mock (replaced by `restart`). */
  mocks: Record<string, MockUpstream>
  records: UsageRecord[]
  attempts: RecordedAttempt[]
  /** The mock of `name`, or a failed assertion. */
  mock(name: string): MockUpstream
  /** Starts `name` again on the same port after it was closed (a crashed upstream coming back). */
  restart(name: string, behavior?: MockBehavior): Promise<MockUpstream>
  /** Clears every mock's requests and program, the records and the attempts; every upstream healthy again. */
  reset(): void
  close(): Promise<void>
}

const DEFAULT_BEHAVIOR: MockBehavior = { tokens: 5 }

export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const mocks: Record<string, MockUpstream> = {}
  const specs = Object.entries(options.mocks)
  let app: FastifyInstance | null = null
  try {
    for (const [name, spec] of specs) {
      mocks[name] = await startMockUpstream({ defaults: { ...DEFAULT_BEHAVIOR, ...spec.behavior } })
    }
    const list: UpstreamConfig[] = specs.map(([name, spec]) => {
      const config: UpstreamConfig = { name, url: (mocks[name] as MockUpstream).url, protocol: spec.protocol ?? 'openai' }
      if (spec.prefill !== undefined) config.prefill = spec.prefill
      if (spec.weight !== undefined) config.weight = spec.weight
      if (spec.maxConcurrency !== undefined) config.maxConcurrency = spec.maxConcurrency
      return config
    })
    const logs: LogLine[] = []
    app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => logs.push(JSON.parse(line)) } } })
    await app.register(upstreams, {
      upstreams: list,
      // Health here is passive only: active checks would add requests to the mocks and race with the tests.
      healthChecks: { enabled: false },
      passive: { failuresToEject: 1000, ...options.passive },
      ...(options.queue ? { queue: options.queue } : {}),
      strategies: { ordered, ...options.strategies },
    })
    await app.register(router, { ...options.router, models: options.models })
    const records: UsageRecord[] = []
    const attempts: RecordedAttempt[] = []
    app.llm.addHook('onUsage', (record) => {
      records.push(record)
    })
    app.llm.addHook('onAttempt', (attempt, req) => {
      attempts.push({ ...attempt, requestId: req.llm.requestId })
    })
    const url = await app.listen({ port: 0, host: '127.0.0.1' })
    const gateway = app
    return {
      app: gateway,
      url,
      mocks,
      records,
      attempts,
      logs,
      mock(name) {
        const mock = mocks[name]
        if (mock === undefined) throw new Error(`no mock named ${name}`)
        return mock
      },
      async restart(name, behavior) {
        const old = mocks[name]
        if (old === undefined) throw new Error(`no mock named ${name}`)
        await old.close()
        const spec = options.mocks[name]
        mocks[name] = await startMockUpstream({ port: old.port, defaults: { ...DEFAULT_BEHAVIOR, ...spec?.behavior, ...behavior } })
        return mocks[name]
      },
      reset() {
        logs.length = 0
        for (const mock of Object.values(mocks)) mock.reset()
        // Health, 429 holds and ejections left by a previous test: every upstream healthy again.
        for (const name of Object.keys(mocks)) gateway.upstreams.enable(name)
        records.length = 0
        attempts.length = 0
      },
      async close() {
        await gateway.close()
        await Promise.all(Object.values(mocks).map((m) => m.close()))
      },
    }
  } catch (err) {
    await app?.close()
    await Promise.all(Object.values(mocks).map((m) => m.close()))
    throw err
  }
}

/** The generation requests a mock received (POSTs; health checks and listings excluded). */
export function generations(mock: MockUpstream): RecordedRequest[] {
  return mock.requests.filter((r) => r.method === 'POST')
}

export interface ClientResult {
  status: number
  headers: IncomingHttpHeaders
  text: string
  /** Client-side wall time of the whole exchange, in ms. */
  ms: number
  startedAt: number
}

/** A client call through the gateway, its body read to the end. */
export async function send(url: string, body: Record<string, unknown>, path = '/v1/chat/completions'): Promise<ClientResult> {
  const startedAt = performance.now()
  const res = await request(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  const text = await res.body.text()
  return { status: res.statusCode, headers: res.headers, text, ms: performance.now() - startedAt, startedAt }
}

export function chatBody(model: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { model, messages: [{ role: 'user', content: 'Hello there' }], ...extra }
}

export interface Answer {
  /** The `model` field(s) of the answer (every chunk of a stream must agree). */
  model: string | null
  content: string
  /** A stream ended with `data: [DONE]`; a JSON answer parsed. */
  complete: boolean
  /** The in-band error event of a stream, if any. */
  streamError: { code: string; type: string; message: string } | null
}

/** Reads a chat completion answer, streamed (SSE) or not. */
export function readAnswer(result: ClientResult): Answer {
  const type = String(result.headers['content-type'] ?? '')
  if (!type.startsWith('text/event-stream')) {
    const body = JSON.parse(result.text) as { model?: string; choices?: { message?: { content?: string } }[] }
    return { model: body.model ?? null, content: body.choices?.[0]?.message?.content ?? '', complete: true, streamError: null }
  }
  const events = parseSse(result.text)
  const models = new Set<string>()
  let content = ''
  let streamError: Answer['streamError'] = null
  for (const event of events) {
    if (event.event === 'error') {
      streamError = (JSON.parse(event.data) as { error: { code: string; type: string; message: string } }).error
      continue
    }
    if (event.data === '[DONE]') continue
    try {
      const chunk = JSON.parse(event.data) as { model?: string; choices?: { delta?: { content?: string } }[] }
      if (chunk.model !== undefined) models.add(chunk.model)
      content += chunk.choices?.[0]?.delta?.content ?? ''
    } catch {
      // malformed upstream data: the caller looks at `text` and `streamError`
    }
  }
  if (models.size > 1) throw new Error(`a stream mixing answers of several models: ${[...models].join(', ')}`)
  return {
    model: models.size === 1 ? ([...models][0] as string) : null,
    content,
    complete: events.at(-1)?.data === '[DONE]',
    streamError,
  }
}

export function errorOf(result: ClientResult): { code: string; type: string; message: string } {
  return (JSON.parse(result.text) as { error: { code: string; type: string; message: string } }).error
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** How many requests a mock was serving at once at most (from receivedAt/closedAt of what it recorded). */
export function peakConcurrency(requests: readonly RecordedRequest[]): number {
  const edges: [number, number][] = []
  for (const r of requests) {
    edges.push([r.receivedAt, 1])
    edges.push([r.closedAt ?? Number.POSITIVE_INFINITY, -1])
  }
  edges.sort((x, y) => x[0] - y[0] || x[1] - y[1])
  let now = 0
  let peak = 0
  for (const [, delta] of edges) {
    now += delta
    if (now > peak) peak = now
  }
  return peak
}
