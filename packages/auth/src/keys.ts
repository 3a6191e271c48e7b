import { hash } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import type { ConfigProblem, KeyLimits } from '@llmproxy/core'
import { clientApiOf } from '@llmproxy/protocols'
import type { KeyConfig, KeyIdentity } from './options.js'

/** What a request gets when its key is accepted; built once per key, shared by its requests. */
export interface KeyEntry {
  readonly identity: KeyIdentity
  /** null = all models. */
  readonly allowedModels: ReadonlySet<string> | null
  readonly limits: KeyLimits | null
}

/** The configured keys, swapped as a whole on reload. Of a key only its SHA-256 digest is kept (as `byHash`'s key). */
export interface KeyTable {
  /** By hex SHA-256 of the key. */
  readonly byHash: ReadonlyMap<string, KeyEntry>
  readonly byId: ReadonlyMap<string, KeyEntry>
}

/** The key's SHA-256 digest in lowercase hex (the one-shot `crypto.hash`: ~0.3 µs, a Hash object ~2 µs). */
export function sha256Hex(key: string): string {
  return hash('sha256', key, 'hex')
}

const SHA256_PREFIX = 'sha256:'
const HEX64 = /^[0-9a-f]{64}$/
const PRINTABLE_ASCII = /^[\x21-\x7e]+$/

/**
 * Why a client could never present `secret` as written in an HTTP header (`Authorization: Bearer <secret>`), or null:
 * a space or a trailing newline (a secret written with `echo`) never arrives as configured.
 */
export function unsendableSecretProblem(secret: string): string | null {
  return PRINTABLE_ASCII.test(secret) ? null : 'must be printable ASCII without spaces (clients send it in an HTTP header)'
}

/** The limits object `request.llm.keyLimits` gets: only the fields set, frozen; null when none. */
function limitsOf(limits: KeyLimits | undefined): KeyLimits | null {
  if (limits === undefined) return null
  const out: KeyLimits = {}
  if (limits.rpm !== undefined) out.rpm = limits.rpm
  if (limits.rps !== undefined) out.rps = limits.rps
  if (limits.tpm !== undefined) out.tpm = limits.tpm
  if (limits.concurrency !== undefined) out.concurrency = limits.concurrency
  if (limits.quota !== undefined) out.quota = Object.freeze({ tokens: limits.quota.tokens, per: limits.quota.per })
  return Object.keys(out).length === 0 ? null : Object.freeze(out)
}

/** Precomputes what requests with this identity get (the allowed-model Set, the limits). */
export function compileEntry(source: KeyIdentity): KeyEntry {
  const limits = limitsOf(source.limits)
  const identity: KeyIdentity = { id: source.id }
  if (source.models !== undefined) identity.models = Object.freeze([...source.models]) as string[]
  if (limits !== null) identity.limits = limits
  if (source.metadata !== undefined) identity.metadata = { ...source.metadata }
  const models = source.models
  return {
    identity: Object.freeze(identity),
    allowedModels: models === undefined || models.includes('*') ? null : new Set(models),
    limits,
  }
}

/** True when `value` has the shape of a KeyIdentity (checked on what resolveKey returns). */
export function isKeyIdentity(value: unknown): value is KeyIdentity {
  if (value === null || typeof value !== 'object') return false
  const v = value as Record<string, unknown>
  return (
    typeof v.id === 'string' &&
    v.id.length > 0 &&
    (v.models === undefined || (Array.isArray(v.models) && v.models.every((m) => typeof m === 'string'))) &&
    (v.limits === undefined || (typeof v.limits === 'object' && v.limits !== null)) &&
    (v.metadata === undefined || (typeof v.metadata === 'object' && v.metadata !== null))
  )
}

/**
 * Builds the key table from validated key configs. Plaintext keys are hashed here and dropped.
 * Duplicate ids and duplicate keys (also a plaintext key equal to a sha256 one) are reported in
 * `problems` by path, never by value.
 */
export function compileKeys(keys: readonly KeyConfig[], path: string, problems: ConfigProblem[]): KeyTable {
  const byHash = new Map<string, KeyEntry>()
  const byId = new Map<string, KeyEntry>()
  const hashIndex = new Map<string, number>()
  const idIndex = new Map<string, number>()
  for (let i = 0; i < keys.length; i++) {
    const config = keys[i] as KeyConfig
    let hash: string
    if (config.key.startsWith(SHA256_PREFIX)) {
      hash = config.key.slice(SHA256_PREFIX.length).toLowerCase()
      if (!HEX64.test(hash)) {
        problems.push({ path: `${path}/${i}/key`, message: 'a "sha256:" key must be followed by 64 hex digits' })
        continue
      }
    } else {
      const unsendable = unsendableSecretProblem(config.key)
      if (unsendable !== null) {
        // Sent in a header (or a query string), such a key never arrives as written: it could never authenticate.
        problems.push({ path: `${path}/${i}/key`, message: unsendable })
        continue
      }
      hash = sha256Hex(config.key)
    }
    const sameKey = hashIndex.get(hash)
    if (sameKey !== undefined) problems.push({ path: `${path}/${i}/key`, message: `duplicate key (same as ${path}/${sameKey}/key)` })
    const sameId = idIndex.get(config.id)
    if (sameId !== undefined)
      problems.push({ path: `${path}/${i}/id`, message: `duplicate id ${JSON.stringify(config.id)} (same as ${path}/${sameId}/id)` })
    if (sameKey !== undefined || sameId !== undefined) continue
    hashIndex.set(hash, i)
    idIndex.set(config.id, i)
    const source: KeyIdentity = { id: config.id }
    if (config.models !== undefined) source.models = config.models
    if (config.rateLimit !== undefined || config.quota !== undefined) {
      source.limits = config.quota === undefined ? { ...config.rateLimit } : { ...config.rateLimit, quota: config.quota }
    }
    if (config.metadata !== undefined) source.metadata = config.metadata
    const entry = compileEntry(source)
    byHash.set(hash, entry)
    byId.set(config.id, entry)
  }
  return { byHash, byId }
}

/** Headers that carry the key itself, in the order they are looked at. */
const KEY_HEADERS = ['x-api-key', 'api-key', 'x-goog-api-key']

/**
 * The key a request presents: `Authorization: Bearer <key>` (OpenAI clients), else `x-api-key` (Anthropic),
 * else `api-key` (Azure OpenAI), else `x-goog-api-key` (Gemini); with `keyInQuery`, else the `key` query parameter
 * of a Gemini route. Undefined when none (or empty).
 */
export function presentedKey(headers: IncomingHttpHeaders, url: string, keyInQuery: boolean): string | undefined {
  const authorization = headers.authorization
  if (typeof authorization === 'string' && authorization.length > 7 && authorization.slice(0, 7).toLowerCase() === 'bearer ') {
    const key = authorization.slice(7).trim()
    if (key.length > 0) return key
  }
  for (let i = 0; i < KEY_HEADERS.length; i++) {
    const value = headers[KEY_HEADERS[i] as string]
    if (typeof value === 'string' && value.length > 0) return value.trim() || undefined
  }
  return keyInQuery ? queryKey(url) : undefined
}

/** `?key=` of a Gemini route (v1beta's, and v1's generation and counting): Google's REST examples put the key there. */
function queryKey(url: string): string | undefined {
  const query = url.indexOf('?')
  if (query === -1 || clientApiOf(url) !== 'gemini') return undefined
  return new URLSearchParams(url.slice(query + 1)).get('key')?.trim() || undefined
}
