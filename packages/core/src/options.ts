import { Settings, type Static, type TSchema, Value } from './typebox.js'

/** One problem in a configuration: where it is (JSON pointer-like path) and what is wrong. */
export interface ConfigProblem {
  path: string
  message: string
}

export class ConfigError extends Error {
  readonly problems: ConfigProblem[]
  constructor(subject: string, problems: ConfigProblem[]) {
    super(`Invalid ${subject}:\n${problems.map((p) => `  - ${p.path || '/'}: ${p.message}`).join('\n')}`)
    this.name = 'ConfigError'
    this.problems = problems
  }
}

/** Lists every problem of `value` against `schema`, one per path (the most specific message wins). */
export function checkSchema(schema: TSchema, value: unknown, pathPrefix = ''): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const seen = new Set<string>()
  // TypeBox stops at 8 errors by default; a config report should list them all.
  const maxErrors = Settings.Get().maxErrors
  Settings.Set({ maxErrors: 1000 })
  let found: ReturnType<typeof Value.Errors>
  try {
    found = Value.Errors(schema, value)
  } finally {
    Settings.Set({ maxErrors })
  }
  // A union of literals reports one `const` error per member: fold them into "must be one of …".
  const allowed = new Map<string, unknown[]>()
  for (const error of found) {
    const key = `${pathPrefix}${error.instancePath}`
    if (error.keyword === 'const') {
      const list = allowed.get(key) ?? []
      list.push((error.params as { allowedValue?: unknown }).allowedValue)
      allowed.set(key, list)
      continue
    }
    // additionalProperties reports twice: the offending key (schema is false) and the parent object.
    if (error.keyword === 'boolean' && error.message === 'schema is false') {
      if (!seen.has(key)) {
        seen.add(key)
        problems.push({ path: key, message: 'unknown key' })
      }
      continue
    }
    if (error.keyword === 'additionalProperties') continue
    if (seen.has(key)) continue
    seen.add(key)
    const values = allowed.get(key)
    const message =
      error.keyword === 'anyOf' && values !== undefined
        ? `must be one of ${values.map((v) => JSON.stringify(v)).join(', ')}`
        : error.message
    problems.push({ path: key, message })
  }
  for (const [key, values] of allowed) {
    if (!seen.has(key)) problems.push({ path: key, message: `must be ${values.map((v) => JSON.stringify(v)).join(' or ')}` })
  }
  return problems
}

/**
 * Validates plugin options at registration: applies schema defaults, then throws a ConfigError naming
 * every offending field. Returns the options with defaults filled in.
 */
export function validateOptions<S extends TSchema>(schema: S, options: unknown, subject: string): Static<S> {
  const withDefaults = Value.Default(schema, structuredCloneSafe(options ?? {})) as unknown
  const problems = checkSchema(schema, withDefaults)
  if (problems.length > 0) throw new ConfigError(subject, problems)
  return withDefaults as Static<S>
}

/** Options may hold functions (callbacks), which structuredClone rejects: copy plain data only one level deep. */
function structuredCloneSafe(value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value
  return { ...(value as Record<string, unknown>) }
}
