import { Settings, type Static, type TSchema, Value } from './typebox.js'

/** One problem in a configuration: where it is (JSON pointer-like path) and what is wrong. */
export interface ConfigProblem {
  path: string
  message: string
}

export class ConfigError extends Error {
  readonly problems: ConfigProblem[]
  constructor(subject: string, problems: ConfigProblem[], options?: ErrorOptions) {
    super(`Invalid ${subject}:\n${problems.map((p) => `  - ${p.path || '/'}: ${p.message}`).join('\n')}`, options)
    this.name = 'ConfigError'
    this.problems = problems
  }
}

/** An HTTP header name (RFC 9110 token), as Node.js accepts it. */
const HEADER_NAME = /^[\^_`a-zA-Z\-0-9!#$%&'*+.|~]+$/
/** Headers of the connection or the message framing that undici sets itself and refuses to be given (`connection: close` it takes). */
const CONNECTION_HEADERS = new Set(['keep-alive', 'upgrade', 'expect', 'transfer-encoding', 'content-length'])
/** What Node.js refuses in a header value (it throws on every request that would send it). */
const NOT_IN_HEADER_VALUE = /[^\t\x20-\x7e\x80-\xff]/

/** Why a value cannot be sent in an HTTP header; null when it can. Names the character, never the value (a secret). */
export function headerValueProblem(value: string): string | null {
  const at = value.search(NOT_IN_HEADER_VALUE)
  if (at === -1) return null
  const code = (value.codePointAt(at) as number).toString(16).toUpperCase().padStart(4, '0')
  return `has a character an HTTP header cannot carry (U+${code} at index ${at})`
}

/** The problems of configured extra headers (names and values Node.js would refuse), at `path`/<name>. */
export function headerProblems(headers: Record<string, string> | undefined, path: string): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  for (const [name, value] of Object.entries(headers ?? {})) {
    const at = `${path}/${name.replaceAll('~', '~0').replaceAll('/', '~1')}`
    if (!HEADER_NAME.test(name)) problems.push({ path: at, message: 'not a valid HTTP header name' })
    else if (CONNECTION_HEADERS.has(name.toLowerCase()))
      problems.push({ path: at, message: 'set by the HTTP client for each request, not here' })
    const valueProblem = headerValueProblem(value)
    if (valueProblem !== null) problems.push({ path: at, message: valueProblem })
  }
  return problems
}

/**
 * The longest delay a Node.js timer keeps (a longer one fires at once, with a warning): the bound of every `…Ms`
 * setting, the few that are not timers (cache TTLs) included, so that one rule holds for all (~24.8 days).
 */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** The errors a value that does not take a union's branch gets from it (`false | {…}` given an object). */
const BRANCH_MISMATCH = new Set(['type', 'const', 'anyOf'])

/** A JSON Schema type as a message names it. */
const TYPE_NAMES: Record<string, string> = {
  integer: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'a boolean',
  object: 'an object',
  array: 'a list',
  null: 'null',
}

/**
 * What a union takes, from the errors its branches gave: its literal values, and the types of its other branches
 * (`integer | "auto"` → `must be an integer or "auto"`). A literal branch's own type error is left out.
 */
function unionMessage(values: unknown[], types: string[]): string {
  const literalTypes = new Set<string>(values.map((v) => typeof v))
  const others = [...new Set(types)].filter((t) => !literalTypes.has(t === 'integer' ? 'number' : t)).map((t) => TYPE_NAMES[t] ?? t)
  const shown = values.map((v) => JSON.stringify(v))
  if (shown.length === 0) {
    const last = others.pop()
    return `must be ${others.length > 0 ? `${others.join(', ')} or ` : ''}${last}`
  }
  if (shown.length === 1) return `must be ${[...others, shown[0]].join(' or ')}`
  return `must be ${others.length > 0 ? `${others.join(', ')}, or ` : ''}one of ${shown.join(', ')}`
}

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
  // A union reports one error per member: its literals' values and its members' types, folded into one message.
  const allowed = new Map<string, unknown[]>()
  const types = new Map<string, string[]>()
  for (const error of found) {
    const key = `${pathPrefix}${error.instancePath}`
    if (error.keyword === 'const') {
      const list = allowed.get(key) ?? []
      list.push((error.params as { allowedValue?: unknown }).allowedValue)
      allowed.set(key, list)
    } else if (error.keyword === 'type') {
      const list = types.get(key) ?? []
      list.push(String((error.params as { type?: unknown }).type))
      types.set(key, list)
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
    // A union of types only (`boolean | string | string[]`) names them all, not its first branch's.
    const values = allowed.get(path) ?? []
    const branchTypes = types.get(path) ?? []
    const isUnion = values.length > 0 || branchTypes.length > 1
    problems.push({ path, message: isUnion ? unionMessage(values, branchTypes) : message })
  }
  // A value with problems inside it took a union's object branch: the other branches' "must be …" is noise.
  return problems.filter((problem) => !mismatches.has(problem.path) || !problems.some((inner) => inner.path.startsWith(`${problem.path}/`)))
}

/**
 * What `fastify.register(plugin, options)` reads from the options for a plugin that makes its own context. A
 * `fastify-plugin` plugin (every LLMProxy plugin) makes none, so Fastify ignores them: refused, with the way to do it.
 */
const REGISTER_OPTIONS = ['prefix', 'logLevel', 'logSerializers'] as const
const IN_YOUR_OWN_CONTEXT =
  'is ignored by Fastify for this plugin (it adds to the context it is registered in): register it inside a context of your own, app.register(async (context) => { await context.register(plugin, options) }, { prefix, logLevel })'

/**
 * Validates plugin options at registration: applies schema defaults, then throws a ConfigError naming
 * every offending field. Returns the options with defaults filled in.
 */
export function validateOptions<S extends TSchema>(schema: S, options: unknown, subject: string): Static<S> {
  const copy = structuredCloneSafe(options ?? {})
  const problems: ConfigProblem[] = []
  if (copy !== null && typeof copy === 'object' && !Array.isArray(copy)) {
    // Fastify's own register options (unless the schema has its own of the name, as metrics' `prefix`).
    const own = (schema as { properties?: Record<string, unknown> }).properties ?? {}
    for (const key of REGISTER_OPTIONS) {
      if (key in own || !(key in copy)) continue
      delete (copy as Record<string, unknown>)[key]
      problems.push({ path: `/${key}`, message: IN_YOUR_OWN_CONTEXT })
    }
  }
  const withDefaults = Value.Default(schema, copy) as unknown
  problems.push(...checkSchema(schema, withDefaults))
  if (problems.length > 0) throw new ConfigError(subject, problems)
  return withDefaults as Static<S>
}

/** Options may hold functions (callbacks), which structuredClone rejects: copy plain data only one level deep. */
function structuredCloneSafe(value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value
  return { ...(value as Record<string, unknown>) }
}
