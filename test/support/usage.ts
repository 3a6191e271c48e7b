// Usage fixtures shared by the packages' tests (usage, metrics, server): one valid UsageRecord builder and the
// usage sink's stats, so a field added to either contract changes one place.
import { randomUUID } from 'node:crypto'
import type { UsageRecord } from '@llmproxy/core'
import type { UsageStats } from '@llmproxy/usage'

let counter = 0

/** A valid usage record of a streamed OpenAI request; the id and requestId are unique unless given. */
export function usageRecord(overrides: Partial<UsageRecord> = {}): UsageRecord {
  counter++
  return {
    id: randomUUID(),
    timestamp: new Date().toISOString(),
    requestId: `req-${counter}`,
    keyId: 'team-a',
    model: 'qwen-7b',
    upstreamModel: 'Qwen/Qwen2.5-7B-Instruct',
    upstream: 'vllm-a',
    protocol: 'openai',
    clientApi: 'openai',
    stream: true,
    status: 200,
    promptTokens: 10,
    completionTokens: 20,
    totalTokens: 30,
    estimated: false,
    ttftMs: 150,
    durationMs: 1000,
    attempts: 1,
    resumed: false,
    clientAborted: false,
    ...overrides,
  }
}

/** `fastify.usage.stats()` of a sink that has delivered nothing yet, with `overrides`. */
export function usageStats(overrides: Partial<UsageStats> = {}): UsageStats {
  return {
    queueDepth: 0,
    spoolBytes: 0,
    delivered: 0,
    deliveryFailures: 0,
    dropped: 0,
    notSpooled: 0,
    lastDeliveryAt: null,
    lastError: null,
    ...overrides,
  }
}
