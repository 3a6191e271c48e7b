import { type KeyLimits, MAX_TIMER_MS } from '@llmproxy/core'
import { type Static, Type } from '@llmproxy/core/typebox'
import type { FastifyRequest } from 'fastify'

const PositiveInteger = (description: string) => Type.Integer({ minimum: 1, description })

export const KeyRateLimitSchema = Type.Object(
  {
    rpm: Type.Optional(PositiveInteger('Requests per minute.')),
    rps: Type.Optional(PositiveInteger('Requests per second.')),
    tpm: Type.Optional(PositiveInteger('Tokens per minute.')),
    concurrency: Type.Optional(PositiveInteger('Requests in flight at once.')),
  },
  { additionalProperties: false },
)

export const KeyQuotaSchema = Type.Object(
  {
    tokens: PositiveInteger('Tokens allowed per period.'),
    per: Type.Union([Type.Literal('day'), Type.Literal('month')]),
  },
  { additionalProperties: false },
)

export const KeyConfigSchema = Type.Object(
  {
    id: Type.String({ minLength: 1, description: 'Stable key id: logged, metered, shown in the admin API.' }),
    key: Type.String({
      minLength: 1,
      description:
        'The key in plaintext (printable ASCII, no spaces: clients send it in a header), or "sha256:<64 hex digits>" (its SHA-256 digest).',
    }),
    models: Type.Optional(
      Type.Array(Type.String({ minLength: 1 }), {
        description:
          'Allowed model names or aliases (not pattern aliases: a model name allows every name it serves); absent or ["*"] = all. A model\'s fallbacks are not checked against it.',
      }),
    ),
    rateLimit: Type.Optional(KeyRateLimitSchema),
    quota: Type.Optional(KeyQuotaSchema),
    metadata: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  { additionalProperties: false },
)
export type KeyConfig = Static<typeof KeyConfigSchema>

export const KeysSchema = Type.Array(KeyConfigSchema)

export const AuthOptionsSchema = Type.Object(
  {
    keys: Type.Optional(KeysSchema),
    ipAllowlist: Type.Optional(
      Type.Array(Type.String(), { description: 'IPv4/IPv6 addresses or CIDRs; when set, other addresses get 403.' }),
    ),
    ipDenylist: Type.Optional(Type.Array(Type.String(), { description: 'IPv4/IPv6 addresses or CIDRs always refused (checked first).' })),
    keyInQuery: Type.Boolean({
      default: false,
      description: 'Also accept the key as ?key=… on the Gemini routes; off by default (URLs end up in access logs).',
    }),
    cache: Type.Object(
      {
        ttlMs: Type.Integer({
          minimum: 0,
          maximum: MAX_TIMER_MS,
          default: 60_000,
          description: 'How long a key found by resolveKey is cached; 0 = no cache.',
        }),
        negativeTtlMs: Type.Integer({
          minimum: 0,
          maximum: MAX_TIMER_MS,
          default: 5_000,
          description: 'How long an unknown key is cached; 0 = no cache.',
        }),
        max: Type.Integer({ minimum: 1, default: 10_000, description: 'Cached keys at most (least recently used evicted first).' }),
      },
      { additionalProperties: false, default: {} },
    ),
  },
  { additionalProperties: false },
)
export type AuthOptions = Static<typeof AuthOptionsSchema>

/** Who a key belongs to: what `resolveKey` returns, and what `request.llmKey` holds. Never holds the key itself. */
export interface KeyIdentity {
  id: string
  /** Allowed model names or aliases; absent or containing '*' = all. */
  models?: string[]
  limits?: KeyLimits
  metadata?: Record<string, unknown>
}

export type ResolveKey = (request: FastifyRequest, presentedKey: string) => Promise<KeyIdentity | null> | KeyIdentity | null

/** Callbacks: not in the TypeBox schema (functions), merged into the options type. */
export interface AuthCallbacks {
  /** Your own key store, consulted when the key is not in `keys`. Results are cached by the key's SHA-256. */
  resolveKey?: ResolveKey
  /** Return true to let a request through without any check (IP or key). Must not throw. */
  skip?: (request: FastifyRequest) => boolean
}

/** What `register(auth, options)` takes: the schema's data (cache fields default) plus the callbacks. */
export type AuthPluginOptions = Omit<AuthOptions, 'cache' | 'keyInQuery'> & {
  cache?: Partial<AuthOptions['cache']>
  keyInQuery?: boolean
} & AuthCallbacks
