export type { KeyUsage, RateLimits } from './engine.js'
export { RATE_LIMIT_CODES } from './errors.js'
export {
  type GlobalLimits,
  GlobalLimitsSchema,
  type PerKeyLimits,
  PerKeyLimitsSchema,
  type RateLimitOptions,
  type RateLimitOptionsInput,
  RateLimitOptionsSchema,
  type RedisOptions,
  RedisOptionsSchema,
} from './options.js'
export { rateLimit } from './plugin.js'
export { RedisStore } from './redis-store.js'
export { type CheckResult, type LimitStore, MemoryStore } from './store.js'
