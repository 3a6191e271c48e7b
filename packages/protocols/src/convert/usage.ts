import type { Usage } from '@llmproxy/core'
import { count, type Json, objectAt } from './fields.js'
import type { NeutralUsage } from './types.js'

/**
 * The usage record's token fields → neutral: what an upstream reported, as `UsageExtractor` reads it from any format,
 * for an encoder to add up. The record's `promptTokens` include cache reads (`cachedTokens`) and writes, which have
 * no field of their own there: they come back as input.
 */
export function fromRecordUsage(usage: Usage): NeutralUsage {
  const neutral: NeutralUsage = {
    inputTokens: Math.max(0, usage.promptTokens - (usage.cachedTokens ?? 0)),
    outputTokens: usage.completionTokens,
  }
  if (usage.cachedTokens !== undefined) neutral.cacheReadTokens = usage.cachedTokens
  if (usage.reasoningTokens !== undefined) neutral.reasoningTokens = usage.reasoningTokens
  return neutral
}

/**
 * OpenAI `usage` → neutral. `prompt_tokens` includes cached tokens (`prompt_tokens_details.cached_tokens`)
 * and, where an OpenAI-compatible server reports them (OpenRouter), cache writes (`cache_write_tokens`).
 */
export function fromOpenAiUsage(usage: Json): NeutralUsage {
  const details = objectAt(usage, 'prompt_tokens_details')
  const cacheRead = details === undefined ? undefined : count(details.cached_tokens)
  const cacheWrite = details === undefined ? undefined : count(details.cache_write_tokens)
  const reasoning = count(objectAt(usage, 'completion_tokens_details')?.reasoning_tokens)
  const neutral: NeutralUsage = {
    inputTokens: Math.max(0, (count(usage.prompt_tokens) ?? 0) - (cacheRead ?? 0) - (cacheWrite ?? 0)),
    outputTokens: count(usage.completion_tokens) ?? 0,
  }
  if (cacheRead !== undefined) neutral.cacheReadTokens = cacheRead
  if (cacheWrite !== undefined) neutral.cacheWriteTokens = cacheWrite
  if (reasoning !== undefined) neutral.reasoningTokens = reasoning
  return neutral
}

/** Anthropic `usage` → neutral, only the fields it carries (a `message_delta` may carry output tokens alone). */
export function fromAnthropicUsage(usage: Json): Partial<NeutralUsage> {
  const neutral: Partial<NeutralUsage> = {}
  const input = count(usage.input_tokens)
  if (input !== undefined) neutral.inputTokens = input
  const output = count(usage.output_tokens)
  if (output !== undefined) neutral.outputTokens = output
  const cacheRead = count(usage.cache_read_input_tokens)
  if (cacheRead !== undefined) neutral.cacheReadTokens = cacheRead
  const cacheWrite = count(usage.cache_creation_input_tokens)
  if (cacheWrite !== undefined) neutral.cacheWriteTokens = cacheWrite
  const thinking = count(objectAt(usage, 'output_tokens_details')?.thinking_tokens)
  if (thinking !== undefined) neutral.reasoningTokens = thinking
  return neutral
}

/**
 * Gemini `usageMetadata` → neutral. `promptTokenCount` includes `cachedContentTokenCount`; tool-use prompt
 * tokens are input too; output is candidates + thoughts.
 */
export function fromGeminiUsage(usage: Json): NeutralUsage {
  const cached = count(usage.cachedContentTokenCount)
  const thoughts = count(usage.thoughtsTokenCount)
  const prompt = (count(usage.promptTokenCount) ?? 0) + (count(usage.toolUsePromptTokenCount) ?? 0)
  const neutral: NeutralUsage = {
    inputTokens: Math.max(0, prompt - (cached ?? 0)),
    outputTokens: (count(usage.candidatesTokenCount) ?? 0) + (thoughts ?? 0),
  }
  if (cached !== undefined) neutral.cacheReadTokens = cached
  if (thoughts !== undefined) neutral.reasoningTokens = thoughts
  return neutral
}

/** Neutral → OpenAI `usage` (prompt tokens include cache reads and writes). */
export function toOpenAiUsage(usage: NeutralUsage): Json {
  const prompt = usage.inputTokens + (usage.cacheReadTokens ?? 0) + (usage.cacheWriteTokens ?? 0)
  const details: Json = { cached_tokens: usage.cacheReadTokens ?? 0 }
  if (usage.cacheWriteTokens) details.cache_write_tokens = usage.cacheWriteTokens
  const out: Json = {
    prompt_tokens: prompt,
    completion_tokens: usage.outputTokens,
    total_tokens: prompt + usage.outputTokens,
    prompt_tokens_details: details,
  }
  if (usage.reasoningTokens !== undefined) out.completion_tokens_details = { reasoning_tokens: usage.reasoningTokens }
  return out
}

/** Neutral → Anthropic `usage` (input excludes cache reads and writes); every count present, 0 when unknown. */
export function toAnthropicUsage(usage: NeutralUsage): Json {
  const out: Json = {
    input_tokens: usage.inputTokens,
    cache_creation_input_tokens: usage.cacheWriteTokens ?? 0,
    cache_read_input_tokens: usage.cacheReadTokens ?? 0,
    output_tokens: usage.outputTokens,
  }
  if (usage.reasoningTokens !== undefined) out.output_tokens_details = { thinking_tokens: usage.reasoningTokens }
  return out
}

/** Neutral → Gemini `usageMetadata` (prompt includes cached content; candidates exclude thoughts). */
export function toGeminiUsage(usage: NeutralUsage): Json {
  const prompt = usage.inputTokens + (usage.cacheReadTokens ?? 0) + (usage.cacheWriteTokens ?? 0)
  const thoughts = usage.reasoningTokens ?? 0
  const out: Json = {
    promptTokenCount: prompt,
    candidatesTokenCount: Math.max(0, usage.outputTokens - thoughts),
    totalTokenCount: prompt + usage.outputTokens,
  }
  if (usage.cacheReadTokens) out.cachedContentTokenCount = usage.cacheReadTokens
  if (thoughts > 0) out.thoughtsTokenCount = thoughts
  return out
}

/**
 * The usage an encoder reports. Reports within one upstream attempt are cumulative (a field present
 * overrides the earlier value); a continued stream adds each finished attempt's last report, so the
 * client sees what every attempt consumed.
 */
export class UsageTally {
  private readonly earlier: NeutralUsage = { inputTokens: 0, outputTokens: 0 }
  private current: Partial<NeutralUsage> = {}

  constructor(earlier?: Partial<NeutralUsage>) {
    if (earlier !== undefined) addInto(this.earlier, earlier)
  }

  report(usage: Partial<NeutralUsage>): void {
    const current = this.current
    if (usage.inputTokens !== undefined) current.inputTokens = usage.inputTokens
    if (usage.outputTokens !== undefined) current.outputTokens = usage.outputTokens
    if (usage.cacheReadTokens !== undefined) current.cacheReadTokens = usage.cacheReadTokens
    if (usage.cacheWriteTokens !== undefined) current.cacheWriteTokens = usage.cacheWriteTokens
    if (usage.reasoningTokens !== undefined) current.reasoningTokens = usage.reasoningTokens
  }

  /** A new upstream attempt starts: the current attempt's report is final. */
  nextAttempt(): void {
    addInto(this.earlier, this.current)
    this.current = {}
  }

  total(): NeutralUsage {
    const total: NeutralUsage = { ...this.earlier }
    addInto(total, this.current)
    return total
  }
}

function addInto(into: NeutralUsage, usage: Partial<NeutralUsage>): void {
  into.inputTokens += usage.inputTokens ?? 0
  into.outputTokens += usage.outputTokens ?? 0
  if (usage.cacheReadTokens !== undefined) into.cacheReadTokens = (into.cacheReadTokens ?? 0) + usage.cacheReadTokens
  if (usage.cacheWriteTokens !== undefined) into.cacheWriteTokens = (into.cacheWriteTokens ?? 0) + usage.cacheWriteTokens
  if (usage.reasoningTokens !== undefined) into.reasoningTokens = (into.reasoningTokens ?? 0) + usage.reasoningTokens
}
