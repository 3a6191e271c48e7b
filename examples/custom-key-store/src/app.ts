import { createHash } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { auth, type KeyIdentity } from '@llmproxy/auth'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'

export function sha256Hex(key: string): string {
  return createHash('sha256').update(key).digest('hex')
}

/** A row of your key table. It stores the SHA-256 of the key, never the key itself. */
export interface KeyRow {
  id: string
  plan: 'free' | 'pro'
  models: string[]
  revoked: boolean
}

/** Stands in for your database: an in-memory Map behind an async API with some latency. */
export class KeyDatabase {
  private readonly rows = new Map<string, KeyRow>()
  /** How many times the gateway asked (to see the cache at work). */
  lookups = 0

  async insert(key: string, row: KeyRow): Promise<void> {
    this.rows.set(sha256Hex(key), row)
  }

  async findByHash(hash: string): Promise<KeyRow | undefined> {
    this.lookups++
    await sleep(5)
    return this.rows.get(hash)
  }

  async revoke(id: string): Promise<void> {
    for (const row of this.rows.values()) if (row.id === id) row.revoked = true
  }
}

const LIMITS = {
  free: { rpm: 10, quota: { tokens: 100_000, per: 'day' } },
  pro: { rpm: 600, tpm: 200_000 },
} as const

/** From a row to what @llmproxy/auth needs: id, allowed models, limits (read by @llmproxy/rate-limit), metadata. */
function toIdentity(row: KeyRow): KeyIdentity {
  return { id: row.id, models: row.models, limits: LIMITS[row.plan], metadata: { plan: row.plan } }
}

export async function buildApp(db: KeyDatabase, options?: FastifyServerOptions): Promise<FastifyInstance> {
  const app = Fastify(options)
  await app.register(auth, {
    // Found keys are cached 30 s, unknown ones 5 s, keyed by the key's SHA-256.
    cache: { ttlMs: 30_000, negativeTtlMs: 5_000 },
    resolveKey: async (_request, presentedKey) => {
      const row = await db.findByHash(sha256Hex(presentedKey))
      return row === undefined || row.revoked ? null : toIdentity(row)
    },
  })

  app.get('/health', { config: { auth: false } }, async () => ({ status: 'ok' }))

  app.get('/v1/me', async (request) => ({
    id: request.llmKey?.id,
    plan: request.llmKey?.metadata?.plan,
    limits: request.llm.keyLimits,
  }))

  return app
}

// `pnpm start`: a demo key store with one key, taken from DEMO_KEY (default sk-demo-key).
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const db = new KeyDatabase()
  await db.insert(process.env.DEMO_KEY ?? 'sk-demo-key', { id: 'demo', plan: 'pro', models: ['*'], revoked: false })
  const app = await buildApp(db, { logger: true })
  await app.listen({ port: Number(process.env.PORT ?? 3000), host: '127.0.0.1' })
}
