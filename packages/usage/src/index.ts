export { type UsageRecord, UsageRecordSchema } from '@llmproxy/core'
export { backoffDelay } from './delivery.js'
export {
  type FsyncPolicy,
  type UsageOptions,
  type UsageOptionsInput,
  UsageOptionsSchema,
  type WhenFull,
} from './options.js'
export { deliveryProblems, usage, webhookProblems } from './plugin.js'
export { type WebhookPayload, WebhookPayloadSchema } from './schemas.js'
export { signPayload, verifySignature } from './signature.js'
export type { DeliveryEvent, SpoolFullEvent, UsageApi, UsageEvents, UsageListener, UsageStats } from './types.js'
