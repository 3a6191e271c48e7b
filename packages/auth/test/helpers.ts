import { createHash } from 'node:crypto'
import type { Rejection } from '@llmproxy/core'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { type AuthPluginOptions, auth } from '../src/index.js'

export const KEY_A = 'sk-alpha-5f1e2d3c4b5a69788796a5b4'
export const KEY_B = 'sk-beta-0a1b2c3d4e5f60718293a4b5'

export function sha256Hex(key: string): string {
  return createHash('sha256').update(key).digest('hex')
}

/** What the test route answers: what auth left on the request. */
export interface Seen {
  keyId: string | null
  allowedModels: string[] | null
  keyLimits: unknown
  llmKey: unknown
}

export interface TestApp {
  app: FastifyInstance
  rejections: Rejection[]
  /** The objects auth left on each request served by `/v1/whoami` (to check they are shared, not rebuilt). */
  served: Array<[unknown, unknown, unknown]>
}

/** An app with auth, a protected route `/v1/whoami` and an opted-out `/health`. Close it with `app.close()`. */
export async function build(options: AuthPluginOptions, server?: FastifyServerOptions): Promise<TestApp> {
  const app = Fastify(server)
  const rejections: Rejection[] = []
  const served: TestApp['served'] = []
  await app.register(auth, options)
  app.llm.addHook('onReject', (rejection) => {
    rejections.push(rejection)
  })
  app.get('/v1/whoami', async (request): Promise<Seen> => {
    const allowed = request.llm.allowedModels
    served.push([allowed, request.llm.keyLimits, request.llmKey])
    return {
      keyId: request.llm.keyId,
      allowedModels: allowed === null ? null : [...allowed],
      keyLimits: request.llm.keyLimits,
      llmKey: request.llmKey,
    }
  })
  app.get('/health', { config: { auth: false } }, async (request) => ({ ok: true, keyId: request.llm.keyId }))
  await app.ready()
  return { app, rejections, served }
}

/** A pino destination that keeps every line, to assert what was (not) logged. */
export function logCapture(): { lines: string[]; logger: { level: string; stream: { write(line: string): void } } } {
  const lines: string[] = []
  return { lines, logger: { level: 'trace', stream: { write: (line: string) => void lines.push(line) } } }
}
