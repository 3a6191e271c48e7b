import { ensureCore } from '@llmproxy/core'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { UpstreamsPluginOptions } from './options.js'
import { UpstreamRegistry } from './registry.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Upstreams, pools and health (@llmproxy/upstreams). */
    upstreams: UpstreamRegistry
  }
}

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
