import replyFrom from '@fastify/reply-from'
import { ByteNeedle, ConfigError, ensureCore, errors, sendError, toLlmProxyError, validateOptions } from '@llmproxy/core'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Dispatcher } from 'undici'
import { acceptJsonBodies } from './body.js'
import { UpstreamDispatcher } from './dispatcher.js'
import { ModelTable } from './models.js'
import { type ModelRoute, type Retry, type RetryOn, RouterOptionsSchema, type Timeouts } from './options.js'
import { type Endpoint, kProxyCall, ProxyCall, type ProxySettings } from './proxy.js'

/** Options as given: everything but `models` has defaults (see RouterOptionsSchema). */
export interface RouterOptions {
  models: ModelRoute[]
  timeouts?: Partial<Timeouts>
  retry?: Partial<Retry>
  bodyLimit?: number
  includeUsage?: boolean
}

export interface RouterDecorator {
  /** Hot reload: validates the new model routes against the current upstreams, then swaps them atomically. */
  update(models: ModelRoute[]): void
  /** The model routes in force. */
  models(): readonly ModelRoute[]
}

declare module 'fastify' {
  interface FastifyInstance {
    llmRouter: RouterDecorator
  }
}

const noQuery = (): string => ''
const sameAs = (path: string) => (): string => path
const DONE = [new ByteNeedle('data: [DONE]')]

function openai(path: string, terminators: readonly ByteNeedle[], takesIncludeUsage: boolean): Endpoint {
  return {
    path,
    family: 'openai',
    upstreamPath: sameAs(path),
    modelInBody: true,
    queryString: noQuery,
    terminators,
    endsWithDone: terminators === DONE,
    takesIncludeUsage,
  }
}

/** The OpenAI-compatible endpoints. Only these paths are proxied, each to the same path upstream. */
export const OPENAI_ENDPOINTS: readonly Endpoint[] = [
  openai('/v1/chat/completions', DONE, true),
  openai('/v1/completions', DONE, true),
  openai('/v1/embeddings', [], false),
  openai(
    '/v1/responses',
    [new ByteNeedle('"response.completed"'), new ByteNeedle('"response.incomplete"'), new ByteNeedle('"response.failed"')],
    false,
  ),
]

/** Anthropic Messages, passed through unchanged to Anthropic upstreams (no format conversion). */
export const ANTHROPIC_ENDPOINT: Endpoint = {
  path: '/v1/messages',
  family: 'anthropic',
  upstreamPath: sameAs('/v1/messages'),
  modelInBody: true,
  queryString: noQuery,
  terminators: [new ByteNeedle('event: message_stop')],
  endsWithDone: false,
  takesIncludeUsage: false,
}

const GEMINI_ACTIONS = new Set(['generateContent', 'streamGenerateContent'])
const ALT = /[?&]alt=([^&]*)/

/** Gemini generateContent / streamGenerateContent, passed through unchanged; the model is in the URL. */
export const GEMINI_ENDPOINT: Endpoint = {
  path: '/v1beta/models/:target',
  family: 'gemini',
  upstreamPath: (upstreamModel, action) => `/v1beta/models/${encodeURIComponent(upstreamModel)}:${action}`,
  modelInBody: false,
  // Only `alt` (sse or json) goes upstream: a client's `key=` must never be forwarded.
  queryString: (_search, url) => {
    const alt = ALT.exec(url)
    return alt === null ? '' : `alt=${alt[1]}`
  },
  terminators: [new ByteNeedle('"finishReason"')],
  endsWithDone: false,
  takesIncludeUsage: false,
}

const routerPlugin: FastifyPluginAsync<RouterOptions> = async (fastify, rawOptions) => {
  await ensureCore(fastify)
  if (!fastify.hasDecorator('upstreams')) {
    throw new Error('@llmproxy/router needs @llmproxy/upstreams: register it (with your upstreams) before the router')
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
  let modelsBody = modelsListing(table)

  fastify.decorate('llmRouter', {
    update(next: ModelRoute[]) {
      const nextTable = checked(next)
      models = next
      table = nextTable
      modelsBody = modelsListing(nextTable)
    },
    models: () => models,
  } satisfies RouterDecorator)

  fastify.decorateRequest(kProxyCall as unknown as string, null)
  const dispatcher = new UpstreamDispatcher(options.timeouts.connectMs)
  fastify.addHook('onClose', () => dispatcher.close())
  const settings: ProxySettings = {
    dispatcher,
    hooks: fastify.llm,
    timeouts: options.timeouts,
    retry: options.retry,
    retryOn: new Set<RetryOn>(options.retry.on),
  }
  const includeUsage = options.includeUsage
  const bodyLimit = options.bodyLimit

  // Routes live in their own context: reply.from and the OpenAI-shaped error handler stay private to them.
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

    /** Everything between a parsed request and the ProxyCall: checks, model resolution, usage options. */
    const proxy = (request: FastifyRequest, reply: FastifyReply, endpoint: Endpoint, model: unknown, action: string) => {
      reply.header('x-request-id', request.id)
      const body = request.body
      if (body === null || typeof body !== 'object' || Array.isArray(body)) {
        return sendError(reply, errors.invalidRequest('The request body must be a JSON object.'))
      }
      const fields = body as Record<string, unknown>
      if (typeof model !== 'string' || model.length === 0) return sendError(reply, errors.missingModel())
      if (fields.stream !== undefined && typeof fields.stream !== 'boolean') {
        return sendError(reply, errors.invalidRequest('"stream" must be a boolean.'))
      }
      const route = table.get(model)
      if (route === undefined) return sendError(reply, errors.modelNotFound(model))
      if (route.family !== endpoint.family) return sendError(reply, errors.wrongApi(model, route.family))
      const ctx = request.llm
      const allowed = ctx.allowedModels
      if (allowed !== null && !allowed.has(model) && !allowed.has(route.name)) {
        fastify.llm.emitReject({ reason: 'model_access', keyId: ctx.keyId, statusCode: 403 }, request)
        return sendError(reply, errors.forbidden(`This API key may not use the model "${model}".`, 'llmproxy_model_not_allowed'))
      }
      ctx.model = model
      ctx.stream = endpoint.modelInBody ? fields.stream === true : action === 'streamGenerateContent'
      let stripUsage = false
      if (ctx.stream && includeUsage && endpoint.takesIncludeUsage) {
        const streamOptions = fields.stream_options
        const given = streamOptions !== null && typeof streamOptions === 'object' ? (streamOptions as Record<string, unknown>) : null
        if (given?.include_usage !== true) {
          fields.stream_options = { ...given, include_usage: true }
          stripUsage = true
        }
      }
      new ProxyCall(request, reply, settings, endpoint, route, fields, action, stripUsage).start()
      return reply
    }

    for (const endpoint of [...OPENAI_ENDPOINTS, ANTHROPIC_ENDPOINT]) {
      routes.post(endpoint.path, { bodyLimit }, (request, reply) =>
        proxy(request, reply, endpoint, (request.body as Record<string, unknown> | null)?.model, ''),
      )
    }
    routes.post<{ Params: { target: string } }>(GEMINI_ENDPOINT.path, { bodyLimit }, (request, reply) => {
      const target = request.params.target
      const colon = target.lastIndexOf(':')
      const action = colon === -1 ? '' : target.slice(colon + 1)
      if (!GEMINI_ACTIONS.has(action)) return sendError(reply, errors.notFound(request.method, request.url.split('?')[0] ?? ''))
      return proxy(request, reply, GEMINI_ENDPOINT, target.slice(0, colon), action)
    })

    routes.get('/v1/models', (request, reply) => {
      reply.header('x-request-id', request.id)
      return reply.type('application/json; charset=utf-8').send(modelsBody)
    })
  })
}

function modelsListing(table: ModelTable): string {
  return JSON.stringify({
    object: 'list',
    data: table.listing.map((m) => ({
      id: m.id,
      object: 'model',
      created: 0,
      owned_by: 'llmproxy',
      ...(m.aliasOf ? { alias_of: m.aliasOf } : {}),
    })),
  })
}

/** OpenAI-compatible routes, model resolution and zero-buffer proxying with the usage tap. */
export const router = fp(routerPlugin, {
  name: '@llmproxy/router',
  fastify: '5.x',
  dependencies: ['@llmproxy/upstreams'],
})
