import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse, STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import { hostname } from 'node:os'
import { auth } from '@llmproxy/auth'
import { ConfigError, errors, type LlmProxyError, llmCore, toLlmProxyError } from '@llmproxy/core'
import { llmMetrics } from '@llmproxy/metrics'
import { type ApiFamily, clientApiOf, sendError, wireOf } from '@llmproxy/protocols'
import { rateLimit } from '@llmproxy/rate-limit'
import { router } from '@llmproxy/router'
import { upstreams } from '@llmproxy/upstreams'
import { usage } from '@llmproxy/usage'
import Fastify, { type FastifyHttpOptions, type FastifyInstance, LogController } from 'fastify'
import pino, { type DestinationStream } from 'pino'
import { AggregatorRegistry, prometheusContentType as PROMETHEUS_CONTENT_TYPE } from 'prom-client'
import { type AdminScope, localScope, type ServerBasics, setupAdmin } from './admin.js'
import { type Config, workerCount } from './config.js'
import { withLazyChildren } from './lazy-logger.js'
import { logSerializers } from './redact.js'
import { configReloadsCounter, installReload, type ReloadHistory, type ReloadResult } from './reload.js'
import { requestLogging } from './request-log.js'
import { sumUsage } from './workers/aggregate.js'
import { deliverFormerSpools, type FormerSpools, workerSpoolDir } from './workers/spools.js'

/** `fastify.llmGateway`: the reference server's shutdown. */
export interface GatewayLifecycle {
  /** True once the shutdown began: `/readyz` answers 503 and new requests get a 503 `llmproxy_shutting_down`. */
  readonly closing: boolean
  /**
   * Begins the shutdown (idempotent) while the gateway keeps listening, so that load balancers see `/readyz` turn 503
   * and health probes are answered; resolves once no request is in flight. Then `app.close()` stops listening.
   */
  drain(): Promise<void>
  /** Resolves once the log lines are written or their destination failed (see logWritten); the shutdown's last step. */
  logWritten(): Promise<void>
}

declare module 'fastify' {
  interface FastifyInstance {
    llmGateway: GatewayLifecycle
  }
}

/** A worker of `server.workers`: which one it is, and what it asks the primary. */
export interface WorkerLink {
  /** 1 to N; a replacement keeps the id of the worker it replaces (and so its usage spool, see workerSpoolDir). */
  readonly id: number
  /** The admin API's upstreams and usage sink: every worker's, combined by the primary. */
  readonly scope: AdminScope
  /** The metrics exposition of the whole gateway (every worker's metrics aggregated by the primary). */
  metrics(): Promise<string>
  /** The primary reads and validates the config file once, and every worker applies it. */
  reload(): Promise<ReloadResult>
  /** The primary's file and last reload. */
  reloadHistory(): Promise<ReloadHistory>
}

export interface GatewayOptions {
  /** Where the JSON log lines go (default: stdout). */
  logDestination?: DestinationStream
  /** The config file `config` came from: `POST /admin/reload` and `fastify.llmConfig.reload()` re-read it. */
  configFile?: string
  /** Applied to every config re-read from `configFile` (e.g. to keep a port given on the command line). */
  adjustConfig?: (config: Config) => void
  /** Set by the `llmproxy` CLI in each worker process of `server.workers` (see workers/worker.ts). */
  worker?: WorkerLink
}

/** Paths and keys pino must never print (query-string credentials: see logSerializers). */
export const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'req.headers["api-key"]',
  'req.headers["x-goog-api-key"]',
  'req.headers.cookie',
  '*.apiKey',
  '*.secret',
  '*.token',
  '*.key',
]

/** x-request-id from the client is kept when it is short and plain; anything else gets a new id. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

export function genRequestId(req: IncomingMessage): string {
  const given = req.headers['x-request-id']
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
}

const SHUTTING_DOWN_ERROR = errors.shuttingDown()
// Serialized once per API: the refusal costs no more than the request line it is picked by.
const SHUTTING_DOWN: Record<ApiFamily, string> = {
  openai: JSON.stringify(wireOf('openai').errorBody(SHUTTING_DOWN_ERROR)),
  anthropic: JSON.stringify(wireOf('anthropic').errorBody(SHUTTING_DOWN_ERROR)),
  gemini: JSON.stringify(wireOf('gemini').errorBody(SHUTTING_DOWN_ERROR)),
}

/**
 * A request that arrives while the gateway shuts down: a 503 in the shape of the client's API (as sendError picks it),
 * the connection closed, one log line.
 */
function refuseWhileClosing(req: IncomingMessage, res: ServerResponse, log: pino.Logger): void {
  const requestId = genRequestId(req)
  const body = SHUTTING_DOWN[clientApiOf(req.url ?? '/', req.headers)]
  res.writeHead(503, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    connection: 'close',
    'x-request-id': requestId,
  })
  res.end(body)
  // The fields of request-log.ts's line for a refusal (no key was looked at: keyId null).
  log.info(
    { reqId: requestId, method: req.method, url: req.url, status: 503, keyId: null, durationMs: 0, error: SHUTTING_DOWN_ERROR.code },
    'request',
  )
}

/** A raw HTTP/1.1 answer (what Node could not hand to Fastify has no reply object), in the OpenAI shape. */
function rawAnswer(error: LlmProxyError): string {
  const body = JSON.stringify(error.toJSON())
  return `HTTP/1.1 ${error.statusCode} ${STATUS_CODES[error.statusCode]}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`
}

const CLIENT_ERRORS: Record<string, string> = {
  ERR_HTTP_REQUEST_TIMEOUT: rawAnswer(errors.requestTimeout()),
  HPE_HEADER_OVERFLOW: rawAnswer(errors.headersTooLarge()),
}
const MALFORMED = rawAnswer(errors.malformedRequest())

/**
 * Requests Node cannot parse, or does not receive within the server timeouts: an answer from the catalogue
 * (Fastify's default is not OpenAI-shaped), then the connection closes. As in Node's own handler, nothing is written
 * once an answer has started on the socket.
 */
function answerClientError(err: Error & { code?: string }, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const answering = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage
  if (socket.writable && (answering == null || !answering.headersSent)) {
    socket.write((err.code === undefined ? undefined : CLIENT_ERRORS[err.code]) ?? MALFORMED)
  }
  socket.destroy(err)
}

/**
 * What the gateway's server and the admin API's own (`admin.port`) have alike: the request ids, and OpenAI-shaped
 * answers to what Node or Fastify refuses before any route runs.
 */
const SERVER_BASICS = {
  genReqId: genRequestId,
  clientErrorHandler: answerClientError,
  // Bad percent-encoding, an over-long path parameter: answered from the catalogue too.
  frameworkErrors: (err, _request, reply) => sendError(reply, toLlmProxyError(err)),
} satisfies ServerBasics

/**
 * In a worker, the scrape route (registered by @llmproxy/metrics) answers with the metrics of every worker, aggregated
 * by the primary, whichever worker the scrape reaches.
 */
function scrapeWholeGateway(app: FastifyInstance, path: string, worker: WorkerLink): void {
  app.addHook('onRoute', (route) => {
    if (route.url !== path || route.method !== 'GET') return
    route.handler = async (request, reply) => {
      try {
        return reply.type(PROMETHEUS_CONTENT_TYPE).send(await worker.metrics())
      } catch (err) {
        request.log.error({ err }, 'metrics collection failed')
        return sendError(reply, errors.internal({ cause: err }))
      }
    }
  })
}

/**
 * In a single process that delivers the spools of former workers (workers/spools.ts), the scrape route adds their
 * usage metrics to the gateway's: their backlog is in `usage_queue_depth`, their deliveries in the counters.
 */
function scrapeWithFormerSpools(app: FastifyInstance, path: string, former: () => FormerSpools | null): void {
  app.addHook('onRoute', (route) => {
    if (route.url !== path || route.method !== 'GET') return
    const own = route.handler
    route.handler = async function (request, reply) {
      const views = (await former()?.metrics()) ?? []
      if (views.length === 0) return own.call(this, request, reply)
      try {
        // This process's metrics have no other process's to be combined with: none is omitted (its start time, say).
        const mine = (await app.llmMetrics.registry.getMetricsAsJSON()).map((metric) =>
          metric.aggregator === 'omit' ? { ...metric, aggregator: 'first' as const } : metric,
        )
        return reply.type(PROMETHEUS_CONTENT_TYPE).send(await AggregatorRegistry.aggregate([mine, ...views]).metrics())
      } catch (err) {
        request.log.error({ err }, 'metrics collection failed')
        return sendError(reply, errors.internal({ cause: err }))
      }
    }
  })
}

/** The admin scope of a single process: its own, plus the spools of former workers it delivers (in the usage totals). */
function singleProcessScope(app: FastifyInstance, former: () => FormerSpools | null): AdminScope {
  const local = localScope(app)
  return {
    ...local,
    usage: async () => {
      const own = await local.usage()
      const formerStats = former()?.stats() ?? null
      return own.enabled && formerStats !== null ? { enabled: true, ...sumUsage([own, formerStats]) } : own
    },
  }
}

/**
 * Standard output as the gateway's log destination: one per process, whichever loggers write there, so that the
 * CLI's exits can wait for it (stdoutWritten).
 */
let stdout: ReturnType<typeof pino.destination> | null = null

function stdoutDestination(): ReturnType<typeof pino.destination> {
  // minLength 1, not sonic-boom's 0: with 0 its flush(cb) calls back at once, with 1 it waits for the write in
  // flight (written). Each line is still written as soon as it is logged: a line is longer than one byte.
  stdout ??= pino.destination({ dest: 1, minLength: 1 })
  return stdout
}

/** The gateway's pino logger (JSON lines, secrets redacted); `bindings` are added to every line (a worker's id). */
export function gatewayLogger(level: string, destination?: DestinationStream, bindings: Record<string, unknown> = {}): pino.Logger {
  return pino(
    {
      level,
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      serializers: logSerializers,
      base: { pid: process.pid, hostname: hostname(), ...bindings },
    },
    destination ?? stdoutDestination(),
  )
}

/** How long an exiting gateway waits at most for its log lines to be written (a reader of stdout may be stuck). */
const LOG_WRITE_WAIT_MS = 2000

/** What of a log destination written() uses: sonic-boom's (pino.destination), and not every destination has. */
interface Flushable {
  flush?: (done: (err?: Error) => void) => void
  flushSync?: () => void
}

/**
 * Resolves once `destination` has written the lines it holds, or failed to; after LOG_WRITE_WAIT_MS at the latest,
 * when the lines still held are dropped. Awaited before the process exits: pino's exit hook writes what is left with
 * sonic-boom's flushSync, which retries a failing write every 100 ms for ever, so that a gateway whose stdout has no
 * reader any more (EPIPE: a `| tee` or log shipper that died, maybe after it stopped reading) never exited, a second
 * SIGTERM included. A failed asynchronous write makes pino drop the destination's writes, flushSync's too; a reader
 * that took nothing for the whole wait has them dropped the same way.
 */
function written(destination: Flushable | null): Promise<void> {
  const flush = destination?.flush?.bind(destination)
  if (destination === null || flush === undefined) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      if (destination.flushSync !== undefined) destination.flushSync = () => undefined
      resolve()
    }, LOG_WRITE_WAIT_MS)
    flush(() => {
      clearTimeout(timer)
      resolve()
    })
  })
}

/** The logger's lines written or dropped (see written): the last step of a stop. */
export function logWritten(log: pino.Logger): Promise<void> {
  return written((log as unknown as Record<symbol, Flushable>)[pino.symbols.streamSym] ?? null)
}

/** What gateway loggers wrote to stdout in this process, written or dropped (see written): awaited by exits that are not a stop. */
export function stdoutWritten(): Promise<void> {
  return written(stdout)
}

/**
 * Runs the start of what takes a section of the config as its options (a plugin's registration, the primary's counter
 * host). What it refuses (a spool directory it cannot use, a quota state file it cannot read or write) is named as in
 * the file: `/usage/spoolDir`, not the plugin's `/spoolDir`.
 */
export async function asConfigSection(
  start: () => PromiseLike<unknown>,
  pathInConfig: (path: string) => string,
  configFile: string | undefined,
): Promise<void> {
  try {
    await start()
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    const problems = err.problems.map((problem) => ({ path: pathInConfig(problem.path), message: problem.message }))
    throw new ConfigError(configFile === undefined ? 'config' : `config ${configFile}`, problems, { cause: err })
  }
}

/** Builds the reference gateway from a validated config: the plugins wired together, not started. */
export async function buildGateway(config: Config, options: GatewayOptions = {}): Promise<FastifyInstance> {
  const settings = config.server
  const worker = options.worker
  if (worker === undefined && workerCount(settings.workers) > 1) {
    throw new ConfigError('gateway options', [
      {
        path: '/server/workers',
        message: 'buildGateway and startGateway run one process; the llmproxy CLI runs workers (or set workers: 1)',
      },
    ])
  }
  const logger = gatewayLogger(settings.logLevel, options.logDestination, worker === undefined ? {} : { worker: worker.id })
  let closing = false
  // Requests in flight (health probes included), so that a shutdown can wait for them while still listening.
  let inFlight = 0
  let drained: (() => void) | null = null
  const requestDone = (): void => {
    inFlight--
    if (inFlight === 0 && drained !== null) drained()
  }
  const fastifyOptions: FastifyHttpOptions<Server> = {
    // Request loggers become pino children only when they log (most requests log once, after the response).
    loggerInstance: withLazyChildren(logger),
    ...SERVER_BASICS,
    // The gateway logs one line per request itself (request-log.ts), not Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    // Requests that arrive on kept-alive connections while shutting down get our 503 (the client's API's shape), below.
    return503OnClosing: false,
    trustProxy: settings.trustProxy,
    bodyLimit: config.bodyLimit,
    // Slow clients are bounded by the Node server (headers and whole request within limits, idle sockets closed).
    serverFactory: (handler: (req: IncomingMessage, res: ServerResponse) => void) =>
      createServer(
        {
          headersTimeout: settings.headersTimeoutMs,
          requestTimeout: settings.requestTimeoutMs,
          keepAliveTimeout: settings.keepAliveTimeoutMs,
          connectionsCheckingInterval: Math.min(1000, settings.headersTimeoutMs),
        },
        // The shutdown check sits here rather than in an onRequest hook: a Fastify hook on every request cost
        // ~5% of the gateway's CPU per request (benchmark, paired rounds).
        (req, res) => {
          if (closing && req.url !== '/healthz' && req.url !== '/readyz') {
            refuseWhileClosing(req, res, logger)
            return
          }
          inFlight++
          res.on('close', requestDone)
          handler(req, res)
        },
      ),
  }
  const app = Fastify(fastifyOptions) as unknown as FastifyInstance

  await app.register(llmCore)
  let idle: Promise<void> | null = null
  app.decorate('llmGateway', {
    get closing() {
      return closing
    },
    drain() {
      closing = true
      idle ??= inFlight === 0 ? Promise.resolve() : new Promise<void>((resolve) => (drained = resolve))
      return idle
    },
    logWritten: () => logWritten(logger),
  } satisfies GatewayLifecycle)
  app.addHook('preClose', (done) => {
    closing = true
    done()
  })
  if (logger.isLevelEnabled('info')) requestLogging(app)
  // A single process delivers the spools of the workers of an earlier run with server.workers > 1 (the primary does
  // with workers), in the background once every plugin is registered; counted in its usage stats and metrics.
  let former: FormerSpools | null = null
  if (worker === undefined) {
    app.addHook('onReady', async () => {
      former = deliverFormerSpools(config, 1, app.log)
    })
    app.addHook('onClose', async () => former?.close())
  }
  const metrics = config.metrics
  if (metrics !== false) {
    if (worker !== undefined) scrapeWholeGateway(app, metrics.path, worker)
    else scrapeWithFormerSpools(app, metrics.path, () => former)
    await asConfigSection(
      () => app.register(llmMetrics, metrics),
      (path) => `/metrics${path}`,
      options.configFile,
    )
  }
  const authOptions = config.auth
  if (authOptions !== undefined) {
    await asConfigSection(
      () => app.register(auth, authOptions),
      (path) => `/auth${path}`,
      options.configFile,
    )
  }
  if (config.rateLimit !== undefined) {
    const { quotaStateFile, ...limits } = config.rateLimit
    await asConfigSection(
      () =>
        app.register(rateLimit, {
          ...limits,
          // A worker's memory-store counters are the primary's (useCountersOfPrimary), and so is the quota state file.
          ...(quotaStateFile === undefined || worker !== undefined ? {} : { quotaStateFile }),
          ...(config.redis === undefined ? {} : { redis: config.redis }),
        }),
      // The plugin's `redis` option is the config's top-level `redis` section.
      (path) => (path.startsWith('/redis') ? path : `/rateLimit${path}`),
      options.configFile,
    )
  }
  if (config.usage !== undefined) {
    const spoolDir = config.usage.spoolDir
    const usageOptions =
      spoolDir === undefined || worker === undefined ? config.usage : { ...config.usage, spoolDir: workerSpoolDir(spoolDir, worker.id) }
    await asConfigSection(
      () => app.register(usage, usageOptions),
      (path) => `/usage${path}`,
      options.configFile,
    )
  }
  await app.register(upstreams, {
    upstreams: config.upstreams,
    healthChecks: config.healthChecks,
    passive: config.passiveHealth,
    queue: config.queue,
  })
  await app.register(router, {
    models: config.models,
    retry: config.retry,
    timeouts: config.timeouts,
    bodyLimit: config.bodyLimit,
  })

  installReload(app, config, {
    file: options.configFile ?? null,
    adjustConfig: options.adjustConfig,
    reloadVia: worker?.reload,
    historyVia: worker?.reloadHistory,
    // A worker's reloads are the primary's, and counted there.
    counted:
      worker === undefined && config.metrics !== false ? configReloadsCounter(config.metrics.prefix, [app.llmMetrics.registry]) : undefined,
  })
  if (config.admin !== undefined) {
    await setupAdmin(app, config.admin, { server: SERVER_BASICS, scope: worker?.scope ?? singleProcessScope(app, () => former) })
  }

  app.get('/healthz', { config: { auth: false, rateLimit: false } }, (_request, reply) => reply.send({ status: 'ok' }))
  app.get('/readyz', { config: { auth: false, rateLimit: false } }, (_request, reply) => {
    const available = app.upstreams.snapshot().some((u) => u.state === 'healthy' || u.state === 'half-open')
    if (closing || !available) return reply.code(503).send({ status: closing ? 'shutting down' : 'no healthy upstream' })
    return reply.send({ status: 'ready' })
  })
  app.setNotFoundHandler((request, reply) => sendError(reply, errors.notFound(request.method, request.url.split('?')[0] ?? '')))
  app.setErrorHandler((err, _request, reply) => {
    const error = toLlmProxyError(err, config.bodyLimit)
    if (error.statusCode >= 500) reply.log.error({ err }, 'request failed')
    return sendError(reply, error)
  })
  return app
}
