import { createHash, timingSafeEqual } from 'node:crypto'
import type { Server } from 'node:http'
import swagger from '@fastify/swagger'
import { ConfigError, coded, errors, Protocol, toLlmProxyError } from '@llmproxy/core'
import { type Static, Type } from '@llmproxy/core/typebox'
import { sendError } from '@llmproxy/protocols'
import Fastify, {
  type FastifyHttpOptions,
  type FastifyInstance,
  type FastifyPluginAsync,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify'
import { type AdminSettings, ConfigSchema } from './config.js'
import { redactConfig } from './redact.js'
import { ReloadNotAppliedError } from './reload.js'

/** `fastify.llmAdmin`, present when the config has an `admin` section. */
export interface AdminApi {
  /** True when the admin API has its own server (`admin.port`); false when mounted on the gateway under /admin. */
  readonly separate: boolean
  /**
   * Resolves with the origin the admin API is served at (`/admin/...` paths), once the gateway listens and,
   * when separate, the admin server too. Rejects when the separate admin server could not start.
   */
  listening(): Promise<string>
}

declare module 'fastify' {
  interface FastifyInstance {
    llmAdmin: AdminApi
  }
}

/** Constant-time check of `Authorization: Bearer <token>` (both sides hashed, so lengths never leak). */
function bearerMatches(header: string | undefined, expected: Buffer): boolean {
  if (typeof header !== 'string') return false
  const match = /^Bearer[ \t]+(.*?)[ \t]*$/i.exec(header)
  if (match === null) return false
  return timingSafeEqual(
    createHash('sha256')
      .update(match[1] ?? '')
      .digest(),
    expected,
  )
}

const adminUnauthorized = () =>
  errors.unauthorized('Missing or invalid admin token: send "Authorization: Bearer <admin.token>".', {
    headers: { 'www-authenticate': 'Bearer realm="llmproxy-admin"' },
  })

// ---- Schemas (request and response) of the admin routes, which the OpenAPI document shows. ----

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(schema: T) => Type.Union([schema, Type.Null()])

const ErrorBodySchema = Type.Object(
  {
    error: Type.Object({
      message: Type.String(),
      type: Type.String(),
      param: Nullable(Type.String()),
      code: Type.String(),
    }),
  },
  { description: 'An error, in the OpenAI shape.' },
)

const UpstreamStateSchema = Type.Union([
  Type.Literal('healthy'),
  Type.Literal('unhealthy'),
  Type.Literal('ejected'),
  Type.Literal('half-open'),
  Type.Literal('draining'),
])

const UpstreamSnapshotSchema = Type.Object({
  name: Type.String(),
  url: Type.String(),
  protocol: Protocol,
  state: UpstreamStateSchema,
  inFlight: Type.Integer({ description: 'Requests in flight.' }),
  ewmaTtftMs: Nullable(Type.Number({ description: 'Peak-EWMA of the time to first token.' })),
  ejections: Type.Integer({ description: 'Ejections since start (passive health).' }),
  consecutiveFailures: Type.Integer(),
  recentErrors: Type.Integer({ description: 'Failed requests in the last 60 s.' }),
  lastError: Nullable(Type.String()),
  weight: Type.Integer(),
  maxConcurrency: Nullable(Type.Integer()),
  heldUntil: Nullable(Type.Number({ description: 'Epoch ms until which a 429 holds the upstream back.' })),
  panicPicks: Type.Integer({ description: 'Requests sent here in panic mode (every upstream of its pool was out).' }),
  workers: Type.Optional(
    Type.Array(Type.Object({ worker: Type.Integer(), state: UpstreamStateSchema, inFlight: Type.Integer() }), {
      description:
        "With server.workers > 1: each worker's own state and requests in flight (the fields above are for the whole gateway: counts summed, the state most workers see).",
    }),
  ),
})

const UpstreamNameSchema = Type.Object({ name: Type.String({ minLength: 1, description: 'The upstream name.' }) })

const KeyLimitsSchema = Type.Object({
  rpm: Type.Optional(Type.Integer()),
  rps: Type.Optional(Type.Integer()),
  tpm: Type.Optional(Type.Integer()),
  concurrency: Type.Optional(Type.Integer()),
  quota: Type.Optional(Type.Object({ tokens: Type.Integer(), per: Type.Union([Type.Literal('day'), Type.Literal('month')]) })),
})

const KeyUsageSchema = Type.Object({
  tpm: Nullable(Type.Object({ limit: Type.Integer(), used: Type.Integer(), resetMs: Type.Integer() })),
  quota: Nullable(
    Type.Object({
      limit: Type.Integer(),
      used: Type.Integer(),
      remaining: Type.Integer(),
      period: Type.Union([Type.Literal('day'), Type.Literal('month')]),
      resetAt: Type.String({ description: 'ISO time the period ends.' }),
    }),
  ),
  concurrency: Nullable(Type.Object({ limit: Type.Integer(), inFlight: Type.Integer() })),
})

const KeyEntrySchema = Type.Object({
  id: Type.String(),
  models: Nullable(Type.Array(Type.String(), { description: 'Allowed models and aliases; null: every model.' })),
  limits: Nullable(KeyLimitsSchema),
  usage: Nullable(KeyUsageSchema),
})

const SinkStatsFields = {
  queueDepth: Type.Integer({ description: 'Records spooled, not yet acknowledged by the webhook.' }),
  spoolBytes: Type.Integer(),
  delivered: Type.Integer(),
  deliveryFailures: Type.Integer(),
  dropped: Type.Integer(),
  notSpooled: Type.Integer(),
  lastDeliveryAt: Nullable(Type.String()),
  lastError: Nullable(Type.String()),
}

const UsageStatsSchema = Type.Union([
  Type.Object({
    enabled: Type.Literal(true),
    ...SinkStatsFields,
    workers: Type.Optional(
      Type.Array(Type.Object({ worker: Type.Integer(), ...SinkStatsFields }), {
        description: "With server.workers > 1: each worker's own spool and deliveries (the fields above are their sums).",
      }),
    ),
  }),
  Type.Object({ enabled: Type.Literal(false) }, { description: 'The usage plugin is not configured.' }),
])

const ProblemSchema = Type.Object({ path: Type.String(), message: Type.String() })

const ReloadResultSchema = Type.Object({
  reloaded: Type.Literal(true),
  applied: Type.Array(Type.String(), { description: 'Live sections that changed and are now in force.' }),
  restartRequired: Type.Array(Type.String(), { description: 'Sections that changed but take effect after a restart.' }),
})

const ReloadFailureSchema = Type.Object(
  {
    reloaded: Type.Literal(false),
    error: ErrorBodySchema.properties.error,
    problems: Type.Array(ProblemSchema),
  },
  {
    description:
      'Nothing changed. 400: the config file is missing or invalid. 500: not every worker applied it (one did not answer or exited); those that did went back.',
  },
)

const ReloadHistorySchema = Type.Object({
  file: Type.Union([Type.String(), Type.Null()], { description: 'The config file a reload reads; null without one (the demo).' }),
  last: Type.Union(
    [
      Type.Object({
        at: Type.String({ description: 'When the reload ended (ISO 8601).' }),
        reloaded: Type.Boolean({ description: 'False: the file was missing or invalid, nothing changed.' }),
        applied: Type.Array(Type.String()),
        restartRequired: Type.Array(Type.String()),
        problems: Type.Array(ProblemSchema, { description: 'Why it failed; empty when it applied.' }),
      }),
      Type.Null(),
    ],
    { description: 'The last reload since the start (SIGHUP or POST /admin/reload); null before the first.' },
  ),
})

const OpenApiSchema = Type.Object({}, { additionalProperties: true, description: 'The OpenAPI 3.1 document of the admin API.' })

const withAuth = <R extends Record<number, unknown>>(responses: R) => ({ ...responses, 401: ErrorBodySchema })

/** An upstream as `GET /admin/upstreams` shows it. */
export type AdminUpstream = Static<typeof UpstreamSnapshotSchema>
/** What `GET /admin/usage` answers. */
export type AdminUsage = Static<typeof UsageStatsSchema>

/**
 * What the admin API reads and changes beyond this process's config and keys: the upstreams and the usage sink of
 * the gateway — this process's, or with `server.workers` every worker's, through the primary.
 */
export interface AdminScope {
  upstreams(): Promise<AdminUpstream[]>
  /** Drains or enables an upstream; its entry afterwards, or null when no upstream has that name. */
  upstream(action: 'drain' | 'enable', name: string): Promise<AdminUpstream | null>
  usage(): Promise<AdminUsage>
}

/** The admin scope of a single-process gateway: its own decorators. */
export function localScope(gateway: FastifyInstance): AdminScope {
  return {
    upstreams: async () => gateway.upstreams.snapshot(),
    upstream: async (action, name) =>
      gateway.upstreams[action](name) ? (gateway.upstreams.snapshot().find((u) => u.name === name) ?? null) : null,
    usage: async () => (gateway.hasDecorator('usage') ? { enabled: true, ...gateway.usage.stats() } : { enabled: false }),
  }
}

export interface AdminRoutesOptions {
  /** The gateway whose upstreams, keys, usage and config the routes manage. */
  gateway: FastifyInstance
  token: string
  /** Where upstreams and usage are read and changed (default: `localScope(gateway)`). */
  scope?: AdminScope
}

/** Bytes an admin request may send (read and dropped: no admin route reads a body). */
const ADMIN_BODY_LIMIT = 64 * 1024

/** An error of an admin request, answered in the OpenAI shape (a 413 names the admin body limit). */
function sendAdminError(reply: FastifyReply, err: unknown): FastifyReply {
  const error = toLlmProxyError(err, ADMIN_BODY_LIMIT)
  if (error.statusCode >= 500) reply.log.error({ err }, 'admin request failed')
  return sendError(reply, error)
}

/** The admin routes, for a context registered with `prefix: '/admin'` (on the gateway or on a separate server). */
export const adminRoutes: FastifyPluginAsync<AdminRoutesOptions> = async (admin, { gateway, token, scope = localScope(gateway) }) => {
  const expected = createHash('sha256').update(token).digest()
  await admin.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'LLMProxy admin API',
        version: '1',
        description: 'Every route needs `Authorization: Bearer <admin.token>`.',
      },
      components: { securitySchemes: { adminToken: { type: 'http', scheme: 'bearer' } } },
      security: [{ adminToken: [] }],
    },
  })

  admin.addHook('onRequest', (request, reply, done) => {
    if (bearerMatches(request.headers.authorization, expected)) return done()
    request.log.warn({ method: request.method, url: request.url, ip: request.ip }, 'admin: refused (missing or invalid token)')
    sendError(reply, adminUnauthorized())
  })

  // No admin route reads a body: whatever comes (many clients send content-type: application/json and none, or
  // `{}`) is read and dropped, never a parse error.
  admin.removeAllContentTypeParsers()
  admin.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: ADMIN_BODY_LIMIT }, (_request, _body, done) => done(null))

  // Set here, not left to the gateway: mounted, this context was registered before the gateway set its handler (and
  // keeps Fastify's, whose answers are not OpenAI-shaped); the gateway's would also name its own body limit.
  admin.setErrorHandler((err, _request, reply) => sendAdminError(reply, err))

  // The gateway's API keys and rate limits don't apply here: the admin token does.
  const options = { config: { auth: false, rateLimit: false }, exposeHeadRoute: false } as const

  admin.get('/upstreams', { ...options, schema: { response: withAuth({ 200: Type.Array(UpstreamSnapshotSchema) }) } }, () =>
    scope.upstreams(),
  )

  const upstreamAction =
    (action: 'drain' | 'enable') => async (request: FastifyRequest<{ Params: { name: string } }>, reply: FastifyReply) => {
      const name = request.params.name
      const entry = await scope.upstream(action, name)
      if (entry === null) return sendError(reply, errors.upstreamNotFound(name))
      request.log.info({ upstream: name }, action === 'drain' ? 'admin: upstream drained' : 'admin: upstream enabled')
      return entry
    }
  const actionSchema = { params: UpstreamNameSchema, response: withAuth({ 200: UpstreamSnapshotSchema, 404: ErrorBodySchema }) }
  admin.post(
    '/upstreams/:name/drain',
    { ...options, schema: { ...actionSchema, summary: 'Stop sending new requests to an upstream' } },
    upstreamAction('drain'),
  )
  admin.post(
    '/upstreams/:name/enable',
    { ...options, schema: { ...actionSchema, summary: 'Make an upstream healthy again' } },
    upstreamAction('enable'),
  )

  admin.get('/keys', { ...options, schema: { response: withAuth({ 200: Type.Array(KeyEntrySchema) }) } }, async () => {
    if (!gateway.hasDecorator('llmAuth')) return []
    const auth = gateway.llmAuth
    const limits = gateway.hasDecorator('rateLimits') ? gateway.rateLimits : null
    const entries = auth.keyIds().map(async (id) => {
      const identity = auth.identity(id)
      const own = identity?.limits ?? null
      return { id, models: identity?.models ?? null, limits: own, usage: limits === null ? null : await limits.usage(id, own) }
    })
    return Promise.all(entries)
  })

  admin.get('/usage', { ...options, schema: { response: withAuth({ 200: UsageStatsSchema }) } }, () => scope.usage())

  admin.post(
    '/reload',
    {
      ...options,
      schema: {
        summary: 'Re-read the config file and apply it',
        response: withAuth({ 200: ReloadResultSchema, 400: ReloadFailureSchema, 500: ReloadFailureSchema }),
      },
    },
    async (request, reply) => {
      request.log.info('admin: reload requested')
      try {
        return await gateway.llmConfig.reload()
      } catch (err) {
        if (err instanceof ReloadNotAppliedError) {
          const error = coded('llmproxy_internal_error', `Config not reloaded. ${err.message}`)
          return reply.code(500).send({ reloaded: false, ...error.toJSON(), problems: [{ path: '', message: err.message }] })
        }
        if (!(err instanceof ConfigError)) throw err
        const error = errors.invalidRequest(`Config not reloaded, nothing changed. ${err.message}`)
        return reply.code(400).send({ reloaded: false, ...error.toJSON(), problems: err.problems })
      }
    },
  )

  admin.get(
    '/reload',
    { ...options, schema: { summary: 'How the last config reload went', response: withAuth({ 200: ReloadHistorySchema }) } },
    () => gateway.llmConfig.history(),
  )

  admin.get(
    '/config',
    { ...options, schema: { summary: 'The config in force, secrets redacted', response: withAuth({ 200: ConfigSchema }) } },
    async () => redactConfig(gateway.llmConfig.current()),
  )

  admin.get('/openapi.json', { ...options, schema: { response: withAuth({ 200: OpenApiSchema }) } }, async () => admin.swagger())

  // Any other admin path is this API's 404, after the token check. Mounted, it would be the gateway's own 404, where
  // the gateway's API keys apply: an admin token got a 401 there.
  admin.all('/*', { ...options, schema: { hide: true } }, (request, reply) =>
    sendError(reply, errors.notFound(request.method, request.url.split('?')[0] ?? '')),
  )
}

function deferred<T>(): { promise: Promise<T>; resolve(value: T): void; reject(err: unknown): void } {
  let resolve: (value: T) => void = () => {}
  let reject: (err: unknown) => void = () => {}
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  // Whoever needs the outcome awaits it; an unobserved failure is logged, not an unhandled rejection.
  promise.catch(() => undefined)
  return { promise, resolve, reject }
}

/** The Fastify options the admin API's own server takes from the gateway's (app.ts): ids, error answers. */
export type ServerBasics = Pick<FastifyHttpOptions<Server>, 'genReqId' | 'clientErrorHandler' | 'frameworkErrors'>

export interface AdminServerOptions {
  server: ServerBasics
  /** Default: `localScope(app)`. */
  scope?: AdminScope | undefined
}

/**
 * Sets up the admin API of the gateway: mounted under /admin, or (with `admin.port`) on a separate Fastify server
 * started once the gateway listens and closed with it.
 */
export async function setupAdmin(app: FastifyInstance, settings: AdminSettings, options: AdminServerOptions): Promise<void> {
  const routeOptions: AdminRoutesOptions & { prefix: string } = {
    prefix: '/admin',
    gateway: app,
    token: settings.token,
    ...(options.scope === undefined ? {} : { scope: options.scope }),
  }
  if (settings.port === undefined) {
    await app.register(adminRoutes, routeOptions)
    const listening = deferred<string>()
    app.addHook('onListen', (done) => {
      listening.resolve(app.listeningOrigin)
      done()
    })
    app.decorate('llmAdmin', { separate: false, listening: () => listening.promise } satisfies AdminApi)
    return
  }

  const fastifyOptions: FastifyHttpOptions<Server> = {
    ...options.server,
    loggerInstance: app.log.child({ server: 'admin' }),
    logController: new LogController({ disableRequestLogging: true }),
  }
  const server = Fastify(fastifyOptions) as unknown as FastifyInstance
  server.setNotFoundHandler((request, reply) => sendError(reply, errors.notFound(request.method, request.url.split('?')[0] ?? '')))
  server.setErrorHandler((err, _request, reply) => sendAdminError(reply, err))
  server.addHook('onResponse', (request, reply, done) => {
    request.log.info(
      { method: request.method, url: request.url, status: reply.statusCode, durationMs: Math.round(reply.elapsedTime) },
      'request',
    )
    done()
  })
  await server.register(adminRoutes, routeOptions)

  const host = settings.host ?? '127.0.0.1'
  const port = settings.port
  const listening = deferred<string>()
  let started: Promise<string> | null = null
  app.addHook('onListen', async () => {
    started = server.listen({ host, port })
    try {
      const url = await started
      app.log.info({ url }, 'admin API listening')
      listening.resolve(url)
    } catch (err) {
      app.log.error({ err, host, port }, 'admin API could not start')
      listening.reject(err)
    }
  })
  app.addHook('onClose', async () => {
    if (started !== null) await started.catch(() => undefined)
    await server.close()
  })
  app.decorate('llmAdmin', { separate: true, listening: () => listening.promise } satisfies AdminApi)
}
