import type { Cluster, ClusterOptions, RedisOptions as IoRedisOptions } from 'ioredis'
import type { RedisOptions } from './options.js'
import type { RedisClient } from './redis-store.js'

const CONNECT_TIMEOUT_MS = 2000
/** Reconnection backoff: 100 ms, 200 ms, … at most 1 s, so that a Redis (or a new Sentinel master) is found again fast. */
const reconnectDelay = (attempt: number): number => Math.min(attempt * 100, 1000)

/**
 * An ioredis client for one of the three modes: a single node (`url`), a master found through Sentinel
 * (`sentinels` + `name`), or a Redis Cluster (`cluster`). Never queues a command while disconnected, never resends
 * one after a reconnect, and never waits longer than `commandTimeoutMs` for an answer: a Redis that is down or
 * stalled fails fast, and the plugin counts locally meanwhile. ioredis is loaded only here (it costs a process
 * ~10 MB of RSS).
 */
export async function createRedisClient(options: RedisOptions): Promise<RedisClient> {
  const { Redis, Cluster } = await import('ioredis')
  const connection: IoRedisOptions = {
    connectTimeout: CONNECT_TIMEOUT_MS,
    commandTimeout: options.commandTimeoutMs,
    maxRetriesPerRequest: 1,
    // A command whose connection dropped has an unknown outcome, which the gateway replays itself, once (markers,
    // redis-store.ts). Resent by ioredis on reconnect as well, a settle would count twice, or reach an empty Redis.
    autoResendUnfulfilledCommands: false,
    ...(options.username === undefined ? {} : { username: options.username }),
    ...(options.password === undefined ? {} : { password: options.password }),
  }
  if (options.cluster !== undefined) {
    const clusterOptions: ClusterOptions = {
      keyPrefix: options.keyPrefix,
      enableOfflineQueue: false,
      clusterRetryStrategy: reconnectDelay,
      // A command whose node connection closed is resent by the Cluster client too (after `retryDelayOnFailover`),
      // as a first attempt: a settle the node had run would count twice. 0 turns that resend off (MOVED, ASK,
      // TRYAGAIN and CLUSTERDOWN are refusals, never run, and are still followed).
      retryDelayOnFailover: 0,
      redisOptions: connection,
    }
    return new Cluster(options.cluster, clusterOptions)
  }
  const common: IoRedisOptions = { ...connection, keyPrefix: options.keyPrefix, enableOfflineQueue: false, retryStrategy: reconnectDelay }
  if (options.sentinels !== undefined) {
    return new Redis({
      ...common,
      sentinels: options.sentinels,
      name: options.name,
      ...(options.sentinelPassword === undefined ? {} : { sentinelPassword: options.sentinelPassword }),
      sentinelRetryStrategy: reconnectDelay,
      // A Sentinel that accepts connections but does not answer (a stalled host) would hold the master's lookup, and
      // every reconnection, forever: past commandTimeoutMs the next Sentinel is asked.
      sentinelCommandTimeout: options.commandTimeoutMs,
      // Leaves a demoted master as soon as the Sentinels announce a new one (not only when its connection drops).
      failoverDetector: true,
    })
  }
  return new Redis(options.url ?? '', common)
}

function isCluster(client: RedisClient): client is Cluster {
  return client.isCluster
}

/** One round trip to every node that holds data (each master of a cluster); rejects if any fails. */
export async function ping(client: RedisClient): Promise<void> {
  if (!isCluster(client)) {
    await client.ping()
    return
  }
  const masters = client.nodes('master')
  if (masters.length === 0) throw new Error('no Redis Cluster master is known yet')
  await Promise.all(masters.map((node) => node.ping()))
}

/**
 * A Cluster's slot map, asked again of its nodes (no-op for the other modes). ioredis renews it only on a MOVED or
 * ASK reply or a closed connection, so after a *stalled* master's replica was promoted it would keep sending that
 * master's commands, and `ping`, to the stalled node. Never rejects: the ping that follows says whether Redis answers.
 */
export function refreshSlots(client: RedisClient): Promise<void> {
  if (!isCluster(client)) return Promise.resolve()
  return new Promise((resolve) => client.refreshSlotsCache(() => resolve()))
}
