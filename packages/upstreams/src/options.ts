import {
  ConfigError,
  type ConfigProblem,
  headerProblems,
  headerValueProblem,
  MAX_TIMER_MS,
  Protocol,
  validateOptions,
} from '@llmproxy/core'
import { type Static, Type } from '@llmproxy/core/typebox'
import { defaultHealthCheckPath } from '@llmproxy/protocols'

export const UpstreamHealthCheckSchema = Type.Object(
  {
    enabled: Type.Optional(Type.Boolean({ description: 'Actively check this upstream (default: true when a check path is known).' })),
    path: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'Path appended to the upstream url (default: /health for vllm/tgi, /v1/models for openai).',
      }),
    ),
  },
  { additionalProperties: false },
)

export const UpstreamConfigSchema = Type.Object(
  {
    name: Type.String({ minLength: 1, description: 'Unique name, used by pools, logs and metrics.' }),
    url: Type.String({
      minLength: 1,
      description: 'http(s) origin with an optional base path, without the API version (/v1), e.g. http://10.0.0.5:8000.',
    }),
    protocol: Protocol,
    weight: Type.Optional(Type.Integer({ minimum: 1, default: 1, description: 'Share of traffic for the weighted strategy.' })),
    maxConcurrency: Type.Optional(Type.Integer({ minimum: 1, description: 'Requests in flight at most; more wait in the queue.' })),
    apiKey: Type.Optional(
      Type.String({ description: 'Credential sent to the upstream (and by its health check); not blank (an unset secret).' }),
    ),
    headers: Type.Optional(Type.Record(Type.String(), Type.String(), { description: 'Extra headers sent to the upstream.' })),
    healthCheck: Type.Optional(UpstreamHealthCheckSchema),
    prefill: Type.Optional(
      Type.Boolean({
        description:
          'Continue a cut stream here by sending its text as a final assistant turn (Anthropic, Gemini, vLLM continue_final_message); on vllm, a converted request ending with an assistant turn (a client prefill) is continued too. Default: true for vllm, anthropic and gemini; false for openai and tgi, which get the request replayed instead.',
      }),
    ),
  },
  { additionalProperties: false },
)
export type UpstreamConfig = Static<typeof UpstreamConfigSchema>
/** An upstream's settings after validation (defaults filled in). */
export type ResolvedUpstreamConfig = UpstreamConfig & { weight: number }

export const UpstreamListSchema = Type.Array(UpstreamConfigSchema)

export const HealthChecksSchema = Type.Object(
  {
    enabled: Type.Optional(Type.Boolean({ default: true, description: 'Master switch of active health checks.' })),
    intervalMs: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_TIMER_MS, default: 5000 })),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_TIMER_MS, default: 2000 })),
    jitter: Type.Optional(
      Type.Number({ minimum: 0, maximum: 1, default: 0.1, description: 'Random spread of the interval, as a fraction of it.' }),
    ),
    unhealthyAfter: Type.Optional(
      Type.Integer({ minimum: 1, default: 3, description: 'Consecutive failed checks that make an upstream unhealthy.' }),
    ),
    healthyAfter: Type.Optional(
      Type.Integer({ minimum: 1, default: 2, description: 'Consecutive good checks that make it healthy again.' }),
    ),
  },
  { additionalProperties: false, default: {} },
)
export type HealthChecksOptions = Required<Static<typeof HealthChecksSchema>>

export const PassiveHealthSchema = Type.Object(
  {
    failuresToEject: Type.Optional(
      Type.Integer({ minimum: 1, default: 3, description: 'Consecutive failed requests that eject an upstream.' }),
    ),
    baseEjectionMs: Type.Optional(
      Type.Integer({ minimum: 1, maximum: MAX_TIMER_MS, default: 5000, description: 'First cooldown; doubles on each ejection in a row.' }),
    ),
    maxEjectionMs: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_TIMER_MS,
        default: 120_000,
        description: "Cooldown cap, and the longest a 503's Retry-After holds an upstream back; at least baseEjectionMs.",
      }),
    ),
  },
  { additionalProperties: false, default: {} },
)
export type PassiveHealthOptions = Required<Static<typeof PassiveHealthSchema>>

export const QueueSchema = Type.Object(
  {
    maxWaiting: Type.Optional(Type.Integer({ minimum: 0, default: 100, description: 'Requests a pool may hold waiting for a slot.' })),
    timeoutMs: Type.Optional(
      Type.Integer({ minimum: 1, maximum: MAX_TIMER_MS, default: 10_000, description: 'How long a request may wait for a slot.' }),
    ),
  },
  { additionalProperties: false, default: {} },
)
export type QueueOptions = Required<Static<typeof QueueSchema>>

export const UpstreamsOptionsSchema = Type.Object(
  {
    upstreams: UpstreamListSchema,
    healthChecks: Type.Optional(HealthChecksSchema),
    passive: Type.Optional(PassiveHealthSchema),
    queue: Type.Optional(QueueSchema),
  },
  { additionalProperties: false },
)
export type UpstreamsOptions = Static<typeof UpstreamsOptionsSchema>

/** The options after validation, every default filled in. */
export interface ResolvedUpstreamsOptions {
  upstreams: ResolvedUpstreamConfig[]
  healthChecks: HealthChecksOptions
  passive: PassiveHealthOptions
  queue: QueueOptions
}

const SUBJECT = '@llmproxy/upstreams options'

/** Validates the options (schema, then unique names and usable urls) and fills in the defaults. */
export function resolveOptions(options: unknown): ResolvedUpstreamsOptions {
  const opts = validateOptions(UpstreamsOptionsSchema, options, SUBJECT)
  const problems = checkUpstreamList(opts.upstreams, '/upstreams')
  // Every optional field has a schema default, filled in by validateOptions.
  const resolved = opts as ResolvedUpstreamsOptions
  problems.push(...checkPassiveHealth(resolved.passive, '/passive'))
  if (problems.length > 0) throw new ConfigError(SUBJECT, problems)
  return resolved
}

/** What the passive health schema cannot say (`at`: where the section sits; the config file checks it too). */
export function checkPassiveHealth(passive: Static<typeof PassiveHealthSchema>, at: string): ConfigProblem[] {
  const { baseEjectionMs, maxEjectionMs } = passive
  if (baseEjectionMs === undefined || maxEjectionMs === undefined || maxEjectionMs >= baseEjectionMs) return []
  return [{ path: `${at}/maxEjectionMs`, message: 'must be >= baseEjectionMs' }]
}

/** Validates a new upstream list (hot reload) the same way as at registration. */
export function resolveUpstreamList(list: unknown): ResolvedUpstreamConfig[] {
  const subject = '@llmproxy/upstreams upstream list'
  const upstreams = validateOptions(UpstreamListSchema, list, subject)
  const problems = checkUpstreamList(upstreams, '')
  if (problems.length > 0) throw new ConfigError(subject, problems)
  return upstreams as ResolvedUpstreamConfig[]
}

function checkUpstreamList(list: readonly UpstreamConfig[], prefix: string): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const seen = new Set<string>()
  for (let i = 0; i < list.length; i++) {
    const upstream = list[i] as UpstreamConfig
    if (seen.has(upstream.name)) {
      problems.push({ path: `${prefix}/${i}/name`, message: `duplicate upstream name ${JSON.stringify(upstream.name)}` })
    }
    seen.add(upstream.name)
    const check = upstream.healthCheck
    if (check?.enabled === true && check.path === undefined && defaultHealthCheckPath(upstream.protocol) === null) {
      problems.push({
        path: `${prefix}/${i}/healthCheck/path`,
        message: `required when enabled: the ${upstream.protocol} protocol has no default health check path`,
      })
    }
    const urlProblem = checkUrl(upstream.url)
    if (urlProblem !== null) problems.push({ path: `${prefix}/${i}/url`, message: urlProblem })
    if (upstream.apiKey !== undefined) {
      // Blank is an unset secret (`apiKey: "${OPENAI_API_KEY}"`): the upstream would refuse every request.
      const keyProblem =
        upstream.apiKey.trim() === ''
          ? 'is empty (is the secret it comes from set?); leave apiKey out if the upstream needs none'
          : headerValueProblem(upstream.apiKey)
      if (keyProblem !== null) problems.push({ path: `${prefix}/${i}/apiKey`, message: keyProblem })
    }
    problems.push(...headerProblems(upstream.headers, `${prefix}/${i}/headers`))
  }
  return problems
}

function checkUrl(value: string): string | null {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    // The value is not shown: the line reaches logs and the admin API, and a malformed URL may still hold a key
    // (a query string) or a password.
    return 'not a valid URL: expected http(s)://host[:port][/path]'
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `must be an http or https URL, got ${JSON.stringify(url.protocol)}`
  if (url.search !== '' || url.hash !== '') return 'must not have a query string or a fragment'
  if (url.username !== '' || url.password !== '') return 'must not hold credentials: use apiKey or headers'
  // An SDK's base URL (https://api.openai.com/v1): every request would go to /v1/v1/….
  const version = /\/(v1|v1beta)\/*$/.exec(url.pathname)?.[1]
  if (version !== undefined) {
    return `must not end in /${version}: the gateway appends the API path (/v1/chat/completions, /v1beta/models/…); leave it out`
  }
  return null
}

/** The url without a trailing slash, so that `url + '/v1/…'` is always right. */
export function normalizeUrl(url: string): string {
  return url.endsWith('/') ? url.replace(/\/+$/, '') : url
}

/**
 * Whether a hot reload (`UpstreamRegistry.update`) keeps an upstream of that name, with its state (a drain among it),
 * rather than starting it fresh: its url is the same.
 */
export function keepsUpstream(previousUrl: string, nextUrl: string): boolean {
  return normalizeUrl(previousUrl) === normalizeUrl(nextUrl)
}
