import type { Protocol } from '@llmproxy/core'
import { type ApiFamily, familyOf } from '@llmproxy/protocols'
import type { Pool, UpstreamRegistry } from '@llmproxy/upstreams'
import type { ModelRoute } from './options.js'

/** A model route ready for the hot path: its pool and fallbacks resolved once. */
export interface ResolvedRoute {
  readonly name: string
  /** The APIs its pool's upstreams speak (a pool may mix them: the gateway converts). */
  readonly families: ReadonlySet<ApiFamily>
  /** A stream cut after its first byte is continued on another upstream (the model's `resume`). */
  readonly resume: boolean
  readonly upstreamModel: string
  readonly pool: Pool
  readonly fallbacks: readonly ResolvedRoute[]
}

export interface ModelProblem {
  path: string
  message: string
}

/** What a client's model name resolves to: the route, and the name or alias as configured that it matched. */
export interface ModelMatch {
  readonly route: ResolvedRoute
  /** The name itself, or the alias pattern it matches (`gpt-*`): metrics label by it. */
  readonly configuredName: string
}

/** An alias with a `*`, which matches any characters there (`claude-*`): clients whose model names change. */
interface AliasPattern extends ModelMatch {
  /** The alias cut at its `*`s: the parts a name must hold in order, the first at its start, the last at its end. */
  readonly parts: readonly string[]
}

/** Whether an alias is a pattern. */
export function isAliasPattern(alias: string): boolean {
  return alias.includes('*')
}

/** name or alias → route, then the alias patterns in config order. Built once per config; swapped whole on reload. */
export class ModelTable {
  private readonly byName: Map<string, ModelMatch>
  private readonly patterns: readonly AliasPattern[]
  /** For GET /v1/models: every name and alias (patterns are no model ids), in config order. */
  readonly listing: readonly { id: string; aliasOf: string | null }[]
  /** Each route's pool, as taken from the registry (one `pool()` each): given back there when the table is replaced. */
  readonly pools: readonly Pool[]

  private constructor(
    byName: Map<string, ModelMatch>,
    patterns: AliasPattern[],
    listing: { id: string; aliasOf: string | null }[],
    pools: Pool[],
  ) {
    this.byName = byName
    this.patterns = patterns
    this.listing = listing
    this.pools = pools
  }

  get(name: string): ResolvedRoute | undefined {
    return this.find(name)?.route
  }

  /** A name or alias as configured, else the first alias pattern `name` matches, in config order. */
  find(name: string): ModelMatch | undefined {
    const match = this.byName.get(name)
    if (match !== undefined) return match
    for (const pattern of this.patterns) if (matchesGlob(pattern.parts, name)) return pattern
    return undefined
  }

  /** Checks the routes against each other and the upstreams; lists every problem. */
  static check(models: readonly ModelRoute[], protocolOf: (upstream: string) => Protocol | undefined): ModelProblem[] {
    const problems: ModelProblem[] = []
    const names = new Map<string, string>()
    models.forEach((model, i) => {
      for (const [j, id] of [model.name, ...(model.aliases ?? [])].entries()) {
        const where = j === 0 ? `/models/${i}/name` : `/models/${i}/aliases/${j - 1}`
        const owner = names.get(id)
        if (owner !== undefined) problems.push({ path: where, message: `"${id}" is already used by ${owner}` })
        else names.set(id, where)
      }
      model.upstreams.forEach((name, j) => {
        const path = `/models/${i}/upstreams/${j}`
        if (protocolOf(name) === undefined) problems.push({ path, message: `unknown upstream "${name}"` })
        // The registry refuses such a pool when the route is built: found here, `llmproxy check` reports it too.
        else if (model.upstreams.indexOf(name) < j) problems.push({ path, message: `upstream "${name}" is already in this pool` })
      })
    })
    models.forEach((model, i) => {
      model.fallbacks?.forEach((fallback, j) => {
        const path = `/models/${i}/fallbacks/${j}`
        if (fallback === model.name) problems.push({ path, message: 'a model cannot be its own fallback' })
        else if (!models.some((m) => m.name === fallback)) problems.push({ path, message: `unknown model "${fallback}"` })
      })
    })
    return problems
  }

  static build(models: readonly ModelRoute[], upstreams: UpstreamRegistry): ModelTable {
    const routes = new Map<
      string,
      { name: string; families: ReadonlySet<ApiFamily>; resume: boolean; upstreamModel: string; pool: Pool; fallbacks: ResolvedRoute[] }
    >()
    const pools: Pool[] = []
    try {
      for (const model of models) {
        const families = new Set<ApiFamily>()
        for (const name of model.upstreams) {
          const upstream = upstreams.get(name)
          if (upstream !== undefined) families.add(familyOf(upstream.protocol))
        }
        const pool = upstreams.pool(model.upstreams, model.strategy)
        pools.push(pool)
        routes.set(model.name, {
          name: model.name,
          families,
          resume: model.resume !== false,
          upstreamModel: model.upstreamModel ?? model.name,
          pool,
          fallbacks: [],
        })
      }
    } catch (err) {
      // A route the registry refused (an unknown strategy): no table, so the pools taken for it go back.
      for (const pool of pools) upstreams.release(pool)
      throw err
    }
    const byName = new Map<string, ModelMatch>()
    const patterns: AliasPattern[] = []
    const listing: { id: string; aliasOf: string | null }[] = []
    for (const model of models) {
      const route = routes.get(model.name)
      if (route === undefined) continue
      for (const fallback of model.fallbacks ?? []) {
        const target = routes.get(fallback)
        if (target !== undefined) route.fallbacks.push(target)
      }
      byName.set(model.name, { route, configuredName: model.name })
      listing.push({ id: model.name, aliasOf: null })
      for (const alias of model.aliases ?? []) {
        if (isAliasPattern(alias)) {
          patterns.push({ configuredName: alias, parts: alias.split('*'), route })
          continue
        }
        byName.set(alias, { route, configuredName: alias })
        listing.push({ id: alias, aliasOf: model.name })
      }
    }
    return new ModelTable(byName, patterns, listing, pools)
  }
}

/**
 * Whether `name` matches the parts of a glob (`claude-*-mini` → ['claude-', '-mini']): in linear time, each middle
 * part at its first place after the one before (a regular expression would backtrack on a long name).
 */
function matchesGlob(parts: readonly string[], name: string): boolean {
  const first = parts[0] as string
  const last = parts[parts.length - 1] as string
  if (name.length < first.length + last.length || !name.startsWith(first) || !name.endsWith(last)) return false
  let at = first.length
  const end = name.length - last.length
  for (let i = 1; i < parts.length - 1; i++) {
    const part = parts[i] as string
    const found = name.indexOf(part, at)
    if (found === -1 || found + part.length > end) return false
    at = found + part.length
  }
  return true
}
