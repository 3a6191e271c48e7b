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

/** The longest delay a Node.js timer keeps (a longer one fires at once, with a warning): the bound of every `…Ms` setting. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** The errors a value that does not take a union's branch gets from it (`false | {…}` given an object). */
const BRANCH_MISMATCH = new Set(['type', 'const', 'anyOf'])

/** Lists every problem of `value` against `schema`, one per path (the most specific message wins). */
export function checkSchema(schema: TSchema, value: unknown, pathPrefix = ''): ConfigProblem[] {
  // TypeBox stops at 8 errors by default; a config report should list them all.
  const maxErrors = Settings.Get().maxErrors
  Settings.Set({ maxErrors: 1000 })
  let found: ReturnType<typeof Value.Errors>
  try {
    found = Value.Errors(schema, value)
  } finally {
    Settings.Set({ maxErrors })
  }
  /** The first problem at each path, in order, with the keyword that raised it. */
  const first = new Map<string, { message: string; keyword: string }>()
  // A union of literals reports one `const` error per member: folded into "must be one of …".
  const allowed = new Map<string, unknown[]>()
  for (const error of found) {
    const key = `${pathPrefix}${error.instancePath}`
    if (error.keyword === 'const') {
      const list = allowed.get(key) ?? []
      list.push((error.params as { allowedValue?: unknown }).allowedValue)
      allowed.set(key, list)
      if (!first.has(key)) first.set(key, { message: '', keyword: 'const' })
      continue
    }
    // additionalProperties reports twice: the offending key (schema is false) and the parent object.
    if (error.keyword === 'additionalProperties') continue
    const unknownKey = error.keyword === 'boolean' && error.message === 'schema is false'
    if (!first.has(key)) first.set(key, { message: unknownKey ? 'unknown key' : error.message, keyword: error.keyword })
  }
  const problems: ConfigProblem[] = []
  const mismatches = new Set<string>()
  for (const [path, { message, keyword }] of first) {
    if (!BRANCH_MISMATCH.has(keyword)) {
      problems.push({ path, message })
      continue
    }
    mismatches.add(path)
    // A union with literals among its members ("connect" | 429 | …): the values it takes, not one member's type.
    const values = allowed.get(path)?.map((v) => JSON.stringify(v))
    if (values === undefined) problems.push({ path, message })
    else problems.push({ path, message: values.length === 1 ? `must be ${values[0]}` : `must be one of ${values.join(', ')}` })
  }
  // A value with problems inside it took a union's object branch: the other branches' "must be …" is noise.
  return problems.filter((problem) => !mismatches.has(problem.path) || !problems.some((inner) => inner.path.startsWith(`${problem.path}/`)))
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
