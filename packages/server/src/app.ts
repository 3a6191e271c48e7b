import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse, STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import { auth } from '@llmproxy/auth'
import { errors, type LlmProxyError, llmCore, toLlmProxyError } from '@llmproxy/core'
import { llmMetrics } from '@llmproxy/metrics'
import { sendError } from '@llmproxy/protocols'
import { rateLimit } from '@llmproxy/rate-limit'
import { router } from '@llmproxy/router'
import { upstreams } from '@llmproxy/upstreams'
import { usage } from '@llmproxy/usage'
import Fastify, { type FastifyHttpOptions, type FastifyInstance, LogController } from 'fastify'
import pino, { type DestinationStream } from 'pino'
import { setupAdmin } from './admin.js'
import type { Config } from './config.js'
import { withLazyChildren } from './lazy-logger.js'
import { logSerializers } from './redact.js'
import { installReload } from './reload.js'
import { requestLogging } from './request-log.js'

/** `fastify.llmGateway`: the reference server's shutdown. */
export interface GatewayLifecycle {
  /** True once the shutdown began: `/readyz` answers 503 and new requests get a 503 `llmproxy_shutting_down`. */
  readonly closing: boolean
  /**
   * Begins the shutdown (idempotent) while the gateway keeps listening, so that load balancers see `/readyz` turn 503
   * and health probes are answered; resolves once no request is in flight. Then `app.close()` stops listening.
   */
  drain(): Promise<void>
}

declare module 'fastify' {
  interface FastifyInstance {
    llmGateway: GatewayLifecycle
  }
}

export interface GatewayOptions {
  /** Where the JSON log lines go (default: stdout). */
  logDestination?: DestinationStream
  /** The config file `config` came from: `POST /admin/reload` and `fastify.llmConfig.reload()` re-read it. */
  configFile?: string
  /** Applied to every config re-read from `configFile` (e.g. to keep a port given on the command line). */
  adjustConfig?: (config: Config) => void
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

const SHUTTING_DOWN = JSON.stringify(errors.shuttingDown().toJSON())

/** A request that arrives while the gateway shuts down: an OpenAI-shaped 503, the connection closed, one log line. */
function refuseWhileClosing(req: IncomingMessage, res: ServerResponse, log: pino.Logger): void {
  const requestId = genRequestId(req)
  res.writeHead(503, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(SHUTTING_DOWN),
    connection: 'close',
    'x-request-id': requestId,
  })
  res.end(SHUTTING_DOWN)
  log.info({ reqId: requestId, method: req.method, url: req.url, status: 503 }, 'request')
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

/** Builds the reference gateway from a validated config: the plugins wired together, not started. */
export async function buildGateway(config: Config, options: GatewayOptions = {}): Promise<FastifyInstance> {
  const settings = config.server
  const logger = pino(
    { level: settings.logLevel, redact: { paths: REDACTED_PATHS, censor: '[redacted]' }, serializers: logSerializers },
    options.logDestination ?? pino.destination(1),
  )
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
    genReqId: genRequestId,
    // The gateway logs one line per request itself (request-log.ts), not Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    clientErrorHandler: answerClientError,
    // Bad percent-encoding, an over-long path parameter: answered from the catalogue too.
    frameworkErrors: (err, _request, reply) => sendError(reply, toLlmProxyError(err)),
    // Requests that arrive on kept-alive connections while shutting down get our 503 (OpenAI shape), below.
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
  } satisfies GatewayLifecycle)
  app.addHook('preClose', (done) => {
    closing = true
    done()
  })
  if (logger.isLevelEnabled('info')) requestLogging(app)
  if (config.metrics !== false) await app.register(llmMetrics, config.metrics)
  if (config.auth !== undefined) await app.register(auth, config.auth)
  if (config.rateLimit !== undefined) {
    await app.register(rateLimit, { ...config.rateLimit, ...(config.redis === undefined ? {} : { redis: config.redis }) })
  }
  if (config.usage !== undefined) await app.register(usage, config.usage)
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

  installReload(app, config, { file: options.configFile ?? null, adjustConfig: options.adjustConfig })
  if (config.admin !== undefined) await setupAdmin(app, config.admin, { genReqId: genRequestId })

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
