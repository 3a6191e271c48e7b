import { ensureCore } from '@llmproxy/core'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { UpstreamsOptions } from './options.js'
import { UpstreamRegistry } from './registry.js'
import type { StrategyFactory } from './strategies.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Upstreams, pools and health (@llmproxy/upstreams). */
    upstreams: UpstreamRegistry
  }
}

/** Options that are not data (functions), so not in the schema. */
export interface UpstreamsCallbackOptions {
  /** Custom balancing strategies by name (same as `fastify.upstreams.addStrategy(name, factory)`). */
  strategies?: Record<string, StrategyFactory>
}

export type UpstreamsPluginOptions = UpstreamsOptions & UpstreamsCallbackOptions

const plugin: FastifyPluginAsync<UpstreamsPluginOptions> = async (fastify, options) => {
  await ensureCore(fastify)
  const { strategies, ...data } = options
  const registry = new UpstreamRegistry(data, fastify.log)
  if (strategies !== undefined) {
    for (const [name, factory] of Object.entries(strategies)) registry.addStrategy(name, factory)
  }
  fastify.decorate('upstreams', registry)
  fastify.addHook('onReady', async () => registry.start())
  fastify.addHook('onClose', async () => registry.close())
}

/** Upstream pools, balancing strategies, active and passive health: `fastify.upstreams`. */
export const upstreams = fp(plugin, { name: '@llmproxy/upstreams', fastify: '5.x' })
