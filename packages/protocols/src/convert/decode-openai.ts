import { type Answer, type AnswerBlock, newToolCallId } from './answer.js'
import { type Json, objectAt, stringAt } from './fields.js'
import { finishFromOpenAi, finishWithTools } from './finish.js'
import { parseEventData, SseDecoder } from './sse.js'
import { type FinishReason, MalformedStreamError, type StreamEvent } from './types.js'
import { fromOpenAiUsage } from './usage.js'

const FORMAT = 'OpenAI'

/** A streamed tool call: arguments wait here only until its name is known. */
interface ToolSlot {
  id: string
  name: string
  /** The neutral index once started; -1 before. */
  index: number
  args: string
}

/**
 * OpenAI Chat Completions chunks (OpenAI, vLLM, TGI's OpenAI API) → events. Only choice 0 is read.
 * Per chunk: its content (reasoning, text, tool calls), then the usage, then the finish. Encoders hold the finish
 * until the next usage report: the one that completes it comes in a later chunk (the include_usage chunk), while a
 * report in the finish chunk itself is a running one (vLLM's continuous usage: every chunk has one, without the
 * cached tokens the usage chunk then brings) and must not release it.
 */
export class OpenAiDecoder extends SseDecoder {
  private started = false
  finished = false
  private done = false
  /** A refusal was streamed: a plain `stop` then means the model refused. */
  private refused = false
  /** Every tool call of the answer, in the order they began. */
  private readonly tools: ToolSlot[] = []
  /** The call each upstream `index` stands for now. */
  private readonly toolsByIndex: ToolSlot[] = []
  private toolCount = 0

  get complete(): boolean {
    return this.finished && this.done
  }

  protected onEvent(_event: string, data: string, out: StreamEvent[]): void {
    if (data === '[DONE]') {
      this.done = true
      return
    }
    const chunk = parseEventData(data, FORMAT)
    const error = chunk.error
    if (error !== undefined && error !== null) {
      out.push(errorEvent(error))
      return
    }
    const usage = objectAt(chunk, 'usage')
    const choice = firstChoice(chunk.choices)
    const finishReason = choice === undefined ? undefined : stringAt(choice, 'finish_reason')
    let usageReported = false
    if (!this.started) {
      this.started = true
      const start: StreamEvent = { type: 'start' }
      const id = stringAt(chunk, 'id')
      if (id !== undefined) start.id = id
      const model = stringAt(chunk, 'model')
      if (model !== undefined) start.model = model
      // Usage known at the start (vLLM's continuous usage stats) goes out with it.
      if (usage !== undefined) {
        start.usage = fromOpenAiUsage(usage)
        usageReported = true
      }
      out.push(start)
    }
    if (choice !== undefined) {
      const delta = objectAt(choice, 'delta')
      if (delta !== undefined) this.delta(delta, out)
    }
    if (usage !== undefined && !usageReported) out.push({ type: 'usage', usage: fromOpenAiUsage(usage) })
    if (choice !== undefined && finishReason !== undefined) this.finish(finishReason, choice, out)
  }

  private delta(delta: Json, out: StreamEvent[]): void {
    // vLLM and DeepSeek say `reasoning_content`; newer vLLM and OpenRouter say `reasoning`.
    const reasoning = stringAt(delta, 'reasoning_content') ?? stringAt(delta, 'reasoning')
    if (reasoning !== undefined) out.push({ type: 'reasoning', text: reasoning })
    const content = stringAt(delta, 'content')
    if (content !== undefined) out.push({ type: 'text', text: content })
    const refusal = stringAt(delta, 'refusal')
    if (refusal !== undefined) {
      this.refused = true
      out.push({ type: 'text', text: refusal })
    }
    const calls = delta.tool_calls
    if (Array.isArray(calls)) for (const call of calls) this.toolCall(call, out)
  }

  private toolCall(call: unknown, out: StreamEvent[]): void {
    if (call === null || typeof call !== 'object') return
    const fields = call as Json
    const id = stringAt(fields, 'id')
    const fn = objectAt(fields, 'function')
    const name = fn === undefined ? undefined : stringAt(fn, 'name')
    const args = fn === undefined ? undefined : stringAt(fn, 'arguments')
    const slot = this.toolSlot(fields.index, id, name)
    if (slot.index !== -1) {
      if (args !== undefined) out.push({ type: 'tool_args', index: slot.index, json: args })
      return
    }
    if (slot.id === '') slot.id = id ?? ''
    if (name !== undefined) slot.name = name
    if (args !== undefined) slot.args += args
    if (slot.name === '') return
    slot.index = this.toolCount++
    out.push({ type: 'tool_start', index: slot.index, id: slot.id === '' ? newToolCallId() : slot.id, name: slot.name })
    if (slot.args !== '') {
      out.push({ type: 'tool_args', index: slot.index, json: slot.args })
      slot.args = ''
    }
  }

  /**
   * The call a delta belongs to. OpenAI numbers calls by `index`, but some upstreams stream one call per chunk
   * without an index (Gemini's OpenAI-compatible API, some proxies) or with index 0 every time: there a new id, or
   * without an index a name once the call has begun, starts the next call; other fragments continue the latest.
   */
  private toolSlot(index: unknown, id: string | undefined, name: string | undefined): ToolSlot {
    const indexed = typeof index === 'number'
    const current = indexed ? this.toolsByIndex[index] : this.tools.at(-1)
    const next =
      current === undefined ||
      (id !== undefined && current.id !== '' && id !== current.id) ||
      (!indexed && name !== undefined && current.index !== -1)
    if (!next) return current
    const slot: ToolSlot = { id: '', name: '', index: -1, args: '' }
    this.tools.push(slot)
    if (indexed) this.toolsByIndex[index] = slot
    return slot
  }

  private finish(reason: string, choice: Json, out: StreamEvent[]): void {
    const decoded = finishFromOpenAi(reason)
    if (decoded === 'error') {
      out.push({ type: 'error', message: `The upstream ended the generation with finish_reason ${reason}.`, errorType: reason })
      return
    }
    for (let i = 0; i < this.tools.length; i++) {
      if (this.tools[i]?.index === -1) throw new MalformedStreamError(`${FORMAT} stream: tool call ${i} got arguments but never a name`)
    }
    this.finished = true
    const finish = finishOf(decoded, choice, this.refused)
    finish.reason = finishWithTools(finish.reason, this.toolCount > 0)
    out.push({ type: 'finish', ...finish, rawReason: reason })
  }
}

function firstChoice(choices: unknown): Json | undefined {
  if (!Array.isArray(choices)) return undefined
  for (const choice of choices) {
    if (choice !== null && typeof choice === 'object' && ((choice as Json).index ?? 0) === 0) return choice as Json
  }
  return undefined
}

/** vLLM reports the stop string that matched in `stop_reason` (a token id when a stop token matched). */
function finishOf(reason: FinishReason, choice: Json, refused: boolean): { reason: FinishReason; stopSequence?: string } {
  const stopSequence = stringAt(choice, 'stop_reason')
  if (reason === 'stop' && stopSequence !== undefined) return { reason: 'stop_sequence', stopSequence }
  return { reason: reason === 'stop' && refused ? 'content_filter' : reason }
}

function errorEvent(error: unknown): StreamEvent {
  if (error !== null && typeof error === 'object') {
    const fields = error as Json
    const event: StreamEvent = { type: 'error', message: stringAt(fields, 'message') ?? JSON.stringify(error) }
    const errorType = stringAt(fields, 'type') ?? stringAt(fields, 'code')
    if (errorType !== undefined) event.errorType = errorType
    return event
  }
  return { type: 'error', message: String(error) }
}

/** A non-streamed `chat.completion` → the neutral answer (choice 0). */
export function readOpenAiResponse(body: Json): Answer {
  const choice = firstChoice(body.choices)
  if (choice === undefined) throw new MalformedStreamError(`${FORMAT} response has no choice 0`)
  const message = objectAt(choice, 'message') ?? {}
  const blocks: AnswerBlock[] = []
  const reasoning = stringAt(message, 'reasoning_content') ?? stringAt(message, 'reasoning')
  if (reasoning !== undefined) blocks.push({ type: 'reasoning', text: reasoning })
  const content = stringAt(message, 'content')
  if (content !== undefined) blocks.push({ type: 'text', text: content })
  const refusal = stringAt(message, 'refusal')
  if (refusal !== undefined) blocks.push({ type: 'text', text: refusal })
  const calls = message.tool_calls
  if (Array.isArray(calls)) {
    for (const call of calls) {
      if (call === null || typeof call !== 'object') continue
      const fn = objectAt(call as Json, 'function') ?? {}
      const args = fn.arguments
      blocks.push({
        type: 'tool',
        id: stringAt(call as Json, 'id') ?? newToolCallId(),
        name: stringAt(fn, 'name') ?? '',
        // Some servers give the arguments as an object rather than its JSON text.
        args: typeof args === 'string' ? args : args === undefined ? '' : JSON.stringify(args),
      })
    }
  }
  const raw = stringAt(choice, 'finish_reason') ?? 'stop'
  const decoded = finishFromOpenAi(raw)
  if (decoded === 'error') throw new MalformedStreamError(`The upstream ended the generation with finish_reason ${raw}.`)
  const { reason, stopSequence } = finishOf(decoded, choice, refusal !== undefined)
  const usage = objectAt(body, 'usage')
  const answer: Answer = {
    blocks,
    finish: finishWithTools(
      reason,
      blocks.some((block) => block.type === 'tool'),
    ),
    usage: usage === undefined ? { inputTokens: 0, outputTokens: 0 } : fromOpenAiUsage(usage),
  }
  if (stopSequence !== undefined) answer.stopSequence = stopSequence
  return answer
}
