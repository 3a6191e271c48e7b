export type { KeyUsage, RateLimits } from './engine.js'
export { RATE_LIMIT_CODES } from './errors.js'
export {
  checkOptions,
  checkRedisOptions,
  type GlobalLimits,
  GlobalLimitsSchema,
  type PerKeyLimits,
  PerKeyLimitsSchema,
  type RateLimitOptions,
  type RateLimitOptionsInput,
  RateLimitOptionsSchema,
  type RedisNode,
  type RedisOptions,
  RedisOptionsSchema,
} from './options.js'
export { rateLimit } from './plugin.js'
export { CounterHost, type CounterHostOptions, type CounterPeer, useCountersOfPrimary } from './primary-counters.js'
export { type RedisClient, RedisStore } from './redis-store.js'
export { type CheckResult, type LimitStore, MemoryStore } from './store.js'
