import { MAX_TIMER_MS } from '@llmproxy/core'
import { type Static, Type } from '@llmproxy/core/typebox'

const MiB = 1024 * 1024

/** Options of the `usage` plugin. Every default is filled in by `validateOptions`. */
export const UsageOptionsSchema = Type.Object(
  {
    webhook: Type.Optional(
      Type.Object(
        {
          url: Type.String({ format: 'uri', description: 'Where batches are POSTed (http or https).' }),
          secret: Type.Optional(Type.String({ minLength: 1, description: 'HMAC-SHA256 key for x-llmproxy-signature.' })),
          timeoutMs: Type.Integer({
            minimum: 1,
            maximum: MAX_TIMER_MS,
            default: 10_000,
            description: 'Whole-exchange timeout of one delivery attempt.',
          }),
          headers: Type.Optional(Type.Record(Type.String(), Type.String(), { description: 'Extra request headers.' })),
        },
        { additionalProperties: false },
      ),
    ),
    spoolDir: Type.Optional(Type.String({ minLength: 1, description: 'Directory of the durable spool (required with webhook).' })),
    batch: Type.Object(
      {
        maxRecords: Type.Integer({ minimum: 1, default: 100 }),
        maxWaitMs: Type.Integer({ minimum: 0, maximum: MAX_TIMER_MS, default: 1000 }),
      },
      { additionalProperties: false, default: {} },
    ),
    retry: Type.Object(
      {
        baseMs: Type.Integer({ minimum: 1, maximum: MAX_TIMER_MS, default: 500 }),
        maxMs: Type.Integer({ minimum: 1, maximum: MAX_TIMER_MS, default: 60_000, description: 'Backoff ceiling; at least baseMs.' }),
      },
      { additionalProperties: false, default: {} },
    ),
    spool: Type.Object(
      {
        maxBytes: Type.Integer({ minimum: 1, default: 256 * MiB }),
        segmentBytes: Type.Integer({
          minimum: 1,
          default: 4 * MiB,
          description: 'Segment files rotate at this size, and disk space is freed a segment at a time: at most half of maxBytes.',
        }),
        fsync: Type.Union([Type.Literal('always'), Type.Literal('interval'), Type.Literal('never')], { default: 'interval' }),
        fsyncIntervalMs: Type.Integer({ minimum: 1, maximum: MAX_TIMER_MS, default: 200 }),
        whenFull: Type.Union([Type.Literal('drop-oldest'), Type.Literal('stop-spooling')], { default: 'stop-spooling' }),
      },
      { additionalProperties: false, default: {} },
    ),
    shutdownFlushMs: Type.Integer({ minimum: 0, maximum: MAX_TIMER_MS, default: 5000 }),
  },
  { additionalProperties: false },
)

export type UsageOptions = Static<typeof UsageOptionsSchema>
/** What a caller may pass: every field with a default is optional. */
export type UsageOptionsInput = Partial<Omit<UsageOptions, 'webhook' | 'batch' | 'retry' | 'spool'>> & {
  webhook?: Omit<NonNullable<UsageOptions['webhook']>, 'timeoutMs'> & { timeoutMs?: number }
  batch?: Partial<UsageOptions['batch']>
  retry?: Partial<UsageOptions['retry']>
  spool?: Partial<UsageOptions['spool']>
}
export type FsyncPolicy = UsageOptions['spool']['fsync']
export type WhenFull = UsageOptions['spool']['whenFull']
