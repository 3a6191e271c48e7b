import replyFrom from '@fastify/reply-from'
import {
  ConfigError,
  echoed,
  ensureCore,
  errors,
  estimateTokensFromBytes,
  type LlmProxyError,
  toLlmProxyError,
  validateOptions,
} from '@llmproxy/core'
import {
  ANTHROPIC_COUNT_TOKENS,
  ANTHROPIC_MESSAGES,
  type ApiFamily,
  clientApiOf,
  type Endpoint,
  GEMINI_ACTIONS,
  GEMINI_COUNT_TOKENS,
  GEMINI_GENERATE,
  GEMINI_V1_GENERATE_PATH,
  OPENAI_ENDPOINTS,
  OPENAI_RESPONSES,
  sendError,
} from '@llmproxy/protocols'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Dispatcher } from 'undici'
import { acceptJsonBodies } from './body.js'
import { ProxyCall } from './call.js'
import { UpstreamDispatcher } from './dispatcher.js'
import { InFlight } from './in-flight.js'
import { ModelCatalogue, modelList } from './listings.js'
import { ModelTable, type ResolvedRoute } from './models.js'
import { type ModelRoute, type RetryOn, type RouterOptions, RouterOptionsSchema } from './options.js'
import { kProxyCall } from './reply-hooks.js'
import { type ProxySettings, servesEndpoint, wrongApiFor } from './shape.js'

export interface RouterDecorator {
  /** Hot reload: validates the new model routes against the current upstreams, then swaps them atomically. */
  update(models: ModelRoute[]): void
  /** The model routes in force. */
  models(): readonly ModelRoute[]
  /**
   * Ends every request in flight with `error` (a shutdown whose grace is over): a stream with an in-band error in
   * its client's API, a request not answered yet with the error; each upstream request is aborted. Returns how many
   * (an answer already ended, still draining to its client, is left to finish).
   */
  abortInFlight(error: LlmProxyError): number
}

declare module 'fastify' {
  interface FastifyInstance {
    llmRouter: RouterDecorator
  }
}

const ALT_SSE = /[?&]alt=sse(&|$)/

const routerPlugin: FastifyPluginAsync<RouterOptions> = async (fastify, rawOptions) => {
  await ensureCore(fastify)
  if (!fastify.hasDecorator('upstreams')) {
    throw errors.setup('@llmproxy/router needs @llmproxy/upstreams: register it (with your upstreams) before the router')
  }
  const options = validateOptions(RouterOptionsSchema, rawOptions, '@llmproxy/router options')
  const upstreams = fastify.upstreams

  const checked = (models: readonly ModelRoute[]): ModelTable => {
    const problems = ModelTable.check(models, (name) => upstreams.get(name)?.protocol)
    if (problems.length > 0) throw new ConfigError('@llmproxy/router models', problems)
    return ModelTable.build(models, upstreams)
  }
  let models: readonly ModelRoute[] = options.models
  let table = checked(models)
  let catalogue = new ModelCatalogue(table)

  fastify.decorate('llmRouter', {
    update(next: ModelRoute[]) {
      const nextTable = checked(next)
      const previous = table
      models = next
      table = nextTable
      catalogue = new ModelCatalogue(nextTable)
      // The new table took its pools first (the same ones for routes whose upstreams and strategy stayed): a pool no
      // route uses now is retired, and the requests that started on it finish there.
      for (const pool of previous.pools) upstreams.release(pool)
    },
    models: () => models,
    abortInFlight(error: LlmProxyError) {
      let ended = 0
      for (const call of settings.calls.list()) if (call.abortWith(error)) ended++
      return ended
    },
  } satisfies RouterDecorator)

  fastify.decorateRequest(kProxyCall as unknown as string, null)
  // A connection (its TLS handshake included) cannot take longer than the wait for the first byte it is for: undici
  // applies an attempt's abort only once its request has a connection, so that wait would not bound a stalled handshake.
  const timeouts = options.timeouts
  const dispatcher = new UpstreamDispatcher(Math.min(timeouts.connectMs, timeouts.firstTokenMs, timeouts.responseMs))
  fastify.addHook('onClose', () => dispatcher.close())
  const settings: ProxySettings = {
    dispatcher,
    hooks: fastify.llm,
    timeouts: options.timeouts,
    retry: options.retry,
    retryOn: new Set<RetryOn>(options.retry.on),
    defaultMaxTokens: options.defaultMaxTokens,
    calls: new InFlight(),
    route: (model) => table.get(model),
  }
  const includeUsage = options.includeUsage
  const bodyLimit = options.bodyLimit

  // Routes live in their own context: reply.from and the client-shaped error handler stay private to them.
  await fastify.register(async (routes) => {
    await routes.register(replyFrom, {
      undici: dispatcher as unknown as Dispatcher,
      disableRequestLogging: true,
    })
    // Only JSON bodies: anything else is a 415, not a string the handler would have to reject.
    acceptJsonBodies(routes, bodyLimit)
    routes.setErrorHandler((err, _request, reply) => {
      const error = toLlmProxyError(err, bodyLimit)
      if (error.statusCode >= 500) reply.log.error({ err }, 'request failed')
      return sendError(reply, error)
    })

    /** The checks every routed request passes: a JSON object with a known model this key may use. */
    const resolve = (request: FastifyRequest, reply: FastifyReply, model: unknown): ResolvedRoute | null => {
      reply.header('x-request-id', request.id)
      const body = request.body
      if (body === null || typeof body !== 'object' || Array.isArray(body)) {
        sendError(reply, errors.invalidRequest('The request body must be a JSON object.'))
        return null
      }
      if (typeof model !== 'string' || model.length === 0) {
        sendError(reply, errors.missingModel())
        return null
      }
      if ((body as Record<string, unknown>).stream !== undefined && typeof (body as Record<string, unknown>).stream !== 'boolean') {
        sendError(reply, errors.invalidRequest('"stream" must be a boolean.'))
        return null
      }
      const ctx = request.llm
      const match = table.find(model)
      const allowed = ctx.allowedModels
      if (match === undefined || (allowed !== null && !allowed.has(model) && !allowed.has(match.route.name))) {
        // The request's log line names the model refused (what an operator looks for), cut as error messages cut it.
        ctx.model = echoed(model)
        if (match === undefined) sendError(reply, errors.modelNotFound(model))
        else {
          fastify.llm.emitReject({ reason: 'model_access', keyId: ctx.keyId, statusCode: 403 }, request)
          sendError(reply, errors.modelNotAllowed(model))
        }
        return null
      }
      ctx.model = model
      ctx.configuredModel = match.configuredName
      return match.route
    }

    /** Everything between a parsed request and the ProxyCall: checks, model resolution, usage options. */
    const proxy = (request: FastifyRequest, reply: FastifyReply, endpoint: Endpoint, model: unknown, action: string) => {
      const route = resolve(request, reply, model)
      if (route === null) return reply
      if (!servesEndpoint(route, endpoint)) {
        return sendError(reply, wrongApiFor(model as string, route, endpoint))
      }
      const fields = request.body as Record<string, unknown>
      // A background response is generated after its answer and fetched by id later: that generation would never be
      // metered, and the routes to poll, cancel or delete it are not served.
      if (endpoint === OPENAI_RESPONSES && fields.background === true) {
        return sendError(
          reply,
          errors.invalidRequest(
            'Background responses are not served by this gateway: send the request without "background" (stream it to get the answer as it is generated).',
            {
              param: 'background',
            },
          ),
        )
      }
      const ctx = request.llm
      ctx.stream = endpoint.modelInBody ? fields.stream === true : action === 'streamGenerateContent'
      let stripUsage = false
      let clientAskedUsage = false
      if (ctx.stream && endpoint.takesIncludeUsage) {
        const streamOptions = fields.stream_options
        const given = streamOptions !== null && typeof streamOptions === 'object' ? (streamOptions as Record<string, unknown>) : null
        clientAskedUsage = given?.include_usage === true
        if (!clientAskedUsage && includeUsage) {
          fields.stream_options = { ...given, include_usage: true }
          stripUsage = true
        }
      }
      const geminiSse = endpoint.family === 'gemini' && ALT_SSE.test(request.url)
      const thinking = endpoint.family === 'anthropic' ? (fields.thinking as { type?: unknown } | null | undefined) : undefined
      const reasoning =
        endpoint.family !== 'anthropic' || (typeof thinking === 'object' && thinking !== null && thinking.type !== 'disabled')
      new ProxyCall(request, reply, settings, route, fields, {
        endpoint,
        action,
        stripUsage,
        includeUsage: clientAskedUsage,
        geminiSse,
        reasoning,
      }).start()
      return reply
    }

    for (const endpoint of [...OPENAI_ENDPOINTS, ANTHROPIC_MESSAGES]) {
      routes.post(endpoint.path, { bodyLimit }, (request, reply) =>
        proxy(request, reply, endpoint, (request.body as Record<string, unknown> | null)?.model, ''),
      )
    }
    const gemini = (request: FastifyRequest<{ Params: { target: string } }>, reply: FastifyReply) => {
      const target = request.params.target
      const colon = target.lastIndexOf(':')
      const action = colon === -1 ? '' : target.slice(colon + 1)
      if (action === 'countTokens') return geminiCountTokens(request, reply, target.slice(0, colon))
      if (!GEMINI_ACTIONS.has(action)) return sendError(reply, errors.notFound(request.method, request.url.split('?')[0] ?? ''))
      return proxy(request, reply, GEMINI_GENERATE, target.slice(0, colon), action)
    }
    // Gemini's token counting, as Anthropic's below: a Gemini-only model asks its upstream, any other gets an estimate.
    const geminiCountTokens = (request: FastifyRequest, reply: FastifyReply, model: string) => {
      const route = resolve(request, reply, model)
      if (route === null) return reply
      if (servesEndpoint(route, GEMINI_COUNT_TOKENS)) return proxy(request, reply, GEMINI_COUNT_TOKENS, model, 'countTokens')
      const { contents, systemInstruction, tools, generateContentRequest } = request.body as Record<string, unknown>
      reply.header('x-llmproxy-estimated', 'true')
      const counted = JSON.stringify({ contents, systemInstruction, tools, generateContentRequest })
      return reply.send({ totalTokens: estimateTokensFromBytes(Buffer.byteLength(counted)) })
    }
    routes.post<{ Params: { target: string } }>(GEMINI_GENERATE.path, { bodyLimit }, gemini)
    // Gemini's stable API version (`apiVersion: 'v1'` in Google's SDKs): the same generation, sent upstream as v1beta.
    routes.post<{ Params: { target: string } }>(GEMINI_V1_GENERATE_PATH, { bodyLimit }, gemini)

    // Anthropic's token counting: an Anthropic-only model asks its upstream; any other gets an estimate, marked so.
    routes.post(ANTHROPIC_COUNT_TOKENS.path, { bodyLimit }, (request, reply) => {
      const model = (request.body as Record<string, unknown> | null)?.model
      const route = resolve(request, reply, model)
      if (route === null) return reply
      if (servesEndpoint(route, ANTHROPIC_COUNT_TOKENS)) return proxy(request, reply, ANTHROPIC_COUNT_TOKENS, model, '')
      const { system, messages, tools } = request.body as Record<string, unknown>
      reply.header('x-llmproxy-estimated', 'true')
      return reply.send({ input_tokens: estimateTokensFromBytes(Buffer.byteLength(JSON.stringify({ system, messages, tools }))) })
    })

    /**
     * The model list (a page of it, modelList), or one model of it (the SDKs' models.retrieve / models.get), in the
     * shape of the client's API (clientApiOf: Anthropic's SDKs send anthropic-version, Google's x-goog-api-key); a
     * model not in it is the client's 404.
     */
    const sendModels = (request: FastifyRequest, reply: FastifyReply, answer: (api: ApiFamily) => string | LlmProxyError) => {
      const body = answer(clientApiOf(request.url, request.headers))
      if (typeof body !== 'string') return sendError(reply, body)
      reply.header('x-request-id', request.id)
      return reply.type('application/json; charset=utf-8').send(body)
    }
    /** The models the request's key may use (every one for a key without restrictions, or without auth). */
    const visible = (request: FastifyRequest) => catalogue.visibleTo(request.llm.allowedModels)
    const sendList = (request: FastifyRequest, reply: FastifyReply) =>
      sendModels(request, reply, (api) => modelList(visible(request), api, request.query as Record<string, unknown>))
    const sendModel = (request: FastifyRequest, reply: FastifyReply, model: string) =>
      sendModels(request, reply, (api) => visible(request).byId.get(model)?.[api] ?? errors.modelNotFound(model))
    routes.get('/v1/models', sendList)
    routes.get('/v1beta/models', sendList)
    // A wildcard: vLLM-style ids hold a slash (`meta-llama/Llama-3.1-8B`), which not every client encodes.
    routes.get<{ Params: { '*': string } }>('/v1/models/*', (request, reply) => sendModel(request, reply, request.params['*']))
    routes.get<{ Params: { target: string } }>(GEMINI_GENERATE.path, (request, reply) => sendModel(request, reply, request.params.target))
  })
}

/** OpenAI-compatible routes, model resolution and zero-buffer proxying with the usage tap. */
export const router = fp(routerPlugin, {
  name: '@llmproxy/router',
  fastify: '5.x',
  dependencies: ['@llmproxy/upstreams'],
})
