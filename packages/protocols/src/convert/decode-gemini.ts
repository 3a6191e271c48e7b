import { type Answer, type AnswerBlock, newToolCallId } from './answer.js'
import { type Json, objectAt, stringAt } from './fields.js'
import { type DecodedFinish, finishFromGemini, geminiFailureMessage } from './finish.js'
import { parseEventData, SseDecoder } from './sse.js'
import { MalformedStreamError, type StreamEvent } from './types.js'
import { fromGeminiUsage } from './usage.js'

const FORMAT = 'Gemini'

/**
 * Gemini `streamGenerateContent?alt=sse` events → events. Only candidate 0 is read. Per chunk: its parts, then
 * the finish, then `usageMetadata` (the last chunk carries both; the usage then completes the finish). Parts
 * other than text, thoughts and function calls (inline data, code execution) have no equivalent and are not
 * passed on; a text part's `thoughtSignature` neither (only function-call signatures are required back).
 */
export class GeminiDecoder extends SseDecoder {
  private started = false
  finished = false
  private toolCount = 0

  get complete(): boolean {
    return this.finished
  }

  protected onEvent(_event: string, data: string, out: StreamEvent[]): void {
    const chunk = parseEventData(data, FORMAT)
    const error = objectAt(chunk, 'error')
    if (error !== undefined) {
      out.push(errorEvent(error))
      return
    }
    const usage = objectAt(chunk, 'usageMetadata')
    const candidate = firstCandidate(chunk.candidates)
    const finishReason = candidate === undefined ? undefined : stringAt(candidate, 'finishReason')
    let usageReported = false
    if (!this.started) {
      this.started = true
      const start: StreamEvent = { type: 'start' }
      const id = stringAt(chunk, 'responseId')
      if (id !== undefined) start.id = id
      const model = stringAt(chunk, 'modelVersion')
      if (model !== undefined) start.model = model
      if (usage !== undefined && finishReason === undefined) {
        start.usage = fromGeminiUsage(usage)
        usageReported = true
      }
      out.push(start)
    }
    if (candidate !== undefined) {
      const parts = objectAt(candidate, 'content')?.parts
      if (Array.isArray(parts)) for (const part of parts) if (part !== null && typeof part === 'object') this.part(part as Json, out)
      if (finishReason !== undefined) this.finish(finishReason, candidate, out)
    } else {
      // A blocked prompt: no candidates, the reason in promptFeedback.
      const blocked = stringAt(objectAt(chunk, 'promptFeedback') ?? {}, 'blockReason')
      if (blocked !== undefined) {
        this.finished = true
        out.push({ type: 'finish', reason: 'content_filter', rawReason: blocked })
      }
    }
    if (usage !== undefined && !usageReported) out.push({ type: 'usage', usage: fromGeminiUsage(usage) })
  }

  private part(part: Json, out: StreamEvent[]): void {
    if (part.thought === true) {
      const text = typeof part.text === 'string' ? part.text : ''
      const signature = stringAt(part, 'thoughtSignature')
      if (signature !== undefined) out.push({ type: 'reasoning', text, signature })
      else if (text !== '') out.push({ type: 'reasoning', text })
      return
    }
    const text = stringAt(part, 'text')
    if (text !== undefined) {
      out.push({ type: 'text', text })
      return
    }
    const call = objectAt(part, 'functionCall')
    if (call === undefined) return
    const index = this.toolCount++
    const start: StreamEvent = {
      type: 'tool_start',
      index,
      id: stringAt(call, 'id') ?? newToolCallId(),
      name: stringAt(call, 'name') ?? '',
    }
    const signature = stringAt(part, 'thoughtSignature')
    if (signature !== undefined) start.signature = signature
    out.push(start)
    // Gemini sends a call's arguments whole: one fragment.
    out.push({ type: 'tool_args', index, json: JSON.stringify(objectAt(call, 'args') ?? {}) })
  }

  private finish(reason: string, candidate: Json, out: StreamEvent[]): void {
    const decoded = finishFromGemini(reason, this.toolCount > 0)
    if (decoded === 'error') {
      out.push({ type: 'error', message: geminiFailureMessage(reason, candidate.finishMessage), errorType: reason })
      return
    }
    this.finished = true
    out.push({ type: 'finish', reason: decoded, rawReason: reason })
  }
}

function firstCandidate(candidates: unknown): Json | undefined {
  if (!Array.isArray(candidates)) return undefined
  for (const candidate of candidates) {
    if (candidate !== null && typeof candidate === 'object' && ((candidate as Json).index ?? 0) === 0) return candidate as Json
  }
  return undefined
}

function errorEvent(error: Json): StreamEvent {
  const event: StreamEvent = { type: 'error', message: stringAt(error, 'message') ?? 'The upstream reported an error.' }
  const status = stringAt(error, 'status')
  if (status !== undefined) event.errorType = status
  return event
}

/** A non-streamed `GenerateContentResponse` → the neutral answer (candidate 0). */
export function readGeminiResponse(body: Json): Answer {
  const candidate = firstCandidate(body.candidates)
  const usage = objectAt(body, 'usageMetadata')
  const neutralUsage = usage === undefined ? { inputTokens: 0, outputTokens: 0 } : fromGeminiUsage(usage)
  if (candidate === undefined) {
    const blocked = stringAt(objectAt(body, 'promptFeedback') ?? {}, 'blockReason')
    if (blocked === undefined) throw new MalformedStreamError(`${FORMAT} response has no candidate`)
    return { blocks: [], finish: 'content_filter', usage: neutralUsage }
  }
  const blocks: AnswerBlock[] = []
  const parts = objectAt(candidate, 'content')?.parts
  let calls = 0
  if (Array.isArray(parts)) {
    for (const item of parts) {
      if (item === null || typeof item !== 'object') continue
      const part = item as Json
      const signature = stringAt(part, 'thoughtSignature')
      if (part.thought === true) {
        const reasoning: AnswerBlock = { type: 'reasoning', text: typeof part.text === 'string' ? part.text : '' }
        if (signature !== undefined) reasoning.signature = signature
        blocks.push(reasoning)
        continue
      }
      if (typeof part.text === 'string') {
        blocks.push({ type: 'text', text: part.text })
        continue
      }
      const call = objectAt(part, 'functionCall')
      if (call === undefined) continue
      calls++
      const tool: AnswerBlock = {
        type: 'tool',
        id: stringAt(call, 'id') ?? newToolCallId(),
        name: stringAt(call, 'name') ?? '',
        args: JSON.stringify(objectAt(call, 'args') ?? {}),
      }
      if (signature !== undefined) tool.signature = signature
      blocks.push(tool)
    }
  }
  const reason = stringAt(candidate, 'finishReason') ?? 'STOP'
  const finish: DecodedFinish = finishFromGemini(reason, calls > 0)
  if (finish === 'error') throw new MalformedStreamError(geminiFailureMessage(reason, candidate.finishMessage))
  return { blocks, finish, usage: neutralUsage }
}
