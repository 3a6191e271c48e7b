import { UsageRecordSchema } from '@llmproxy/core'
import { type Static, Type } from '@llmproxy/core/typebox'

/** Contract (docs/api.md#webhooks): the JSON body of every webhook delivery. */
export const WebhookPayloadSchema = Type.Object({ records: Type.Array(UsageRecordSchema) }, { additionalProperties: false })
export type WebhookPayload = Static<typeof WebhookPayloadSchema>
