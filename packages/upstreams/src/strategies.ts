import { currentTtft, EWMA_FORGET_MS, type Upstream } from './upstream.js'

/**
 * A balancing strategy of one pool. `candidates` are the pool's upstreams that may take a request now
 * (available, below maxConcurrency, not excluded; in panic mode, those that are out), in the pool's order, never
 * empty. The array is reused between picks: read it, don't keep it. Returning undefined declines (the pool then
 * answers null). `failover`: an upstream of this pool was already tried for this request (a rotation keeps its place
 * for the next request).
 */
export interface Strategy {
  pick(candidates: readonly Upstream[], failover: boolean): Upstream | undefined
}

/** Builds the strategy of a pool from the pool's upstreams (called again when a reload changes them). */
export type StrategyFactory = (upstreams: readonly Upstream[]) => Strategy

function positions(upstreams: readonly Upstream[]): Map<Upstream, number> {
  const map = new Map<Upstream, number>()
  for (let i = 0; i < upstreams.length; i++) map.set(upstreams[i] as Upstream, i)
  return map
}

/**
 * Cursor over the pool order: the next pick is the first candidate after the last one picked, so the
 * rotation stays even when the candidate set changes between picks.
 */
class Rotation {
  private readonly index: Map<Upstream, number>
  private last = -1

  constructor(upstreams: readonly Upstream[]) {
    this.index = positions(upstreams)
  }

  position(upstream: Upstream): number {
    return this.index.get(upstream) ?? -1
  }

  /** Marks `upstream` as picked and returns it. */
  take(upstream: Upstream): Upstream {
    this.last = this.position(upstream)
    return upstream
  }

  get lastPosition(): number {
    return this.last
  }
}

/** Each upstream in turn. */
export const roundRobin: StrategyFactory = (upstreams) => {
  const rotation = new Rotation(upstreams)
  return {
    pick(candidates, failover) {
      const last = rotation.lastPosition
      let next = candidates[0] as Upstream
      for (let i = 0; i < candidates.length; i++) {
        const upstream = candidates[i] as Upstream
        if (rotation.position(upstream) > last) {
          next = upstream
          break
        }
      }
      // A failover pick leaves the turn where it was: else an upstream that fails would get the first attempt of
      // every request (its failover moves the turn past the others, and the next request wraps back to it).
      return failover ? next : rotation.take(next)
    },
  }
}

/**
 * Smooth weighted round-robin (nginx): each pick adds every candidate's weight to its current weight,
 * takes the highest, and subtracts the total from it. 5:3:1 gives a a b a c a b a b, never long runs.
 */
export const weighted: StrategyFactory = (upstreams) => {
  const index = positions(upstreams)
  const current = new Float64Array(upstreams.length)
  return {
    pick(candidates) {
      let total = 0
      let best: Upstream | undefined
      let bestWeight = Number.NEGATIVE_INFINITY
      for (let i = 0; i < candidates.length; i++) {
        const upstream = candidates[i] as Upstream
        const at = index.get(upstream)
        if (at === undefined) continue
        const weight = (current[at] as number) + upstream.weight
        current[at] = weight
        total += upstream.weight
        if (weight > bestWeight) {
          bestWeight = weight
          best = upstream
        }
      }
      if (best === undefined) return candidates[0]
      const at = index.get(best) as number
      current[at] = (current[at] as number) - total
      return best
    },
  }
}

/** Fewest requests in flight; ties taken in turn. */
export const leastConnections: StrategyFactory = (upstreams) => {
  const rotation = new Rotation(upstreams)
  let min = 0
  const isLeastLoaded = (upstream: Upstream): boolean => upstream.inFlight === min
  return {
    pick(candidates) {
      min = Number.POSITIVE_INFINITY
      for (let i = 0; i < candidates.length; i++) {
        const inFlight = (candidates[i] as Upstream).inFlight
        if (inFlight < min) min = inFlight
      }
      return rotation.take(nextWith(candidates, rotation, isLeastLoaded))
    },
  }
}

/**
 * Peak-EWMA of the time to first token times the load: cost = ewma × (inFlight + 1). An upstream whose average was
 * forgotten (it was avoided) gets one probe: tried first, then no other request until the probe's sample brings an
 * average back, or EWMA_FORGET_MS passes. A new upstream (no sample ever) is tried first while idle; when busy it is
 * costed at the best known EWMA. Ties taken in turn.
 */
export const latency: StrategyFactory = (upstreams) => {
  const rotation = new Rotation(upstreams)
  /** When each upstream (by pool position) was sent its last probe, epoch ms. */
  const probedAt = new Float64Array(upstreams.length)
  let minCost = 0
  let known = 0
  let now = 0
  const cost = (upstream: Upstream): number => {
    const ewma = currentTtft(upstream, now)
    if (ewma !== null) return ewma * (upstream.inFlight + 1)
    if (upstream.ewmaTtftMs === null) return upstream.inFlight === 0 ? -1 : known * (upstream.inFlight + 1)
    // Costed as an average upstream, it would fill up to the others' load, and each of those requests would wait as
    // long as its last sample took: the batch a probe was meant to spare.
    return now - (probedAt[rotation.position(upstream)] as number) < EWMA_FORGET_MS ? Number.POSITIVE_INFINITY : -1
  }
  const isCheapest = (upstream: Upstream): boolean => cost(upstream) === minCost
  return {
    pick(candidates) {
      now = Date.now()
      known = Number.POSITIVE_INFINITY
      for (let i = 0; i < candidates.length; i++) {
        const ewma = currentTtft(candidates[i] as Upstream, now)
        if (ewma !== null && ewma < known) known = ewma
      }
      if (known === Number.POSITIVE_INFINITY) known = 0
      minCost = Number.POSITIVE_INFINITY
      for (let i = 0; i < candidates.length; i++) {
        const c = cost(candidates[i] as Upstream)
        if (c < minCost) minCost = c
      }
      const picked = rotation.take(nextWith(candidates, rotation, isCheapest))
      if (minCost < 0 && picked.ewmaTtftMs !== null) probedAt[rotation.lastPosition] = now
      return picked
    },
  }
}

/** Power of two random choices: two distinct random candidates, the one with fewer requests in flight. */
export const powerOfTwo: StrategyFactory = () => ({
  pick(candidates) {
    const n = candidates.length
    if (n === 1) return candidates[0]
    const a = Math.floor(Math.random() * n)
    let b = Math.floor(Math.random() * (n - 1))
    if (b >= a) b++
    const first = candidates[a] as Upstream
    const second = candidates[b] as Upstream
    return second.inFlight < first.inFlight ? second : first
  },
})

/** The first candidate after the last pick (in pool order) that matches, else the first that matches. */
function nextWith(candidates: readonly Upstream[], rotation: Rotation, matches: (upstream: Upstream) => boolean): Upstream {
  const last = rotation.lastPosition
  let first: Upstream | undefined
  for (let i = 0; i < candidates.length; i++) {
    const upstream = candidates[i] as Upstream
    if (!matches(upstream)) continue
    if (rotation.position(upstream) > last) return upstream
    if (first === undefined) first = upstream
  }
  return first ?? (candidates[0] as Upstream)
}

/** The strategies every registry knows. */
export const builtinStrategies: Readonly<Record<string, StrategyFactory>> = {
  'round-robin': roundRobin,
  weighted,
  'least-connections': leastConnections,
  latency,
  p2c: powerOfTwo,
}
