import { ConfigError, type ConfigProblem, validateOptions } from '@llmproxy/core'
import { type Static, Type } from '@llmproxy/core/typebox'

const Buckets = Type.Array(Type.Number({ exclusiveMinimum: 0 }), {
  minItems: 1,
  description: 'Strictly increasing upper bounds, in seconds.',
})

export const MetricsOptionsSchema = Type.Object(
  {
    path: Type.String({
      default: '/metrics',
      pattern: '^/',
      description: 'URL of the Prometheus scrape route: a plain path (no ?, #, * or :, no spaces).',
    }),
    prefix: Type.String({
      default: 'llmproxy_',
      pattern: '^([a-zA-Z_:][a-zA-Z0-9_:]*)?$',
      description: 'Prefix of the LLM metric names (process and HTTP route metrics keep their standard names).',
    }),
    perKeyLabels: Type.Boolean({ default: false, description: 'Add a key_id label to the token counters.' }),
    defaultMetrics: Type.Boolean({ default: true, description: 'Collect prom-client process metrics.' }),
    routeMetrics: Type.Boolean({ default: true, description: 'Collect fastify-metrics HTTP route duration histograms.' }),
    maxLabelValues: Type.Integer({
      default: 1000,
      minimum: 1,
      description: 'Distinct values kept per label (model, key_id, upstream); later ones are reported as "other".',
    }),
    buckets: Type.Optional(
      Type.Object(
        {
          ttftSeconds: Type.Optional(Buckets),
          durationSeconds: Type.Optional(Buckets),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
)
export type MetricsOptions = Static<typeof MetricsOptionsSchema>

export const DEFAULT_TTFT_BUCKETS: readonly number[] = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30]
export const DEFAULT_DURATION_BUCKETS: readonly number[] = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
export const DELIVERY_BUCKETS: readonly number[] = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

const SUBJECT = '@llmproxy/metrics options'

/** Validates the options (defaults filled in); bucket lists must also be strictly increasing. */
export function resolveOptions(options: unknown): MetricsOptions {
  const opts = validateOptions(MetricsOptionsSchema, options, SUBJECT)
  const problems = [...checkScrapePath(opts.path, '/path'), ...checkBuckets(opts, '')]
  if (problems.length > 0) throw new ConfigError(SUBJECT, problems)
  return opts
}

/**
 * A scrape path no GET could reach (`?`, `#`: a query or fragment is never part of a route), or that Fastify would read
 * as a pattern (`*`, `:`): `/*` served the metrics, without a key, on every path no other route takes.
 */
export function checkScrapePath(path: string, at: string): ConfigProblem[] {
  const bad = /[?#*:\s]/.exec(path)?.[0]
  if (bad === undefined) return []
  return [{ path: at, message: `must be a plain path: ${JSON.stringify(bad)} is a query, fragment, route pattern or space` }]
}

/** Bucket lists that are not strictly increasing (`at`: where the options sit; the config file checks them too). */
export function checkBuckets(options: MetricsOptions, at: string): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  for (const [name, buckets] of Object.entries(options.buckets ?? {})) {
    if (buckets === undefined) continue
    for (let i = 1; i < buckets.length; i++) {
      if ((buckets[i] as number) <= (buckets[i - 1] as number)) {
        problems.push({ path: `${at}/buckets/${name}/${i}`, message: 'must be greater than the previous bucket' })
        break
      }
    }
  }
  return problems
}
