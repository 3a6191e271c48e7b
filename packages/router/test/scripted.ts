// Upstreams that answer exactly as a test script says (raw node:http), in front of the real upstreams and router
// plugins: for the edge cases a mock cannot be told to produce (a cut in the middle of a line, an error as the first
// event, a replay that says less).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Attempt, UsageRecord } from '@llmproxy/core'
import { type StrategyFactory, type UpstreamConfig, upstreams } from '@llmproxy/upstreams'
import Fastify, { type FastifyInstance } from 'fastify'
import { type RouterOptions, router } from '../src/index.js'

export type Script = (res: ServerResponse, body: string, req: IncomingMessage) => void | Promise<void>

export interface ScriptedUpstream {
  name: string
  protocol: UpstreamConfig['protocol']
  script: Script
  prefill?: boolean
  /** The request bodies it received. */
  bodies: string[]
}

export interface Scripted {
  url: string
  app: FastifyInstance
  records: UsageRecord[]
  attempts: Attempt[]
  close(): Promise<void>
}

const ordered: StrategyFactory = () => ({ pick: (candidates) => candidates[0] })

export function upstream(name: string, protocol: UpstreamConfig['protocol'], script: Script, prefill?: boolean): ScriptedUpstream {
  return { name, protocol, script, bodies: [], ...(prefill === undefined ? {} : { prefill }) }
}

/** A gateway (upstreams + router, `ordered` strategy) in front of scripted upstreams. */
export async function scripted(
  ups: ScriptedUpstream[],
  models: RouterOptions['models'],
  options: Partial<RouterOptions> = {},
): Promise<Scripted> {
  const servers: Server[] = []
  const configs: UpstreamConfig[] = []
  for (const up of ups) {
    const server = createServer((req, res) => {
      let body = ''
      req.setEncoding('utf8')
      req.on('data', (part: string) => {
        body += part
      })
      req.on('end', () => {
        up.bodies.push(body)
        void up.script(res, body, req)
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    servers.push(server)
    const config: UpstreamConfig = {
      name: up.name,
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      protocol: up.protocol,
    }
    if (up.prefill !== undefined) config.prefill = up.prefill
    configs.push(config)
  }
  const app = Fastify({ logger: false })
  await app.register(upstreams, {
    upstreams: configs,
    healthChecks: { enabled: false },
    passive: { failuresToEject: 1000 },
    strategies: { ordered },
  })
  await app.register(router, { models, ...options })
  const records: UsageRecord[] = []
  const attempts: Attempt[] = []
  app.llm.addHook('onUsage', (record) => {
    records.push(record)
  })
  app.llm.addHook('onAttempt', (attempt) => {
    attempts.push(attempt)
  })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  return {
    url,
    app,
    records,
    attempts,
    async close() {
      await app.close()
      for (const server of servers) {
        server.closeAllConnections()
        await new Promise((resolve) => server.close(resolve))
      }
    },
  }
}

/** An upstream whose SSE answer comes in two reads: `first`, then `rest` `gapMs` later, and its end. */
export function twoReads(name: string, protocol: UpstreamConfig['protocol'], first: string, rest: string, gapMs = 30): ScriptedUpstream {
  return upstream(name, protocol, async (res) => {
    sse(res)
    res.write(first)
    await sleep(gapMs)
    res.end(rest)
  })
}

export function sse(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream' })
}

const chunkOf = (fields: Record<string, unknown>) =>
  `data: ${JSON.stringify({ id: 'up1', object: 'chat.completion.chunk', created: 1, model: 'm', ...fields })}\n\n`
export const role = chunkOf({ choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] })
export const text = (content: string) => chunkOf({ choices: [{ index: 0, delta: { content }, finish_reason: null }] })
export const finish = (reason = 'stop') => chunkOf({ choices: [{ index: 0, delta: {}, finish_reason: reason }] })
export const usageChunk = (prompt: number, completion: number) =>
  chunkOf({ choices: [], usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion } })
export const DONE = 'data: [DONE]\n\n'

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** A streamed chat request, read to its end: the text the client received (with a `<<…>>` note if reading failed). */
export async function streamChat(url: string, model: string): Promise<string> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: 'hi' }] }),
  })
  try {
    return await res.text()
  } catch (err) {
    return `<<${(err as Error).message}>>`
  }
}
