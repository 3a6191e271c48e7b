import { ConfigError, validateOptions } from '@llmproxy/core'
import { type Static, Type } from '@llmproxy/core/typebox'

const count = (description: string) => Type.Optional(Type.Integer({ minimum: 0, description }))

export const GlobalLimitsSchema = Type.Object(
  {
    rps: count('Requests per second for the whole gateway (all keys together).'),
    rpm: count('Requests per minute for the whole gateway (all keys together).'),
  },
  { additionalProperties: false, default: {} },
)
export type GlobalLimits = Static<typeof GlobalLimitsSchema>

export const PerKeyLimitsSchema = Type.Object(
  {
    rps: count('Requests per second per key (default for every key; its own `rps` overrides).'),
    rpm: count('Requests per minute per key (default for every key; its own `rpm` overrides).'),
    tpm: count('Tokens per minute per key (default for every key; its own `tpm` overrides).'),
    concurrency: count('Requests in flight per key (default for every key; its own `concurrency` overrides).'),
  },
  { additionalProperties: false, default: {} },
)
export type PerKeyLimits = Static<typeof PerKeyLimitsSchema>

export const RedisOptionsSchema = Type.Object(
  {
    url: Type.String({ minLength: 1, description: 'redis://[user:password@]host:port[/db] (rediss:// for TLS).' }),
    keyPrefix: Type.String({ default: 'llmproxy:', description: 'Prefix of every key this plugin writes.' }),
    commandTimeoutMs: Type.Integer({
      minimum: 1,
      default: 1000,
      description: 'A Redis command slower than this fails, and the request is limited locally instead.',
    }),
    slotTtlMs: Type.Integer({
      minimum: 1000,
      default: 600000,
      description: 'Concurrency slots expire after this long, so a crashed instance does not hold them forever.',
    }),
  },
  { additionalProperties: false },
)
export type RedisOptions = Static<typeof RedisOptionsSchema>

export const RateLimitOptionsSchema = Type.Object(
  {
    store: Type.Union([Type.Literal('memory'), Type.Literal('redis')], {
      default: 'memory',
      description: 'Where counters live: this process, or Redis shared by every instance.',
    }),
    redis: Type.Optional(RedisOptionsSchema),
    global: GlobalLimitsSchema,
    perKey: PerKeyLimitsSchema,
    reserveTokens: Type.Integer({
      minimum: 0,
      default: 256,
      description: 'Completion tokens reserved for a request whose body sets no max_tokens.',
    }),
    quotaStateFile: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'Memory store: quota counters are saved to this JSON file every 5 s and on close, and reloaded at start.',
      }),
    ),
  },
  { additionalProperties: false },
)
/** Options as validated (defaults filled in). */
export type RateLimitOptions = Static<typeof RateLimitOptionsSchema>
/** Options as written by the user: every field with a default may be left out. */
export type RateLimitOptionsInput = Partial<Omit<RateLimitOptions, 'redis'>> & {
  redis?: Partial<RedisOptions> & { url: string }
}

/** Validates options (defaults filled in); throws a ConfigError naming every problem. */
export function resolveOptions(input: RateLimitOptionsInput | undefined): RateLimitOptions {
  const options = validateOptions(RateLimitOptionsSchema, input, '@llmproxy/rate-limit options')
  if (options.store === 'redis' && options.redis === undefined) {
    throw new ConfigError('@llmproxy/rate-limit options', [{ path: '/redis', message: 'required when store is "redis"' }])
  }
  return options
}
