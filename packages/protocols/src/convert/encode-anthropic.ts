import { type Answer, cutByCap, parseToolArgs, randomHex } from './answer.js'
import { ANTHROPIC_STOP } from './finish.js'
import { JsonEnd } from './json-end.js'
import { ANTHROPIC_PING } from './sse.js'
import {
  type EncoderOptions,
  type EncoderResume,
  type FinishReason,
  MalformedStreamError,
  type StreamEncoder,
  type StreamEvent,
  toolCallIdWithSignature,
} from './types.js'
import { anthropicErrorType, type ClientError } from './upstream-error.js'
import { toAnthropicUsage, UsageTally } from './usage.js'

type ContentEvent = Extract<StreamEvent, { type: 'text' | 'reasoning' | 'redacted_reasoning' | 'tool_start' | 'tool_args' }>
type BlockType = 'none' | 'text' | 'thinking' | 'tool'

const DELTA_HEAD = 'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
const TEXT_BLOCK = '{"type":"text","text":""}'
const THINKING_BLOCK = '{"type":"thinking","thinking":"","signature":""}'
const MESSAGE_STOP = 'event: message_stop\ndata: {"type":"message_stop"}\n\n'

/**
 * Events → Anthropic Messages events: `message_start`, one content block at a time (text, thinking with its
 * `signature_delta`, redacted_thinking, tool_use with `input_json_delta`), `message_delta`, `message_stop`.
 *
 * What is held, and why:
 * - `message_delta` must carry the stop reason and the final usage together. It is held from the finish until
 *   the next usage report (OpenAI upstreams send their usage chunk after the finish chunk; Anthropic and Gemini
 *   decoders report usage right after the finish) or the end of the upstream stream.
 * - Blocks never interleave, but OpenAI upstreams may stream parallel tool calls interleaved by index. A tool_use
 *   block stays open while its arguments are incomplete (tracked by {@link JsonEnd}, no parse) and closes the
 *   moment its JSON closes. Events for other blocks that arrive while it is open wait in order and go out when it
 *   closes (at the finish at the latest). Upstreams that stream calls one after another (OpenAI, vLLM) never wait.
 */
export class AnthropicEncoder implements StreamEncoder {
  private readonly id: string
  private readonly model: string
  /** The client turned thinking on (EncoderOptions.reasoning): else reasoning is left out. */
  private readonly showReasoning: boolean
  private readonly usage: UsageTally
  private started: boolean
  /** The open block's type ('none' between blocks) and the index of the last block opened. */
  private block: BlockType = 'none'
  private blockIndex = -1
  /** Client index of the open tool_use block, and of the next tool call to open. */
  private openTool = -1
  private nextTool = 0
  private toolOffset = 0
  private readonly args = new JsonEnd()
  /** The open tool_use block's name and arguments so far: checked to be a JSON object when it closes. */
  private toolName = ''
  private toolJson = ''
  /** Events for other blocks that arrived while a tool_use block was open. */
  private held: ContentEvent[] = []
  private stop: FinishReason | null = null
  private stopSequence: string | null = null
  private deltaSent = false

  constructor(opts: EncoderOptions, resume?: EncoderResume) {
    this.id = opts.id ?? `msg_${randomHex()}`
    this.model = opts.model
    this.showReasoning = opts.reasoning !== false
    this.usage = new UsageTally(resume?.usage)
    this.started = resume !== undefined
    if (resume?.block !== undefined) {
      this.blockIndex = resume.block.index
      if (resume.block.open) this.block = resume.block.type
    }
  }

  encode(event: StreamEvent): string {
    switch (event.type) {
      case 'start':
        if (this.started) {
          this.usage.nextAttempt()
          this.toolOffset = this.nextTool
        }
        if (event.usage !== undefined) this.usage.report(event.usage)
        return this.opening()
      case 'usage':
        this.usage.report(event.usage)
        return this.stop !== null && !this.deltaSent ? this.messageDelta() : ''
      case 'finish':
        if (this.stop !== null) return ''
        this.stop = event.reason
        if (event.stopSequence !== undefined) this.stopSequence = event.stopSequence
        return this.opening() + this.closeAll()
      case 'error':
        // The router decides: continue on another upstream, or end with error().
        return ''
      default:
        return this.stop !== null ? '' : this.opening() + this.content(event)
    }
  }

  finish(): string {
    let out = this.opening()
    if (this.stop === null) {
      this.stop = 'stop'
      out += this.closeAll()
    }
    if (!this.deltaSent) out += this.messageDelta()
    return out + MESSAGE_STOP
  }

  error(error: ClientError): string {
    const body = { type: 'error', error: { type: anthropicErrorType(error.statusCode), message: error.message } }
    return `event: error\ndata: ${JSON.stringify(body)}\n\n`
  }

  keepAlive(): string {
    return ANTHROPIC_PING
  }

  private opening(): string {
    if (this.started) return ''
    this.started = true
    const message = {
      id: this.id,
      type: 'message',
      role: 'assistant',
      model: this.model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: toAnthropicUsage(this.usage.total()),
    }
    return `event: message_start\ndata: ${JSON.stringify({ type: 'message_start', message })}\n\n`
  }

  private content(event: ContentEvent): string {
    if (event.type === 'tool_args') {
      const index = event.index + this.toolOffset
      if (index === this.openTool) return this.toolArgs(event.json)
      // A fragment for a call whose block has closed (its JSON was whole): nothing can follow a closed block.
      if (index < this.nextTool) return ''
    }
    if (this.block === 'tool') {
      this.held.push(event)
      return ''
    }
    switch (event.type) {
      case 'text':
        if (event.text === '') return ''
        return `${this.enter('text', TEXT_BLOCK)}${DELTA_HEAD}${this.blockIndex},"delta":{"type":"text_delta","text":${JSON.stringify(event.text)}}}\n\n`
      case 'reasoning':
        return this.showReasoning ? this.reasoning(event.text, event.signature) : ''
      case 'redacted_reasoning':
        if (!this.showReasoning) return ''
        // Opened and closed at once: its data comes whole.
        return (
          this.closeBlock() +
          this.startBlock('none', `{"type":"redacted_thinking","data":${JSON.stringify(event.data)}}`) +
          this.stopBlock()
        )
      case 'tool_start': {
        const block = `{"type":"tool_use","id":${JSON.stringify(toolCallIdWithSignature(event.id, event.signature))},"name":${JSON.stringify(event.name)},"input":{}}`
        const out = this.closeBlock() + this.startBlock('tool', block)
        this.openTool = event.index + this.toolOffset
        this.nextTool = this.openTool + 1
        this.args.reset()
        this.toolName = event.name
        this.toolJson = ''
        return out
      }
      case 'tool_args':
        // Arguments of a call never started (decoders start every call first).
        return ''
    }
  }

  private reasoning(text: string, signature: string | undefined): string {
    let out = ''
    if (text !== '') {
      out = `${this.enter('thinking', THINKING_BLOCK)}${DELTA_HEAD}${this.blockIndex},"delta":{"type":"thinking_delta","thinking":${JSON.stringify(text)}}}\n\n`
    }
    if (signature !== undefined) {
      // A signature ends its thinking block.
      out += this.enter('thinking', THINKING_BLOCK) + this.signatureDelta(signature)
      this.block = 'none'
      out += this.stopBlock()
    }
    return out
  }

  private signatureDelta(signature: string): string {
    return `${DELTA_HEAD}${this.blockIndex},"delta":{"type":"signature_delta","signature":${JSON.stringify(signature)}}}\n\n`
  }

  private toolArgs(json: string): string {
    this.toolJson += json
    const out = `${DELTA_HEAD}${this.blockIndex},"delta":{"type":"input_json_delta","partial_json":${JSON.stringify(json)}}}\n\n`
    if (!this.args.feed(json)) return out
    return out + this.closeBlock() + this.release()
  }

  /** Replays the events held behind a tool_use block that has just closed (they may wait again behind the next). */
  private release(): string {
    if (this.held.length === 0) return ''
    const held = this.held
    this.held = []
    let out = ''
    for (const event of held) out += this.content(event)
    return out
  }

  /** Closes every block, the open tool_use block too even if its arguments never closed, with everything held. */
  private closeAll(): string {
    let out = ''
    for (;;) {
      out += this.closeBlock()
      if (this.held.length === 0) return out
      out += this.release()
    }
  }

  /** Opens a block of this type unless one is open already. */
  private enter(type: BlockType, block: string): string {
    return this.block === type ? '' : this.closeBlock() + this.startBlock(type, block)
  }

  private startBlock(type: BlockType, block: string): string {
    this.blockIndex++
    this.block = type
    return `event: content_block_start\ndata: {"type":"content_block_start","index":${this.blockIndex},"content_block":${block}}\n\n`
  }

  private closeBlock(): string {
    if (this.block === 'none') return ''
    if (this.block === 'thinking') {
      // Anthropic ends every thinking block with its signature: one the upstream did not sign gets an empty one
      // (@ai-sdk/anthropic keeps a streamed block's reasoning for the next turn only after a signature_delta).
      this.block = 'none'
      return this.signatureDelta('') + this.stopBlock()
    }
    // A tool_use block closes only on a JSON object: Anthropic's SDKs would read anything else as `input: {}`. One
    // the output cap cut off closes as it is, as Anthropic's own stream closes a block cut by `max_tokens`: it has
    // started, and the stop reason tells the client its input is incomplete (the SDK's MessageStream partial-parses
    // the fragments, dropping an unfinished value; its tool runner runs no call of a `max_tokens` reply).
    const cutOff = this.stop === 'length' && !this.args.complete
    if (this.block === 'tool' && !cutOff && parseToolArgs(this.toolJson) === undefined) {
      throw new MalformedStreamError(`The upstream's tool call ${this.toolName} has arguments that are not a JSON object`)
    }
    this.block = 'none'
    this.openTool = -1
    return this.stopBlock()
  }

  private stopBlock(): string {
    return `event: content_block_stop\ndata: {"type":"content_block_stop","index":${this.blockIndex}}\n\n`
  }

  private messageDelta(): string {
    this.deltaSent = true
    const stopReason = ANTHROPIC_STOP[this.stop ?? 'stop']
    const body = {
      type: 'message_delta',
      delta: { stop_reason: stopReason, stop_sequence: this.stopSequence },
      usage: toAnthropicUsage(this.usage.total()),
    }
    return `event: message_delta\ndata: ${JSON.stringify(body)}\n\n`
  }
}

/**
 * A neutral answer → an Anthropic message. Arguments that are not a JSON object cannot be a tool_use input. A call
 * the output cap cut off is left out, the message ending `max_tokens`: with half its arguments, a loop that runs the
 * tool_use blocks it finds (the SDK's `generateToolResponse()` does, whatever the stop reason) would run it.
 */
export function writeAnthropicResponse(answer: Answer, opts: EncoderOptions): Record<string, unknown> {
  const content: Record<string, unknown>[] = []
  for (const block of answer.blocks) {
    switch (block.type) {
      case 'text':
        content.push({ type: 'text', text: block.text })
        break
      case 'reasoning':
        if (opts.reasoning !== false) content.push({ type: 'thinking', thinking: block.text, signature: block.signature ?? '' })
        break
      case 'redacted_reasoning':
        if (opts.reasoning !== false) content.push({ type: 'redacted_thinking', data: block.data })
        break
      case 'tool': {
        const input = parseToolArgs(block.args)
        if (input === undefined) {
          if (cutByCap(block.args, answer.finish)) break
          throw new MalformedStreamError(`The upstream's tool call ${block.name} has arguments that are not a JSON object`)
        }
        content.push({ type: 'tool_use', id: toolCallIdWithSignature(block.id, block.signature), name: block.name, input })
        break
      }
    }
  }
  return {
    id: opts.id ?? `msg_${randomHex()}`,
    type: 'message',
    role: 'assistant',
    model: opts.model,
    content,
    stop_reason: ANTHROPIC_STOP[answer.finish],
    stop_sequence: answer.stopSequence ?? null,
    usage: toAnthropicUsage(answer.usage),
  }
}
