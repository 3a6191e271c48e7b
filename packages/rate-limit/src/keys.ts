import { randomBytes } from 'node:crypto'

/**
 * Counter keys (Redis adds `redis.keyPrefix` in front). Every key of one subject (`key:<id>`, or `ip:<address>`
 * without auth) contains `{<subject>}`, its Redis Cluster hash tag, so that the keys one script touches (a counter
 * and a marker) share a hash slot, and one subject's counters live on one node.
 *
 * - `rl:<limiter>:{<subject>}`   request counters (@fastify/rate-limit's Redis store; limiter: rps, rpm, global-rps, global-rpm)
 * - `t:{<subject>}:<minute>`      tokens of one UTC minute (minute = epoch ms / 60 000)
 * - `q:{<subject>}:<period>`      tokens of one quota period (`YYYY-MM-DD` or `YYYY-MM`, UTC)
 * - `c:{<subject>}`               requests in flight (a sorted set of slot ids)
 * - `m:{<subject>}:<id>`          one request's reservation or charge in flight (Redis only; see redis-store.ts)
 */

/** `{<subject>}`: the hash tag, computed once per request. */
export function subjectTag(subject: string): string {
  return `{${subject}}`
}

export function tpmKey(tag: string, minute: number): string {
  return `t:${tag}:${minute}`
}

export function quotaKey(tag: string, period: string): string {
  return `q:${tag}:${period}`
}

export function slotKey(tag: string): string {
  return `c:${tag}`
}

export function markerKey(tag: string, id: string): string {
  return `m:${tag}:${id}`
}

/** Key prefix of quota counters (the ones the memory store persists). */
export const QUOTA_PREFIX = 'q:'

/** The layout before hash tags (`q:<period>:<subject>`), as older quota state files hold it. */
const UNTAGGED_QUOTA = /^q:(\d{4}-\d{2}(?:-\d{2})?):(.+)$/

/** A quota key of the current layout, from one of either layout. */
export function migrateQuotaKey(key: string): string {
  const old = UNTAGGED_QUOTA.exec(key)
  return old === null ? key : quotaKey(subjectTag(old[2] as string), old[1] as string)
}

/** Ids unique across gateway instances: a random instance id and a sequence (request ids are only unique per process, and clients may choose them). */
export class UniqueIds {
  /** This process' prefix of every id it makes (its concurrency slots' ids start with it). */
  readonly instance = `${randomBytes(6).toString('hex')}:`
  private seq = 0

  next(): string {
    return `${this.instance}${(this.seq++).toString(36)}`
  }
}
