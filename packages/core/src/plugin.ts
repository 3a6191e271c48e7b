import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { LlmContext } from './context.js'
import { LlmHookRegistry } from './hooks.js'

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

const corePlugin: FastifyPluginAsync = async (fastify) => {
  // Already here (another plugin registered it, or an outer context did): one registry and context per app.
  if (fastify.hasDecorator('llm')) return
  fastify.decorate('llm', new LlmHookRegistry(fastify.log))
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
