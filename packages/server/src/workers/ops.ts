// What the primary and its workers ask each other (name → [argument, result]; JSON over the IPC channel).
import type { UpstreamSnapshot } from '@llmproxy/upstreams'
import type { UsageStats } from '@llmproxy/usage'
import type { AdminUpstream, AdminUsage } from '../admin.js'
import type { Config } from '../config.js'
import type { ReloadHistory, ReloadResult } from '../reload.js'
import type { MetricJson } from './aggregate.js'

export interface UpstreamAction {
  action: 'drain' | 'enable'
  name: string
}

/** What a worker asks the primary: views and changes of the whole gateway. */
export type PrimaryOps = {
  /** The config in force (a new worker asks for it once it listens to the channel: earlier messages would be lost). */
  config: [null, Config]
  upstreams: [null, AdminUpstream[]]
  upstream: [UpstreamAction, AdminUpstream | null]
  usage: [null, AdminUsage]
  metrics: [null, string]
  reload: [null, ReloadResult]
  reloadHistory: [null, ReloadHistory]
}

/** What the primary asks a worker: its own view, or a change to apply. */
export type WorkerOps = {
  snapshot: [null, UpstreamSnapshot[]]
  /** False when the worker has no upstream of that name. */
  upstream: [UpstreamAction, boolean]
  /** Null without a usage sink. */
  usage: [null, UsageStats | null]
  metrics: [null, MetricJson[]]
  /** A config the primary validated: applied like a reload (fastify.llmConfig.apply). */
  apply: [Config, ReloadResult]
  /** Dead workers' rate-limit instance ids: their concurrency slots in Redis are dropped (RateLimits.forgetInstances). */
  forgetInstances: [string[], null]
}

/** The environment variable that makes the `llmproxy` CLI a worker, holding its id (1 to N). */
export const WORKER_ID_ENV = 'LLMPROXY_WORKER_ID'
