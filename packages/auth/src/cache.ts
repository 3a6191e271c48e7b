import type { KeyEntry } from './keys.js'

interface Slot {
  /** null = unknown key (negative entry). */
  readonly entry: KeyEntry | null
  readonly expiresAt: number
}

export interface KeyCacheOptions {
  ttlMs: number
  negativeTtlMs: number
  max: number
}

/**
 * Results of `resolveKey`, keyed by the hex SHA-256 of the key (never the plaintext): a TTL + LRU
 * map (known keys for `ttlMs`, unknown ones for `negativeTtlMs`), and the lookups in flight, so that
 * concurrent requests with the same key share one call.
 */
export class KeyCache {
  private readonly slots = new Map<string, Slot>()
  private readonly inflight = new Map<string, Promise<KeyEntry | null>>()
  private readonly options: KeyCacheOptions

  constructor(options: KeyCacheOptions) {
    this.options = options
  }

  /** The cached result: an entry, null (known unknown), or undefined (not cached). */
  get(hash: string): KeyEntry | null | undefined {
    const slot = this.slots.get(hash)
    if (slot === undefined) return undefined
    this.slots.delete(hash)
    if (slot.expiresAt <= Date.now()) return undefined
    this.slots.set(hash, slot) // most recently used last
    return slot.entry
  }

  /** Runs `load` unless a lookup of the same key is in flight, and caches what it yields (not errors). */
  resolve(hash: string, load: () => Promise<KeyEntry | null>): Promise<KeyEntry | null> {
    let pending = this.inflight.get(hash)
    if (pending === undefined) {
      pending = load().then(
        (entry) => {
          this.inflight.delete(hash)
          this.set(hash, entry)
          return entry
        },
        (err: unknown) => {
          this.inflight.delete(hash)
          throw err
        },
      )
      this.inflight.set(hash, pending)
    }
    return pending
  }

  clear(): void {
    this.slots.clear()
  }

  private set(hash: string, entry: KeyEntry | null): void {
    const ttl = entry === null ? this.options.negativeTtlMs : this.options.ttlMs
    if (ttl === 0) return
    this.slots.delete(hash)
    if (this.slots.size >= this.options.max) {
      const oldest = this.slots.keys().next()
      if (oldest.done !== true) this.slots.delete(oldest.value)
    }
    this.slots.set(hash, { entry, expiresAt: Date.now() + ttl })
  }
}
