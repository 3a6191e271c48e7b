export {
  checkPassiveHealth,
  type HealthChecksOptions,
  HealthChecksSchema,
  keepsUpstream,
  type PassiveHealthOptions,
  PassiveHealthSchema,
  type QueueOptions,
  QueueSchema,
  type ResolvedUpstreamConfig,
  type ResolvedUpstreamsOptions,
  resolveOptions,
  resolveUpstreamList,
  type UpstreamConfig,
  UpstreamConfigSchema,
  UpstreamHealthCheckSchema,
  UpstreamListSchema,
  type UpstreamsOptions,
  UpstreamsOptionsSchema,
} from './options.js'
export { type UpstreamsCallbackOptions, type UpstreamsPluginOptions, upstreams } from './plugin.js'
export type { Pool } from './pool.js'
export { UpstreamRegistry, type UpstreamRegistryEvents, type UpstreamsLogger } from './registry.js'
export {
  builtinStrategies,
  latency,
  leastConnections,
  powerOfTwo,
  roundRobin,
  type Strategy,
  type StrategyFactory,
  weighted,
} from './strategies.js'
export {
  type AttemptResult,
  currentTtft,
  EWMA_FORGET_MS,
  holdsBack,
  type Lease,
  type Upstream,
  type UpstreamSnapshot,
  type UpstreamState,
} from './upstream.js'
