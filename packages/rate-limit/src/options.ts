import { ConfigError, type ConfigProblem, MAX_TIMER_MS, validateOptions } from '@llmproxy/core'
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

const RedisNodeSchema = Type.Object(
  {
    host: Type.String({ minLength: 1 }),
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
  },
  { additionalProperties: false },
)
export type RedisNode = Static<typeof RedisNodeSchema>

export const RedisOptionsSchema = Type.Object(
  {
    url: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'Single node: redis://[user:password@]host:port[/db] (rediss:// for TLS; a user or password percent-encoded). Set one of url, sentinels, cluster.',
      }),
    ),
    sentinels: Type.Optional(
      Type.Array(RedisNodeSchema, {
        minItems: 1,
        description: 'Sentinel: the Sentinels ({host, port}) that name the master of `name`. Set one of url, sentinels, cluster.',
      }),
    ),
    name: Type.Optional(Type.String({ minLength: 1, description: 'Sentinel: the master group name (required with sentinels).' })),
    sentinelPassword: Type.Optional(
      Type.String({ minLength: 1, description: 'Sentinel: the password of the Sentinels themselves (their requirepass).' }),
    ),
    cluster: Type.Optional(
      Type.Array(RedisNodeSchema, {
        minItems: 1,
        description: 'Redis Cluster: some of its nodes ({host, port}); the others are discovered. Set one of url, sentinels, cluster.',
      }),
    ),
    username: Type.Optional(
      Type.String({ minLength: 1, description: 'Sentinel and cluster: ACL user of the Redis nodes (with url: put it in the url).' }),
    ),
    password: Type.Optional(
      Type.String({ minLength: 1, description: 'Sentinel and cluster: password of the Redis nodes (with url: put it in the url).' }),
    ),
    keyPrefix: Type.String({ default: 'llmproxy:', description: 'Prefix of every key this plugin writes.' }),
    commandTimeoutMs: Type.Integer({
      minimum: 1,
      maximum: MAX_TIMER_MS,
      default: 1000,
      description: 'A Redis command slower than this fails, and the request is limited locally instead.',
    }),
    slotTtlMs: Type.Integer({
      minimum: 1000,
      maximum: MAX_TIMER_MS,
      default: 600000,
      description: 'Concurrency slots and token reservations expire after this long, so a crashed instance does not hold them forever.',
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
      description: 'Completion tokens reserved for a request whose body sets no max_tokens (embeddings and token counting reserve none).',
    }),
    quotaStateFile: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'Memory store: quota counters are saved to this JSON file every 5 s and on close, and reloaded at start. A path the process cannot write is refused at start.',
      }),
    ),
  },
  { additionalProperties: false },
)
/** Options as validated (defaults filled in). */
export type RateLimitOptions = Static<typeof RateLimitOptionsSchema>
/** Options as written by the user: every field with a default may be left out. */
export type RateLimitOptionsInput = Partial<Omit<RateLimitOptions, 'redis'>> & { redis?: Partial<RedisOptions> }

/** Which of `url`, `sentinels`, `cluster` a Redis setting uses. */
export type RedisMode = 'url' | 'sentinels' | 'cluster'
const MODES: readonly RedisMode[] = ['url', 'sentinels', 'cluster']

const PERCENT_ENCODE = 'percent-encode a user or password that holds / ? # @ : % or a space (/ as %2F, % as %25)'

/**
 * What ioredis would throw on at start (or send Redis) in a single node's url; never the value, which may hold a
 * password: no URL, a user or password it cannot decode, a database (the path, or `?db=`) that is not a number.
 */
function redisUrlProblem(value: string): string | null {
  if (!/^rediss?:\/\//.test(value)) return 'must start with redis:// or rediss:// (TLS)'
  if (!URL.canParse(value)) return `not a valid URL: redis://[user:password@]host:port[/db]; ${PERCENT_ENCODE}`
  const url = new URL(value)
  try {
    decodeURIComponent(url.username)
    decodeURIComponent(url.password)
  } catch {
    return `the user or password has a % that is no percent-encoding: ${PERCENT_ENCODE}`
  }
  const db = url.pathname === '' || url.pathname === '/' ? url.searchParams.get('db') : url.pathname.slice(1)
  if (db !== null && !/^\d+$/.test(db)) return 'the database (the path after host:port) must be a number, as in redis://host:6379/0'
  return null
}

/**
 * What the schema cannot say about `redis` (paths under `path`): exactly one of url / sentinels / cluster, and each
 * setting only with the mode that uses it.
 */
export function checkRedisOptions(redis: RedisOptions, path = '/redis'): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const modes = MODES.filter((mode) => redis[mode] !== undefined)
  if (modes.length === 0) {
    problems.push({ path, message: 'set one of url (a single node), sentinels (Redis Sentinel) or cluster (Redis Cluster)' })
  }
  for (const extra of modes.slice(1)) {
    problems.push({ path: `${path}/${extra}`, message: `conflicts with ${modes[0]}: set exactly one of url, sentinels, cluster` })
  }
  const mode = modes.length === 1 ? modes[0] : undefined
  const urlProblem = redis.url === undefined ? null : redisUrlProblem(redis.url)
  if (urlProblem !== null) problems.push({ path: `${path}/url`, message: urlProblem })
  if (mode === 'sentinels' && redis.name === undefined) {
    problems.push({ path: `${path}/name`, message: 'required with sentinels: the master group name (as in sentinel monitor <name> …)' })
  }
  if (mode !== undefined && mode !== 'sentinels') {
    for (const field of ['name', 'sentinelPassword'] as const) {
      if (redis[field] !== undefined) problems.push({ path: `${path}/${field}`, message: `only used with sentinels, not with ${mode}` })
    }
  }
  if (mode === 'url') {
    for (const field of ['username', 'password'] as const) {
      if (redis[field] !== undefined) {
        problems.push({
          path: `${path}/${field}`,
          message: 'with url, put it in the url, percent-encoded (redis://user:password@host:port)',
        })
      }
    }
  }
  return problems
}

/**
 * Settings that only work together (paths relative to the plugin's options): a Redis store needs `redis`, `redis`
 * needs the Redis store, the quota state file is for the memory store.
 */
export function checkOptions(options: RateLimitOptions): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  if (options.store === 'redis') {
    if (options.redis === undefined) {
      problems.push({ path: '/redis', message: 'required when store is "redis" (redis: { url: "redis://host:6379" })' })
    }
    if (options.quotaStateFile !== undefined) {
      problems.push({
        path: '/quotaStateFile',
        message: 'only used with store "memory": with Redis, quotas live in Redis and survive restarts',
      })
    }
  } else if (options.redis !== undefined) {
    problems.push({ path: '/redis', message: 'set, but store is "memory": nothing would use it (set store: redis)' })
  }
  if (options.redis !== undefined) problems.push(...checkRedisOptions(options.redis))
  return problems
}

/** Validates options (defaults filled in); throws a ConfigError naming every problem. */
export function resolveOptions(input: RateLimitOptionsInput | undefined): RateLimitOptions {
  const subject = '@llmproxy/rate-limit options'
  const options = validateOptions(RateLimitOptionsSchema, input, subject)
  const problems = checkOptions(options)
  if (problems.length > 0) throw new ConfigError(subject, problems)
  return options
}
