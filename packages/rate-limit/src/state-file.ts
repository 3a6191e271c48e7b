import { readFile, rename, writeFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { ConfigError, makeDirectory } from '@llmproxy/core'
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
 * `intervalMs` when a quota counter changed, and on close; loaded at start, where a file no save could write is
 * refused.
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

  /** Reads the saved counters and saves them back (a ConfigError on `/quotaStateFile` when either fails). */
  async load(): Promise<void> {
    let text: string | null = null
    try {
      text = await readFile(this.path, 'utf8')
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      // A directory, a file this process may not read: the setting is the operator's to fix, named as such.
      if (code !== 'ENOENT') throw unusable(`cannot be read: ${code ?? String(err)}`, err)
    }
    await this.saveBack(text ?? this.body())
    if (text !== null) this.loadCounters(text)
  }

  private loadCounters(text: string): void {
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

  /**
   * What was read (the counters of an empty store when there was no file) written back as a save writes, at start: a
   * read-only filesystem or a directory this process may not write would otherwise fail every save, the one at
   * shutdown included, and quotas would start from zero at the next start.
   */
  private async saveBack(text: string): Promise<void> {
    try {
      makeDirectory(dirname(this.path))
      await this.replace(text)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      // The system's message names the path that failed (the directory, or the temporary file in it).
      throw unusable(
        code === undefined ? `cannot be written: ${String(err)}` : `cannot be written: ${code} (${(err as Error).message})`,
        err,
      )
    }
  }

  private body(): string {
    return JSON.stringify({ version: 1, savedAt: new Date().toISOString(), counters: this.store.quotaEntries(Date.now()) })
  }

  /** Temporary file + rename: the file is always the old one or the new one, never part of one. */
  private async replace(body: string): Promise<void> {
    const tmp = `${this.path}.${process.pid}.tmp`
    await writeFile(tmp, body)
    await rename(tmp, this.path)
  }

  private async write(): Promise<void> {
    const version = this.store.quotaVersion
    if (version === this.savedVersion) return
    const body = this.body()
    // (Not Node's recursive mkdir: see makeDirectory.)
    makeDirectory(dirname(this.path))
    await this.replace(body)
    this.savedVersion = version
  }
}

/** The setting named as the operator's to fix. */
function unusable(message: string, cause: unknown): ConfigError {
  return new ConfigError('@llmproxy/rate-limit options', [{ path: '/quotaStateFile', message }], { cause })
}
