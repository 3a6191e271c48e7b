import type { Answer, AnswerBlock } from './answer.js'
import { type Json, objectAt, stringAt } from './fields.js'
import { finishFromAnthropic } from './finish.js'
import { parseEventData, SseDecoder } from './sse.js'
import { MalformedStreamError, type StreamEvent } from './types.js'
import { fromAnthropicUsage } from './usage.js'

const FORMAT = 'Anthropic'

/**
 * Anthropic Messages events → events. Blocks arrive one at a time, so the only state is the neutral index of
 * the tool_use block being streamed. Server-side tool blocks (`server_tool_use`, web search results) and
 * citations are not passed on: another format's client would try to run or could not show them.
 */
export class AnthropicDecoder extends SseDecoder {
  finished = false
  private stopped = false
  /** Neutral index of the open tool_use block; -1 while another kind of block is open. */
  private openTool = -1
  private toolCount = 0

  get complete(): boolean {
    return this.finished && this.stopped
  }

  protected onEvent(_event: string, data: string, out: StreamEvent[]): void {
    const event = parseEventData(data, FORMAT)
    switch (event.type) {
      case 'content_block_delta': {
        const delta = objectAt(event, 'delta')
        if (delta !== undefined) this.delta(delta, out)
        break
      }
      case 'content_block_start': {
        this.openTool = -1
        const block = objectAt(event, 'content_block')
        if (block !== undefined) this.blockStart(block, out)
        break
      }
      case 'content_block_stop':
        this.openTool = -1
        break
      case 'message_start': {
        const message = objectAt(event, 'message') ?? {}
        const start: StreamEvent = { type: 'start' }
        const id = stringAt(message, 'id')
        if (id !== undefined) start.id = id
        const model = stringAt(message, 'model')
        if (model !== undefined) start.model = model
        const usage = objectAt(message, 'usage')
        if (usage !== undefined) start.usage = fromAnthropicUsage(usage)
        out.push(start)
        break
      }
      case 'message_delta': {
        const stop = stringAt(objectAt(event, 'delta') ?? {}, 'stop_reason')
        if (stop !== undefined) {
          this.finished = true
          const finish: StreamEvent = { type: 'finish', reason: finishFromAnthropic(stop, this.toolCount > 0), rawReason: stop }
          const sequence = stringAt(objectAt(event, 'delta') ?? {}, 'stop_sequence')
          if (sequence !== undefined) finish.stopSequence = sequence
          out.push(finish)
        }
        const usage = objectAt(event, 'usage')
        if (usage !== undefined) out.push({ type: 'usage', usage: fromAnthropicUsage(usage) })
        break
      }
      case 'message_stop':
        this.stopped = true
        break
      case 'error': {
        const error = objectAt(event, 'error') ?? {}
        const failed: StreamEvent = { type: 'error', message: stringAt(error, 'message') ?? 'The upstream reported an error.' }
        const errorType = stringAt(error, 'type')
        if (errorType !== undefined) failed.errorType = errorType
        out.push(failed)
        break
      }
      // ping and event types added later carry nothing to convert.
    }
  }

  private blockStart(block: Json, out: StreamEvent[]): void {
    switch (block.type) {
      case 'text': {
        const text = stringAt(block, 'text')
        if (text !== undefined) out.push({ type: 'text', text })
        break
      }
      case 'thinking': {
        const text = typeof block.thinking === 'string' ? block.thinking : ''
        const signature = stringAt(block, 'signature')
        if (signature !== undefined) out.push({ type: 'reasoning', text, signature })
        else if (text !== '') out.push({ type: 'reasoning', text })
        break
      }
      case 'redacted_thinking': {
        const data = stringAt(block, 'data')
        if (data !== undefined) out.push({ type: 'redacted_reasoning', data })
        break
      }
      case 'tool_use': {
        this.openTool = this.toolCount++
        out.push({ type: 'tool_start', index: this.openTool, id: stringAt(block, 'id') ?? '', name: stringAt(block, 'name') ?? '' })
        // Streamed input comes as input_json_delta; an input given whole in the start is passed as one fragment.
        const input = objectAt(block, 'input')
        if (input !== undefined && Object.keys(input).length > 0)
          out.push({ type: 'tool_args', index: this.openTool, json: JSON.stringify(input) })
        break
      }
    }
  }

  private delta(delta: Json, out: StreamEvent[]): void {
    switch (delta.type) {
      case 'text_delta': {
        const text = stringAt(delta, 'text')
        if (text !== undefined) out.push({ type: 'text', text })
        break
      }
      case 'thinking_delta': {
        const text = stringAt(delta, 'thinking')
        if (text !== undefined) out.push({ type: 'reasoning', text })
        break
      }
      case 'signature_delta': {
        const signature = stringAt(delta, 'signature')
        if (signature !== undefined) out.push({ type: 'reasoning', text: '', signature })
        break
      }
      case 'input_json_delta': {
        const json = stringAt(delta, 'partial_json')
        if (json !== undefined && this.openTool !== -1) out.push({ type: 'tool_args', index: this.openTool, json })
        break
      }
    }
  }
}

/** A non-streamed Anthropic message → the neutral answer. */
export function readAnthropicResponse(body: Json): Answer {
  const content = body.content
  if (!Array.isArray(content)) throw new MalformedStreamError(`${FORMAT} response has no content array`)
  const blocks: AnswerBlock[] = []
  for (const item of content) {
    if (item === null || typeof item !== 'object') continue
    const block = item as Json
    switch (block.type) {
      case 'text':
        if (typeof block.text === 'string') blocks.push({ type: 'text', text: block.text })
        break
      case 'thinking': {
        const reasoning: AnswerBlock = { type: 'reasoning', text: typeof block.thinking === 'string' ? block.thinking : '' }
        const signature = stringAt(block, 'signature')
        if (signature !== undefined) reasoning.signature = signature
        blocks.push(reasoning)
        break
      }
      case 'redacted_thinking':
        if (typeof block.data === 'string') blocks.push({ type: 'redacted_reasoning', data: block.data })
        break
      case 'tool_use':
        blocks.push({
          type: 'tool',
          id: stringAt(block, 'id') ?? '',
          name: stringAt(block, 'name') ?? '',
          args: JSON.stringify(objectAt(block, 'input') ?? {}),
        })
        break
    }
  }
  const stop = stringAt(body, 'stop_reason') ?? 'end_turn'
  const usage = objectAt(body, 'usage')
  const answer: Answer = {
    blocks,
    finish: finishFromAnthropic(
      stop,
      blocks.some((block) => block.type === 'tool'),
    ),
    usage: { inputTokens: 0, outputTokens: 0, ...(usage === undefined ? {} : fromAnthropicUsage(usage)) },
  }
  const sequence = stringAt(body, 'stop_sequence')
  if (sequence !== undefined) answer.stopSequence = sequence
  return answer
}
