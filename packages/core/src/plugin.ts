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
 * One hook registry per app (its HTTP server, which every context shares): registered in a child context by one
 * plugin and at the root by another, both emit to and listen on the same registry.
 */
const registries = new WeakMap<object, LlmHookRegistry>()

const corePlugin: FastifyPluginAsync = async (fastify, options) => {
  validateOptions(NoOptionsSchema, options, `${CORE_PLUGIN_NAME} options`)
  // Already here (another plugin registered it, or an outer context did): one registry and context per app.
  if (fastify.hasDecorator('llm')) return
  let registry = registries.get(fastify.server)
  if (registry === undefined) {
    registry = new LlmHookRegistry(fastify.log)
    registries.set(fastify.server, registry)
  }
  fastify.decorate('llm', registry)
  fastify.decorateRequest('llm', null as unknown as LlmContext)
  fastify.addHook('onRequest', (request, _reply, done) => {
    request.llm = new LlmContext(request.id, performance.now())
    done()
  })
}

/** Shared request context and hook registry. Registered automatically by the other plugins when missing. */
export const llmCore = fp(corePlugin, { name: CORE_PLUGIN_NAME, fastify: '5.x' })

/** Registers @llmproxy/core unless the app already has it, so each plugin works on its own. */
export async function ensureCore(fastify: FastifyInstance): Promise<void> {
  if (!fastify.hasPlugin(CORE_PLUGIN_NAME)) await fastify.register(llmCore)
}
