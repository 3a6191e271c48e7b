import { randomUUID } from 'node:crypto'
import type { LlmContext } from './context.js'
import type { UsageRecord } from './usage-record.js'

let lastMs = -1
let lastIso = ''
let lastSecond = -1
let secondPrefix = ''

/**
 * ISO 8601 text of an epoch-ms time, as Date#toISOString writes it (years 0–9999). Formatted once per
 * millisecond, and the date and time part once per second: most records end in a second already seen.
 */
export function isoTimestamp(now: number): string {
  if (now !== lastMs) {
    lastMs = now
    const second = Math.floor(now / 1000)
    if (second !== lastSecond) {
      lastSecond = second
      secondPrefix = new Date(second * 1000).toISOString().slice(0, 20)
    }
    const ms = now - second * 1000
    lastIso = `${secondPrefix}${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z`
  }
  return lastIso
}

/** The usage record of a finished request (docs/api.md#usage-records). */
export function buildUsageRecord(ctx: LlmContext, status: number): UsageRecord {
  const usage = ctx.usage
  const record: UsageRecord = {
    id: randomUUID(),
    timestamp: isoTimestamp(Date.now()),
    requestId: ctx.requestId,
    keyId: ctx.keyId,
    model: ctx.model ?? '',
    upstreamModel: ctx.upstreamModel,
    upstream: ctx.upstream,
    protocol: ctx.protocol,
    clientApi: ctx.clientApi,
    stream: ctx.stream,
    status,
    promptTokens: usage?.promptTokens ?? 0,
    completionTokens: usage?.completionTokens ?? 0,
    totalTokens: usage?.totalTokens ?? 0,
    estimated: ctx.estimated,
    ttftMs: ctx.ttftMs,
    durationMs: ctx.durationMs,
    attempts: ctx.attempts,
    resumed: ctx.resumed,
    clientAborted: ctx.clientAborted,
  }
  if (usage?.cachedTokens !== undefined) record.cachedTokens = usage.cachedTokens
  if (usage?.reasoningTokens !== undefined) record.reasoningTokens = usage.reasoningTokens
  if (ctx.error !== null) record.error = ctx.error
  if (ctx.metadata !== null) record.metadata = ctx.metadata
  return record
}
