import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { ConfigError } from '@llmproxy/core'
import { Type, Value } from '@llmproxy/core/typebox'
import type { FastifyBaseLogger } from 'fastify'
import { migrateQuotaKey } from './keys.js'
import type { MemoryStore } from './store.js'

const StateFileSchema = Type.Object({
  version: Type.Literal(1),
  savedAt: Type.String(),
  counters: Type.Array(Type.Tuple([Type.String(), Type.Number(), Type.Number()])),
})

/**
 * Memory store only: keeps quota counters across restarts. Saved (atomically: temp file + rename) every
 * `intervalMs` when a quota counter changed, and on close; loaded at start.
 */
export class QuotaStateFile {
  private readonly path: string
  private readonly store: MemoryStore
  private readonly log: FastifyBaseLogger
  private timer: NodeJS.Timeout | null = null
  private savedVersion = 0
  private saving: Promise<void> = Promise.resolve()

  constructor(path: string, store: MemoryStore, log: FastifyBaseLogger) {
    this.path = resolve(path)
    this.store = store
    this.log = log
  }

  async load(): Promise<void> {
    let text: string
    try {
      text = await readFile(this.path, 'utf8')
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT') return
      // A directory, a file this process may not read: the setting is the operator's to fix, named as such.
      throw new ConfigError(
        '@llmproxy/rate-limit options',
        [{ path: '/quotaStateFile', message: `cannot be read: ${code ?? String(err)}` }],
        {
          cause: err,
        },
      )
    }
    let data: unknown
    try {
      data = JSON.parse(text)
    } catch {
      data = null
    }
    if (!Value.Check(StateFileSchema, data)) {
      this.log.error({ path: this.path }, 'rate-limit: the quota state file is not valid; quotas start from zero')
      return
    }
    // Files written before quota keys had hash tags (`q:<period>:<subject>`) load under the current layout.
    this.store.load(
      data.counters.map(([key, value, expiresAt]) => [migrateQuotaKey(key), value, expiresAt]),
      Date.now(),
    )
    this.savedVersion = this.store.quotaVersion
  }

  start(intervalMs: number): void {
    this.timer = setInterval(() => {
      this.save().catch((err: unknown) => this.log.error({ err, path: this.path }, 'rate-limit: could not save the quota state file'))
    }, intervalMs).unref()
  }

  /** Writes the counters if they changed since the last save; saves never overlap. */
  save(): Promise<void> {
    this.saving = this.saving.catch(() => undefined).then(() => this.write())
    return this.saving
  }

  async close(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    await this.save()
  }

  private async write(): Promise<void> {
    const version = this.store.quotaVersion
    if (version === this.savedVersion) return
    const body = JSON.stringify({ version: 1, savedAt: new Date().toISOString(), counters: this.store.quotaEntries(Date.now()) })
    const tmp = `${this.path}.${process.pid}.tmp`
    await mkdir(dirname(this.path), { recursive: true })
    await writeFile(tmp, body)
    await rename(tmp, this.path)
    this.savedVersion = version
  }
}
