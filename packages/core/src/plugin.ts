import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { LlmContext } from './context.js'
import { LlmHookRegistry } from './hooks.js'
import { validateOptions } from './options.js'
import { Type } from './typebox.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** LLM hook registry: `fastify.llm.addHook('onUsage', fn)`. */
    llm: LlmHookRegistry
  }
  interface FastifyRequest {
    /** The LLM facts of this request (see LlmContext). */
    llm: LlmContext
  }
}

export const CORE_PLUGIN_NAME = '@llmproxy/core'

const NoOptionsSchema = Type.Object({}, { additionalProperties: false })

/**
 * The registries of the contexts around `context`, innermost first: a Fastify context is an object created from the
 * one around it (`Object.create`), and a registry is an own property of the context that registered core.
 */
function outerRegistries(context: FastifyInstance, own: LlmHookRegistry): LlmHookRegistry[] {
  const found: LlmHookRegistry[] = []
  for (let around = Object.getPrototypeOf(context); around !== null; around = Object.getPrototypeOf(around)) {
    const registry = Object.hasOwn(around, 'llm') ? (around as FastifyInstance).llm : undefined
    if (registry instanceof LlmHookRegistry && registry !== own && !found.includes(registry)) found.push(registry)
  }
  return found
}

/**
 * The registries of each app not linked yet, with the context of each, by the app's HTTP server (one per app, shared
 * by all its contexts).
 */
const unlinked = new WeakMap<object, Map<LlmHookRegistry, FastifyInstance>>()

/**
 * Tells each registry of the app the registries around it (and so inside it), once. Called by the first onReady hook
 * of a registry: Fastify runs a context's onReady hooks before those of the contexts inside it, and a plugin's
 * after core's (it registered core first), so every registry is linked before a plugin reads them when ready.
 */
function linkRegistries(server: object): void {
  const registries = unlinked.get(server)
  if (registries === undefined) return
  unlinked.delete(server)
  for (const [registry, context] of registries) registry.setOuter(outerRegistries(context, registry))
}

const corePlugin: FastifyPluginAsync = async (fastify, options) => {
  validateOptions(NoOptionsSchema, options, `${CORE_PLUGIN_NAME} options`)
  // Already here (another plugin registered it, or an outer context did): that registry, one context per request.
  if (fastify.hasDecorator('llm')) return
  const registry = new LlmHookRegistry(fastify.log)
  // A context around this one may register core after this one did (the app's usage plugin at the root after the
  // gateway in its child context, or the gateway at the root after a metrics plugin in a child context): the
  // registries are linked once every plugin is registered.
  const registries = unlinked.get(fastify.server) ?? new Map<LlmHookRegistry, FastifyInstance>()
  unlinked.set(fastify.server, registries.set(registry, fastify))
  fastify.addHook('onReady', async () => linkRegistries(fastify.server))
  fastify.decorate('llm', registry)
  fastify.decorateRequest('llm', null as unknown as LlmContext)
  fastify.addHook('onRequest', (request, _reply, done) => {
    request.llm = new LlmContext(request.id, performance.now())
    done()
  })
}

/** Shared request context and hook registry. Registered automatically by the other plugins when missing. */
export const llmCore = fp(corePlugin, { name: CORE_PLUGIN_NAME, fastify: '5.x' })

/**
 * Registers @llmproxy/core unless the app already has it, so each plugin works on its own; and tells the registry the
 * plugin's context (`contextsHeard()`).
 */
export async function ensureCore(fastify: FastifyInstance): Promise<void> {
  if (!fastify.hasPlugin(CORE_PLUGIN_NAME)) await fastify.register(llmCore)
  fastify.llm.addPluginContext(fastify)
}
