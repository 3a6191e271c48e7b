export { OVERFLOW_LABEL } from './labels.js'
export {
  checkBuckets,
  checkScrapePath,
  DEFAULT_DURATION_BUCKETS,
  DEFAULT_TTFT_BUCKETS,
  DELIVERY_BUCKETS,
  type MetricsOptions,
  MetricsOptionsSchema,
} from './options.js'
export { type LlmMetricsDecorator, llmMetrics } from './plugin.js'
export type {
  RateLimitsSource,
  UpstreamSnapshotEntry,
  UpstreamState,
  UpstreamsSource,
  UsageDeliveryEvent,
  UsageSource,
  UsageStats,
} from './sources.js'
