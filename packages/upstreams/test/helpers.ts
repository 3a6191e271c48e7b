import { eventually } from '@llmproxy/mock-upstream'
import type { Lease, Pool, UpstreamConfig, UpstreamRegistry, UpstreamState } from '../src/index.js'

export function config(name: string, extra: Partial<UpstreamConfig> = {}): UpstreamConfig {
  return { name, url: `http://127.0.0.1:1/${name}`, protocol: 'openai', weight: 1, ...extra }
}

/** Picks once and releases at once with `ok`; returns the upstream's name. */
export function pickName(pool: Pool, exclude?: ReadonlySet<string>): string {
  const lease = pool.tryAcquire(exclude)
  if (lease === null || lease === 'busy') throw new Error(`expected a lease, got ${String(lease)}`)
  lease.release({ ok: true })
  return lease.upstream.name
}

export function lease(pool: Pool, exclude?: ReadonlySet<string>): Lease {
  const result = pool.tryAcquire(exclude)
  if (result === null || result === 'busy') throw new Error(`expected a lease, got ${String(result)}`)
  return result
}

export function countPicks(pool: Pool, n: number): Record<string, number> {
  const counts: Record<string, number> = {}
  for (let i = 0; i < n; i++) {
    const name = pickName(pool)
    counts[name] = (counts[name] ?? 0) + 1
  }
  return counts
}

/** Polls `predicate` until true; fails after `timeoutMs` (generous: the machine may be loaded). */
export function waitFor(predicate: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  return eventually(predicate, timeoutMs, what)
}

export function stateOf(registry: UpstreamRegistry, name: string): UpstreamState | undefined {
  return registry.get(name)?.state
}
