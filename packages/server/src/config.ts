import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { AuthOptionsSchema, compileIpList, compileKeys, unsendableSecretProblem } from '@llmproxy/auth'
import { ConfigError, type ConfigProblem, checkSchema, MAX_TIMER_MS } from '@llmproxy/core'
import { type Static, Type, Value } from '@llmproxy/core/typebox'
import { checkBuckets, checkScrapePath, MetricsOptionsSchema } from '@llmproxy/metrics'
import { RateLimitOptionsSchema, RedisOptionsSchema } from '@llmproxy/rate-limit'
import { isAliasPattern, ModelRouteSchema, ModelTable, RetrySchema, TimeoutsSchema } from '@llmproxy/router'
import {
  builtinStrategies,
  checkPassiveHealth,
  HealthChecksSchema,
  PassiveHealthSchema,
  QueueSchema,
  resolveUpstreamList,
  UpstreamConfigSchema,
} from '@llmproxy/upstreams'
import { UsageOptionsSchema } from '@llmproxy/usage'
import { isCollection, isMap, isNode, isScalar, isSeq, LineCounter, type Node, parseDocument, YAMLError } from 'yaml'
import { checkDependencies, enableKeyLimits, section } from './config-dependencies.js'

export const ServerSettingsSchema = Type.Object(
  {
    host: Type.String({ default: '0.0.0.0' }),
    port: Type.Integer({ minimum: 0, maximum: 65535, default: 8080 }),
    trustProxy: Type.Union([Type.Boolean(), Type.String(), Type.Array(Type.String())], {
      default: false,
      description:
        "Fastify's trustProxy: which proxies may set X-Forwarded-For (decides the client IP used by the IP allowlist). Their addresses or CIDRs, or loopback, linklocal, uniquelocal: a list, or one string separated by commas; true trusts any client's header.",
    }),
    headersTimeoutMs: Type.Integer({
      minimum: 1,
      maximum: MAX_TIMER_MS,
      default: 10_000,
      description: 'A client must send its request headers within this time (at most requestTimeoutMs).',
    }),
    requestTimeoutMs: Type.Integer({
      minimum: 1,
      maximum: MAX_TIMER_MS,
      default: 30_000,
      description: 'A client must send its whole request (headers and body) within this time.',
    }),
    keepAliveTimeoutMs: Type.Integer({
      minimum: 1,
      maximum: MAX_TIMER_MS,
      default: 5_000,
      description: 'Idle keep-alive connections close after this time.',
    }),
    backlog: Type.Integer({
      minimum: 1,
      default: 4096,
      description:
        "Connections the kernel queues for the gateway to accept (listen backlog; Linux caps it at net.core.somaxconn). Node's 511 overflows when thousands of clients connect within a second, and their connects then time out.",
    }),
    shutdownGraceMs: Type.Integer({
      minimum: 0,
      maximum: MAX_TIMER_MS,
      default: 30_000,
      description:
        'On SIGTERM/SIGINT, in-flight requests may finish within this time; then they end with llmproxy_shutting_down (in band, for a stream).',
    }),
    logLevel: Type.Union(
      ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
      { default: 'info' },
    ),
    workers: Type.Union([Type.Integer({ minimum: 1, maximum: 1024 }), Type.Literal('auto')], {
      default: 1,
      description:
        'Gateway processes serving the one port (llmproxy CLI): 1 is a single process; N or "auto" (one per CPU core) start a supervising primary and N workers that share limits, quotas, metrics and the admin API.',
    }),
  },
  { additionalProperties: false, default: {} },
)

export const AdminSettingsSchema = Type.Object(
  {
    token: Type.String({
      minLength: 16,
      description:
        'Bearer token every admin request must send (Authorization: Bearer <token>); e.g. from an environment variable. Printable ASCII without spaces.',
    }),
    host: Type.Optional(
      Type.String({ minLength: 1, description: 'Address of the separate admin server (default 127.0.0.1); needs port.' }),
    ),
    port: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 65535,
        description: 'Serve the admin API on its own port (a separate server); without it, it is mounted on the gateway under /admin.',
      }),
    ),
  },
  { additionalProperties: false, description: 'The admin REST API (upstreams, keys, usage, reload, config); absent = no admin API.' },
)
export type AdminSettings = Static<typeof AdminSettingsSchema>

/** The config file (docs/configuration.md). */
export const ConfigSchema = Type.Object(
  {
    $schema: Type.Optional(Type.String({ description: 'Path or URL of this JSON Schema, for editors.' })),
    server: ServerSettingsSchema,
    upstreams: Type.Array(UpstreamConfigSchema, { minItems: 1 }),
    models: Type.Array(ModelRouteSchema, { minItems: 1 }),
    retry: RetrySchema,
    timeouts: TimeoutsSchema,
    healthChecks: HealthChecksSchema,
    passiveHealth: PassiveHealthSchema,
    queue: QueueSchema,
    bodyLimit: Type.Integer({ minimum: 1, default: 8 * 1024 * 1024, description: 'Largest request body accepted, in bytes.' }),
    auth: Type.Optional(AuthOptionsSchema),
    // Omit drops the object's own options: unknown keys stay refused.
    rateLimit: Type.Optional(Type.Omit(RateLimitOptionsSchema, ['redis'], { additionalProperties: false })),
    redis: Type.Optional(RedisOptionsSchema),
    usage: Type.Optional(UsageOptionsSchema),
    metrics: Type.Union([Type.Literal(false), MetricsOptionsSchema], {
      default: {},
      description: 'Prometheus metrics (on by default at /metrics); false turns them off.',
    }),
    admin: Type.Optional(AdminSettingsSchema),
  },
  { additionalProperties: false },
)
export type Config = Static<typeof ConfigSchema>

/** How many gateway processes `server.workers` asks for (`auto`: one per core this process may run on). */
export function workerCount(workers: Config['server']['workers']): number {
  return workers === 'auto' ? availableParallelism() : workers
}

/**
 * A reference (`${NAME}`, `${NAME:-default}`; a default holds no `${`), or any other `${` up to its first `}` (to the
 * end without one): a typo a literal would keep, and that would then be the client key or admin token anyone who read
 * the file (or the docs) could send. There is no escape for a literal `${`: a value that needs one comes whole from
 * a variable (a variable's value is never scanned).
 */
const ENV_REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:(?!\$\{)[^}])*))?\}|\$\{[^}]*\}?/g
const REFERENCE_SYNTAX = `write \${NAME} or \${NAME:-default}; a value holding "\${" comes whole from a variable`

/**
 * What is wrong with the `${` at `offset` that starts no reference (`text`: from it to its first `}`). Its place, never
 * the text, which may be part of a literal secret.
 */
function badReference(text: string, offset: number): string {
  const at = `the "\${" at index ${offset}`
  if (!text.endsWith('}')) return `${at} is not closed by "}" (${REFERENCE_SYNTAX})`
  if (/^\$\{[A-Za-z_][A-Za-z0-9_]*:-/.test(text))
    return `${at} has a "\${" in its default, which cannot hold a reference (${REFERENCE_SYNTAX})`
  return `${at} starts no environment reference: a name is letters, digits and _, not starting with a digit (${REFERENCE_SYNTAX})`
}

/**
 * Replaces `${NAME}` and `${NAME:-default}` in every string of the parsed config (never in the raw
 * text, so a value cannot inject YAML). A missing variable without default, and a `${` that starts no reference, are
 * problems at their path. `emptied`: the paths whose variable is set but empty, and its name (a problem there names it).
 */
export function interpolateEnv(
  value: unknown,
  env: NodeJS.ProcessEnv,
  path: string,
  problems: ConfigProblem[],
  emptied: Map<string, string> = new Map(),
): unknown {
  if (typeof value === 'string') {
    return value.replace(ENV_REFERENCE, (match: string, name: string | undefined, fallback: string | undefined, offset: number) => {
      if (name === undefined) {
        problems.push({ path, message: badReference(match, offset) })
        return ''
      }
      const found = env[name]
      if (found === '') emptied.set(path, name)
      if (found !== undefined) return found
      if (fallback !== undefined) return fallback
      problems.push({ path, message: `environment variable ${name} is not set` })
      return ''
    })
  }
  if (Array.isArray(value)) return value.map((item, i) => interpolateEnv(item, env, `${path}/${i}`, problems, emptied))
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const [key, item] of Object.entries(value)) out[key] = interpolateEnv(item, env, `${path}/${key}`, problems, emptied)
    return out
  }
  return value
}

/**
 * Where a YAML/JSON syntax error (or a warning) is and what it is, without the excerpt of the file the parser quotes:
 * that line may hold a literal secret, and this message is printed by `llmproxy check`, logged and returned by a failed
 * reload.
 */
function syntaxProblem(err: unknown): string {
  // Not a syntax error (an unresolved alias): its message names no value.
  if (!(err instanceof YAMLError)) return err instanceof Error ? (err.message.split('\n')[0] ?? err.name) : String(err)
  const at = err.linePos?.[0]
  // The message is "<problem> at line L, column C:\n\n<excerpt>": keep the problem only.
  const problem = err.message.split(' at line ')[0]?.split('\n')[0] ?? err.code
  return `${at === undefined ? '' : `line ${at.line}, column ${at.col}: `}${problem} (${err.code})`
}

/**
 * The yaml library's warnings that are refused: the value it reads is not the one written, since a tag it cannot apply
 * is dropped (`apiKey: !secret name` would be the key "name"; `!vault`, `!env`, `!!int` on a non-number alike). The
 * others leave the values as written and are ignored: an unknown `%` directive (YAML says to ignore it), an anchor or
 * alias whose name ends in `:` (YAML reads the colon as part of the name; a mismatch fails as an unresolved alias), a
 * flow collection closed at its parent's indent.
 */
const REFUSED_YAML_WARNINGS: ReadonlySet<string> = new Set(['TAG_RESOLVE_FAILED', 'BAD_COLLECTION_TYPE'])

/** Each node of a YAML document with its config path (`/upstreams/0/apiKey`), in document order, parents first. */
function* nodesWithPaths(node: unknown, path: string): Generator<[Node, string]> {
  if (!isNode(node)) return
  yield [node, path]
  if (isMap(node)) {
    for (const pair of node.items) {
      const keyPath = isCollection(pair.key) ? path : `${path}/${String(isScalar(pair.key) ? pair.key.value : pair.key)}`
      yield* nodesWithPaths(pair.key, keyPath)
      yield* nodesWithPaths(pair.value, keyPath)
    }
  } else if (isSeq(node)) {
    for (const [i, item] of node.items.entries()) yield* nodesWithPaths(item, `${path}/${i}`)
  }
}

/**
 * Parses the YAML (or JSON) text, throwing its first syntax error. What the library warns of is returned as problems
 * (line, column and path, never the value) or ignored, never printed: its warning quotes the line, which may hold a
 * literal secret, and went to stderr by `process.emitWarning`.
 */
function readYaml(text: string): { raw: unknown; problems: ConfigProblem[] } {
  const lineCounter = new LineCounter()
  // merge: YAML 1.1 merge keys (`<<: *defaults`), which operators copy from other tools' configs.
  // logLevel 'error': errors still reach doc.errors, nothing is printed ('silent' would drop the errors too).
  const doc = parseDocument(text, { prettyErrors: true, merge: true, logLevel: 'error', lineCounter })
  const [error] = doc.errors
  if (error !== undefined) throw error
  const nodes = [...nodesWithPaths(doc.contents, '')]
  const problems: ConfigProblem[] = []
  for (const warning of doc.warnings) {
    if (!REFUSED_YAML_WARNINGS.has(warning.code)) continue
    // The tag's node is the first to start after it.
    const path = nodes.find(([node]) => (node.range?.[0] ?? -1) >= warning.pos[1])?.[1] ?? ''
    problems.push({ path, message: `${syntaxProblem(warning)}: write the value without the tag (a secret as "\${NAME}")` })
  }
  // toJS would turn such a key into a string of its YAML ("[ team, a ]"), which a headers or metadata map takes.
  for (const [node, path] of nodes) {
    if (!isMap(node)) continue
    for (const pair of node.items) {
      if (!isCollection(pair.key)) continue
      const at = lineCounter.linePos(pair.key.range?.[0] ?? 0)
      problems.push({ path, message: `line ${at.line}, column ${at.col}: a key must be a name, not a list or a mapping` })
    }
  }
  return { raw: problems.length > 0 ? null : doc.toJS(), problems }
}

/** Paths the gateway serves itself: `/healthz`, `/readyz`, and everything under its API and admin prefixes. */
const GATEWAY_PATHS: readonly { path: string; exact: boolean; owner: string }[] = [
  { path: '/healthz', exact: true, owner: 'its liveness probe' },
  { path: '/readyz', exact: true, owner: 'its readiness probe' },
  // The GET routes of the APIs (their other routes are POSTs, which a scrape path beside them does not touch).
  { path: '/v1/models', exact: false, owner: 'the OpenAI and Anthropic model lists' },
  { path: '/v1beta/models', exact: false, owner: 'the Gemini model list' },
]

/**
 * What of the gateway's own serves `path`, or null: the scrape route cannot take it (Fastify refuses a second GET of a
 * path at start, and would shadow a model route). `/admin` counts when the admin API is mounted on the gateway.
 */
function gatewayPathOwner(path: string, adminMounted: boolean): string | null {
  const owned = adminMounted ? [...GATEWAY_PATHS, { path: '/admin', exact: false, owner: 'the admin API' }] : GATEWAY_PATHS
  const found = owned.find((p) => path === p.path || (!p.exact && path.startsWith(`${p.path}/`)))
  return found?.owner ?? null
}

/** The names of address ranges `server.trustProxy` takes besides addresses and CIDRs (Fastify's proxy-addr's). */
const PROXY_RANGE_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal'])

/** What Fastify (proxy-addr) would throw on at start in `server.trustProxy`, checked as `auth.ipAllowlist` is. */
function trustProxyProblems(trustProxy: Config['server']['trustProxy']): ConfigProblem[] {
  if (typeof trustProxy === 'boolean') return []
  // Fastify splits a string at its commas; a list's entries are taken whole.
  const entries = typeof trustProxy === 'string' ? trustProxy.split(',').map((entry) => entry.trim()) : trustProxy
  const problems: ConfigProblem[] = []
  entries.forEach((entry, i) => {
    if (PROXY_RANGE_NAMES.has(entry)) return
    const path = typeof trustProxy === 'string' ? '/server/trustProxy' : `/server/trustProxy/${i}`
    const found: ConfigProblem[] = []
    compileIpList([entry], path, found)
    for (const problem of found) {
      const names = entry.includes('/') ? '' : `, nor one of ${[...PROXY_RANGE_NAMES].join(', ')}`
      problems.push({ path, message: `${problem.message}${names}` })
    }
    // proxy-addr refuses a /0 range.
    if (found.length === 0 && /\/0+$/.test(entry)) {
      problems.push({ path, message: `${JSON.stringify(entry)} is every address: write trustProxy: true to trust any client's header` })
    }
  })
  return problems
}

/** Parses, interpolates and validates a config document; throws a ConfigError listing every problem. */
export function parseConfig(text: string, source: string, env: NodeJS.ProcessEnv = process.env): Config {
  let read: ReturnType<typeof readYaml>
  try {
    read = readYaml(text)
  } catch (err) {
    throw new ConfigError(`config ${source}`, [{ path: '', message: `not valid YAML or JSON: ${syntaxProblem(err)}` }])
  }
  if (read.problems.length > 0) throw new ConfigError(`config ${source}`, read.problems)
  const raw = read.raw
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(`config ${source}`, [{ path: '', message: 'must be a mapping (an object) of settings' }])
  }
  const problems: ConfigProblem[] = []
  const emptied = new Map<string, string>()
  const interpolated = interpolateEnv(raw, env, '', problems, emptied) as Record<string, unknown>
  // A value refused because its variable is set but empty: the problem says which variable.
  const refuse = () => {
    for (const problem of problems) {
      const name = emptied.get(problem.path)
      // (Not on a problem that is no value's: a key unknown, another variable not set.)
      if (name !== undefined && problem.message !== 'unknown key' && !problem.message.startsWith('environment variable')) {
        problem.message += ` (it comes from \${${name}}, which is set but empty)`
      }
    }
    return new ConfigError(`config ${source}`, problems)
  }
  const written = structuredClone(interpolated) // Value.Default fills defaults in place
  const config = Value.Default(ConfigSchema, interpolated) as unknown
  // A setting whose environment variable is missing (or whose reference is none) is reported once, not again for the
  // empty value it got (a misspelt key holding one is still reported as unknown).
  const unset = new Set(problems.map((p) => p.path))
  problems.push(...checkSchema(ConfigSchema, config).filter((p) => !unset.has(p.path) || p.message === 'unknown key'))
  if (problems.length > 0) throw refuse()
  const valid = config as Config
  // What the plugins check when they register, checked here too so that `llmproxy check` and reload catch it.
  try {
    resolveUpstreamList(valid.upstreams)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    for (const problem of err.problems) problems.push({ path: `/upstreams${problem.path}`, message: problem.message })
  }
  problems.push(...checkPassiveHealth(valid.passiveHealth, '/passiveHealth'))
  if (valid.metrics !== false) {
    problems.push(...checkScrapePath(valid.metrics.path, '/metrics/path'), ...checkBuckets(valid.metrics, '/metrics'))
    const taken = gatewayPathOwner(valid.metrics.path, valid.admin !== undefined && valid.admin.port === undefined)
    if (taken !== null) {
      problems.push({ path: '/metrics/path', message: `${valid.metrics.path} is served by the gateway (${taken}): choose another path` })
    }
  }
  valid.models.forEach((model, i) => {
    if (model.strategy !== undefined && !Object.hasOwn(builtinStrategies, model.strategy)) {
      problems.push({
        path: `/models/${i}/strategy`,
        message: `unknown strategy "${model.strategy}"; one of ${Object.keys(builtinStrategies).join(', ')}`,
      })
    }
  })
  if (valid.auth?.keys !== undefined) compileKeys(valid.auth.keys, '/auth/keys', problems)
  if (valid.auth?.ipAllowlist !== undefined) compileIpList(valid.auth.ipAllowlist, '/auth/ipAllowlist', problems)
  if (valid.auth?.ipDenylist !== undefined) compileIpList(valid.auth.ipDenylist, '/auth/ipDenylist', problems)
  const protocols = new Map(valid.upstreams.map((u) => [u.name, u.protocol]))
  problems.push(...ModelTable.check(valid.models, (name) => protocols.get(name)))
  // A key limited to a model no route serves could never use it: a typo, caught here rather than as 404s.
  // A pattern alias is no name a request carries: a key is given the model it maps to.
  const modelNames = new Set(valid.models.flatMap((model) => [model.name, ...(model.aliases ?? []).filter((a) => !isAliasPattern(a))]))
  valid.auth?.keys?.forEach((key, i) => {
    key.models?.forEach((name, j) => {
      if (name === '*' || modelNames.has(name)) return
      const model = valid.models.find((m) => m.aliases?.includes(name))
      problems.push({
        path: `/auth/keys/${i}/models/${j}`,
        message:
          model === undefined ? `unknown model "${name}"` : `"${name}" is a pattern alias: list the model it maps to ("${model.name}")`,
      })
    })
  })
  enableKeyLimits(valid, ConfigSchema.properties.rateLimit)
  problems.push(...checkDependencies(valid, written))
  problems.push(...trustProxyProblems(valid.server.trustProxy))
  // Node's HTTP server refuses this pair at start (ERR_OUT_OF_RANGE); the defaults count, so raising one alone is caught.
  if (valid.server.headersTimeoutMs > valid.server.requestTimeoutMs) {
    problems.push({
      path: '/server/headersTimeoutMs',
      message: `must be at most server.requestTimeoutMs (${valid.server.requestTimeoutMs}): the headers are part of the request`,
    })
  }
  // The router lowers connectMs to the wait for the first byte the connection is for (firstTokenMs, responseMs): a value
  // written above it would never be in force. The default (5 s) is lowered without a word under a short firstTokenMs.
  const { connectMs, firstTokenMs, responseMs } = valid.timeouts
  const [bound, boundName] = firstTokenMs <= responseMs ? [firstTokenMs, 'firstTokenMs'] : [responseMs, 'responseMs']
  if (connectMs > bound && section(written, 'timeouts')?.connectMs !== undefined) {
    problems.push({
      path: '/timeouts/connectMs',
      message: `must be at most timeouts.${boundName} (${bound}): a first byte needs its connection`,
    })
  }
  const admin = valid.admin
  const tokenProblem = admin === undefined ? null : unsendableSecretProblem(admin.token)
  if (tokenProblem !== null) problems.push({ path: '/admin/token', message: tokenProblem })
  if (admin?.host !== undefined && admin.port === undefined) {
    problems.push({ path: '/admin/port', message: 'required when admin.host is set (the admin API then gets its own server)' })
  }
  if (admin?.port !== undefined && admin.port !== 0 && admin.port === valid.server.port) {
    problems.push({ path: '/admin/port', message: 'must differ from server.port (or leave it out to mount the admin API under /admin)' })
  }
  if (problems.length > 0) throw refuse()
  return valid
}

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`config ${file}`, [
      { path: '', message: `cannot read the file: ${(err as NodeJS.ErrnoException).code ?? String(err)}` },
    ])
  }
  return parseConfig(text, file, env)
}
