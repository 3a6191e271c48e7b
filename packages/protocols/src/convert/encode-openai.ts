import { flatText } from '@llmproxy/core'
import { type Answer, hasRedactedReasoning, randomHex } from './answer.js'
import { OPENAI_FINISH } from './finish.js'
import { SSE_KEEP_ALIVE } from './sse.js'
import {
  type EncoderOptions,
  type EncoderResume,
  type FinishReason,
  type StreamEncoder,
  type StreamEvent,
  toolCallIdWithSignature,
} from './types.js'
import type { ClientError } from './upstream-error.js'
import { toOpenAiUsage, UsageTally } from './usage.js'

/** A chunk's choices up to its delta (the usage chunk has no choice). */
const CHOICE_START = '[{"index":0,"delta":'
const CHOICE_END = ',"logprobs":null,"finish_reason":null}]}\n\n'
const DONE = 'data: [DONE]\n\n'

/**
 * Events → OpenAI `chat.completion.chunk`s: one role chunk, deltas (`content`, `reasoning_content`, `tool_calls`
 * by index), the finish chunk, a usage chunk only when the client asked for one (`includeUsage`), `[DONE]`.
 * Every chunk has the same id, created and model; each is rendered from templates made once per stream.
 * Nothing is held: the usage chunk goes out at the end, where OpenAI puts it.
 */
export class OpenAiEncoder implements StreamEncoder {
  /** Everything of a chunk before its delta. */
  private readonly head: string
  private readonly includeUsage: boolean
  private readonly usage: UsageTally
  private started: boolean
  private finished = false
  /** Client index = neutral index + offset: a continuation's decoder counts its calls from 0 again. */
  private toolOffset = 0
  private toolsSeen = 0
  /** A reasoning signature the client has no field for, carried in the next tool call's id. */
  private signature: string | undefined
  /**
   * The answer has a redacted_thinking block, which the client has no field for: no signature goes out. Claude takes
   * the thinking of a tool-call turn back only whole, so the turn goes back without thinking (see request-anthropic).
   */
  private redacted = false
  /** Client indexes of tool calls with no arguments yet: OpenAI sends `{}` for none, not `""` (clients parse it). */
  private toolsWithoutArgs: number[] = []

  constructor(opts: EncoderOptions, resume?: EncoderResume) {
    const id = opts.id ?? `chatcmpl-${randomHex()}`
    const created = resume?.created ?? Math.floor(Date.now() / 1000)
    // Kept for the whole stream: one string, not the tree of concatenations that built it (a 32-byte node per join).
    // The usage chunk, sent once, takes its head from it.
    this.head = flatText(
      `data: {"id":${JSON.stringify(id)},"object":"chat.completion.chunk","created":${created},"model":${JSON.stringify(opts.model)},"choices":${CHOICE_START}`,
    )
    this.includeUsage = opts.includeUsage === true
    this.usage = new UsageTally(resume?.usage)
    this.started = resume !== undefined
  }

  encode(event: StreamEvent): string {
    switch (event.type) {
      case 'start':
        // A later start is a continuation on another upstream: one stream for the client still.
        if (this.started) {
          this.usage.nextAttempt()
          this.toolOffset = this.toolsSeen
        }
        if (event.usage !== undefined) this.usage.report(event.usage)
        return this.opening()
      case 'usage':
        this.usage.report(event.usage)
        return ''
      case 'finish':
        if (this.finished) return ''
        this.finished = true
        return this.opening() + this.emptyArgs() + this.finishChunk(event.reason)
      case 'error':
        // The router decides: continue on another upstream, or end with error().
        return ''
    }
    if (this.finished) return ''
    switch (event.type) {
      case 'text':
        return event.text === '' ? '' : this.chunk(`{"content":${JSON.stringify(event.text)}}`)
      case 'reasoning':
        if (event.signature !== undefined) this.signature = event.signature
        return event.text === '' ? '' : this.chunk(`{"reasoning_content":${JSON.stringify(event.text)}}`)
      case 'tool_start': {
        const index = event.index + this.toolOffset
        if (index >= this.toolsSeen) this.toolsSeen = index + 1
        const id = this.redacted ? event.id : toolCallIdWithSignature(event.id, event.signature ?? this.signature)
        this.signature = undefined
        // The SDKs take a call as done when the next one starts: the one before gets its `{}` first.
        const before = this.emptyArgs()
        this.toolsWithoutArgs.push(index)
        return (
          before +
          this.chunk(
            `{"tool_calls":[{"index":${index},"id":${JSON.stringify(id)},"type":"function","function":{"name":${JSON.stringify(event.name)},"arguments":""}}]}`,
          )
        )
      }
      case 'tool_args': {
        if (event.json === '') return ''
        const index = event.index + this.toolOffset
        if (this.toolsWithoutArgs.length > 0) this.toolsWithoutArgs = this.toolsWithoutArgs.filter((waiting) => waiting !== index)
        return this.chunk(`{"tool_calls":[{"index":${index},"function":{"arguments":${JSON.stringify(event.json)}}}]}`)
      }
      case 'redacted_reasoning':
        // OpenAI has no field for opaque reasoning.
        this.redacted = true
        return ''
    }
  }

  finish(): string {
    let out = this.opening()
    if (!this.finished) {
      this.finished = true
      out += this.emptyArgs() + this.finishChunk('stop')
    }
    if (this.includeUsage) {
      out += `${this.head.slice(0, -CHOICE_START.length)}[],"usage":${JSON.stringify(toOpenAiUsage(this.usage.total()))}}\n\n`
    }
    return out + DONE
  }

  error(error: ClientError): string {
    return `data: ${JSON.stringify({ error: { message: error.message, type: error.type, param: null, code: error.code } })}\n\n`
  }

  keepAlive(): string {
    return SSE_KEEP_ALIVE
  }

  private opening(): string {
    if (this.started) return ''
    this.started = true
    return `${this.head}{"role":"assistant","content":""}${CHOICE_END}`
  }

  /** A chunk with one delta (after the role chunk when none went out yet). */
  private chunk(delta: string): string {
    return `${this.opening()}${this.head}${delta}${CHOICE_END}`
  }

  /** `{}` as the arguments of the tool calls that got none (a call of a tool without parameters). */
  private emptyArgs(): string {
    let out = ''
    for (const index of this.toolsWithoutArgs)
      out += `${this.head}{"tool_calls":[{"index":${index},"function":{"arguments":"{}"}}]}${CHOICE_END}`
    this.toolsWithoutArgs.length = 0
    return out
  }

  private finishChunk(reason: FinishReason): string {
    return `${this.head}{},"logprobs":null,"finish_reason":"${OPENAI_FINISH[reason]}"}]}\n\n`
  }
}

/** A neutral answer → an OpenAI `chat.completion`. */
export function writeOpenAiResponse(answer: Answer, opts: EncoderOptions): Record<string, unknown> {
  let content: string | null = null
  let reasoning: string | undefined
  let signature: string | undefined
  // As in a stream: an answer with a redacted_thinking block hands out no signature.
  const redacted = hasRedactedReasoning(answer)
  const toolCalls: Record<string, unknown>[] = []
  for (const block of answer.blocks) {
    switch (block.type) {
      case 'text':
        content = (content ?? '') + block.text
        break
      case 'reasoning':
        reasoning = (reasoning ?? '') + block.text
        if (block.signature !== undefined) signature = block.signature
        break
      case 'tool':
        toolCalls.push({
          id: redacted ? block.id : toolCallIdWithSignature(block.id, block.signature ?? signature),
          type: 'function',
          function: { name: block.name, arguments: block.args === '' ? '{}' : block.args },
        })
        signature = undefined
        break
      case 'redacted_reasoning':
        break
    }
  }
  const message: Record<string, unknown> = { role: 'assistant', content, refusal: null }
  if (reasoning !== undefined) message.reasoning_content = reasoning
  if (toolCalls.length > 0) message.tool_calls = toolCalls
  return {
    id: opts.id ?? `chatcmpl-${randomHex()}`,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: opts.model,
    choices: [{ index: 0, message, logprobs: null, finish_reason: OPENAI_FINISH[answer.finish] }],
    usage: toOpenAiUsage(answer.usage),
  }
}
