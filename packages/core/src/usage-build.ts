import { randomUUID } from 'node:crypto'
import type { LlmContext } from './context.js'
import type { UsageRecord } from './usage-record.js'

let lastMs = 0
let lastIso = ''

/** ISO 8601 time of now, formatted once per millisecond (many records end in the same one under load). */
function isoNow(): string {
  const now = Date.now()
  if (now !== lastMs) {
    lastMs = now
    lastIso = new Date(now).toISOString()
  }
  return lastIso
}

/** The usage record of a finished request (DESIGN.md §3). */
export function buildUsageRecord(ctx: LlmContext, status: number): UsageRecord {
  const usage = ctx.usage
  const record: UsageRecord = {
    id: randomUUID(),
    timestamp: isoNow(),
    requestId: ctx.requestId,
    keyId: ctx.keyId,
    model: ctx.model ?? '',
    upstreamModel: ctx.upstreamModel,
    upstream: ctx.upstream,
    protocol: ctx.protocol,
    stream: ctx.stream,
    status,
    promptTokens: usage?.promptTokens ?? 0,
    completionTokens: usage?.completionTokens ?? 0,
    totalTokens: usage?.totalTokens ?? 0,
    estimated: ctx.estimated,
    ttftMs: ctx.ttftMs,
    durationMs: ctx.durationMs,
    attempts: ctx.attempts,
    clientAborted: ctx.clientAborted,
  }
  if (usage?.cachedTokens !== undefined) record.cachedTokens = usage.cachedTokens
  if (usage?.reasoningTokens !== undefined) record.reasoningTokens = usage.reasoningTokens
  if (ctx.error !== null) record.error = ctx.error
  if (ctx.metadata !== null) record.metadata = ctx.metadata
  return record
}
