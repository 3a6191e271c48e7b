import { EventEmitter } from 'node:events'
import { ConfigError, type ConfigProblem, ensureCore, headerProblems, validateOptions } from '@llmproxy/core'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { type UsageOptions, type UsageOptionsInput, UsageOptionsSchema } from './options.js'
import { WebhookSink } from './sink.js'
import type { Counters, UsageApi, UsageEvents, UsageListener, UsageStats } from './types.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Usage records: listeners, webhook sink stats, flush, delivery events. */
    usage: UsageApi
  }
}

const SUBJECT = '@llmproxy/usage options'

const usagePlugin: FastifyPluginAsync<UsageOptionsInput> = async (fastify, rawOptions) => {
  await ensureCore(fastify)
  const options = validateOptions(UsageOptionsSchema, rawOptions, SUBJECT)
  const log = fastify.log.child({ plugin: '@llmproxy/usage' })
  const events = new EventEmitter<UsageEvents>()
  const counters: Counters = {
    delivered: 0,
    deliveryFailures: 0,
    dropped: 0,
    notSpooled: 0,
    lastDeliveryAt: null,
    lastError: null,
  }

  let sink: WebhookSink | null = null
  const { webhook, spoolDir } = options
  if (webhook !== undefined) {
    if (spoolDir === undefined) throw new ConfigError(SUBJECT, [{ path: '/spoolDir', message: 'is required when webhook is set' }])
    const problems = [...webhookProblems(webhook, '/webhook'), ...deliveryProblems(options, '')]
    if (problems.length > 0) throw new ConfigError(SUBJECT, problems)
    try {
      sink = new WebhookSink({ ...options, webhook, spoolDir }, counters, events, log)
    } catch (err) {
      // A directory the process may not create or write (a container's read-only or root-owned path): named.
      const code = (err as NodeJS.ErrnoException).code
      if (err instanceof ConfigError || code === undefined) throw err
      throw new ConfigError(SUBJECT, [{ path: '/spoolDir', message: `cannot be used: ${code} (${(err as Error).message})` }])
    }
    fastify.llm.addHook('onUsage', sink.listener)
    fastify.llm.recordsKeptAtTurnEnd = true
  }

  const api: UsageApi = {
    onUsage(fn: UsageListener): void {
      if (typeof fn !== 'function') throw new TypeError('fastify.usage.onUsage(fn): fn must be a function')
      fastify.llm.addHook('onUsage', fn)
    },
    stats(): UsageStats {
      return {
        queueDepth: sink === null ? 0 : sink.spool.pending + sink.unwritten,
        spoolBytes: sink?.spool.bytes ?? 0,
        ...counters,
      }
    },
    flush(): Promise<void> {
      return sink === null ? Promise.resolve() : sink.flush()
    },
    events,
  }
  fastify.decorate('usage', api)

  if (sink !== null) {
    const active = sink
    fastify.addHook('onReady', async () => active.start())
    fastify.addHook('onClose', async () => active.close(options.shutdownFlushMs))
  }
}

/**
 * What the plugin refuses in its webhook settings beyond their schema (`path`: where the webhook is, for the
 * problems' paths), for a config check to report before a start would fail.
 */
export function webhookProblems(webhook: { url: string; headers?: Record<string, string> } | undefined, path: string): ConfigProblem[] {
  if (webhook === undefined) return []
  const problems = headerProblems(webhook.headers, `${path}/headers`)
  let url: URL | null = null
  try {
    url = new URL(webhook.url)
  } catch {}
  if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    problems.unshift({ path: `${path}/url`, message: 'must be an http or https URL' })
  } else if (url.username !== '' || url.password !== '') {
    // The delivery (undici) sends no credentials written in a URL: every batch would go unauthenticated.
    problems.unshift({ path: `${path}/url`, message: 'must not hold credentials: send them in headers (authorization)' })
  }
  return problems
}

/**
 * What the plugin refuses in the webhook delivery's retry and spool settings beyond their schema (`path`: where the
 * options are), for a config check to report before a start would fail. The defaults count, as written values do.
 */
export function deliveryProblems(options: Pick<UsageOptions, 'retry' | 'spool'>, path: string): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  // backoffDelay caps every wait at maxMs: a larger baseMs would never be waited.
  if (options.retry.maxMs < options.retry.baseMs) {
    problems.push({ path: `${path}/retry/maxMs`, message: `must be >= retry.baseMs (${options.retry.baseMs})` })
  }
  // The spool frees disk a whole segment at a time, never the one being written while it holds undelivered records:
  // with a segment over half the spool, a spool under steady traffic fills though the webhook keeps up (stop-spooling
  // refuses records, drop-oldest drops them).
  const { maxBytes, segmentBytes } = options.spool
  if (segmentBytes * 2 > maxBytes) {
    problems.push({
      path: `${path}/spool/segmentBytes`,
      message: `is ${segmentBytes}, must be at most half of spool.maxBytes (${maxBytes}): disk space is freed a segment at a time`,
    })
  }
  return problems
}

/** Usage records: the public listener API and a durable, batched, signed webhook sink. */
export const usage = fp(usagePlugin, { name: '@llmproxy/usage', fastify: '5.x' })
