import { flatText } from '@llmproxy/core'
import { type Answer, cutByCap, hasRedactedReasoning, parseToolArgs, randomHex } from './answer.js'
import { GEMINI_FINISH } from './finish.js'
import { JsonEnd } from './json-end.js'
import { SSE_KEEP_ALIVE } from './sse.js'
import type { EncoderOptions, EncoderResume, FinishReason, StreamEncoder, StreamEvent } from './types.js'
import { type ClientError, geminiCode, geminiStatus } from './upstream-error.js'
import { toGeminiUsage, UsageTally } from './usage.js'

/** A JSON array's only filler: whitespace between its elements (Google's own array streams put line ends there). */
const ARRAY_KEEP_ALIVE = '\n'
/** The last chunk's parts when it carries nothing else: the SDK's chat history refuses a chunk without parts. */
const EMPTY_PARTS = '{"text":""}'
const MALFORMED = 'MALFORMED_FUNCTION_CALL'

/** A function call whose arguments are still arriving: Gemini sends a call's `args` whole, as an object. */
interface PendingCall {
  id: string
  name: string
  signature: string | undefined
  args: string
  readonly end: JsonEnd
  /** Its arguments' JSON closed: it goes out once the calls before it have. */
  closed: boolean
}

/**
 * Events → Gemini `GenerateContentResponse` chunks, each `{candidates:[{content:{role:'model',parts:[…]},index:0}],
 * modelVersion, responseId}`; the last one adds `finishReason` and `usageMetadata`. With `alt=sse` each chunk is a
 * `data:` event; otherwise the chunks are the elements of one JSON array, written one by one (`[`, `,`, `]`).
 *
 * What is held, and why:
 * - A function call goes out when its arguments' JSON closes (Gemini has no partial arguments) and the calls before
 *   it have gone out (Gemini pairs calls and responses by position); at the finish at the latest. Arguments that
 *   are not a JSON object end the answer as Gemini does: `MALFORMED_FUNCTION_CALL`; arguments the output cap cut off
 *   (a `length` finish before their JSON closed) leave their call out, the answer ending `MAX_TOKENS`.
 * - The last chunk carries `finishReason` and `usageMetadata` together: it is held from the finish until the next
 *   usage report or the end of the upstream stream.
 */
export class GeminiEncoder implements StreamEncoder {
  /** Everything of a chunk after its candidate: the candidates array closes, then modelVersion and responseId. */
  private readonly tail: string
  private readonly sse: boolean
  private readonly usage: UsageTally
  /** JSON-array mode: an element went out (the next one needs a comma). */
  private wrote: boolean
  private readonly calls: (PendingCall | undefined)[] = []
  private toolOffset = 0
  private toolsSeen = 0
  /** The first call not sent yet. */
  private nextCall = 0
  private started: boolean
  private stop: FinishReason | null = null
  private lastSent = false
  /** Why the answer is malformed (a function call whose arguments are not an object). */
  private malformed: string | undefined
  /** Signed reasoning and the reasoning after it, held until the reasoning ends: a redacted block may still come. */
  private held: Extract<StreamEvent, { type: 'reasoning' }>[] | null = null
  /**
   * The answer has a redacted_thinking block, which the client has no part for: no thought signature goes out. Claude
   * takes the thinking of a tool-call turn back only whole, so the turn goes back without thinking (see request-anthropic).
   */
  private redacted = false

  constructor(opts: EncoderOptions, resume?: EncoderResume) {
    const id = opts.id ?? randomHex()
    // Kept for the whole stream: one string, not the tree of concatenations that built it.
    this.tail = flatText(`],"modelVersion":${JSON.stringify(opts.model)},"responseId":${JSON.stringify(id)}}`)
    this.sse = opts.geminiSse !== false
    this.usage = new UsageTally(resume?.usage)
    this.started = resume !== undefined
    this.wrote = resume !== undefined
  }

  encode(event: StreamEvent): string {
    if (this.held === null) return this.encodeEvent(event)
    switch (event.type) {
      case 'reasoning':
        this.held.push(event)
        return ''
      case 'redacted_reasoning':
        this.redacted = true
        return this.release()
      case 'usage':
        return this.encodeEvent(event)
      default:
        return this.release() + this.encodeEvent(event)
    }
  }

  private encodeEvent(event: StreamEvent): string {
    switch (event.type) {
      case 'start':
        if (this.started) {
          this.usage.nextAttempt()
          this.toolOffset = this.toolsSeen
          this.nextCall = this.toolsSeen
        }
        this.started = true
        if (event.usage !== undefined) this.usage.report(event.usage)
        return ''
      case 'usage':
        this.usage.report(event.usage)
        return this.stop !== null && !this.lastSent ? this.last() : ''
      case 'finish':
        if (this.stop !== null) return ''
        this.stop = event.reason
        return this.flushCalls()
      case 'error':
        // The router decides: continue on another upstream, or end with error().
        return ''
    }
    if (this.stop !== null) return ''
    switch (event.type) {
      case 'text':
        return event.text === '' ? '' : this.chunk(`{"text":${JSON.stringify(event.text)}}`)
      case 'reasoning':
        // Anthropic signs a thinking block before a redacted_thinking block that may follow it: the signature waits.
        if (event.signature !== undefined && !this.redacted) {
          this.held = [event]
          return ''
        }
        return this.thought(event.text, undefined)
      case 'tool_start': {
        const index = event.index + this.toolOffset
        if (index >= this.toolsSeen) this.toolsSeen = index + 1
        this.calls[index] = { id: event.id, name: event.name, signature: event.signature, args: '', end: new JsonEnd(), closed: false }
        return ''
      }
      case 'tool_args': {
        const call = this.calls[event.index + this.toolOffset]
        if (call === undefined || call.closed) return ''
        call.args += event.json
        if (!call.end.feed(event.json)) return ''
        call.closed = true
        return this.sendClosedCalls()
      }
      case 'redacted_reasoning':
        // Gemini has no part for opaque reasoning.
        this.redacted = true
        return ''
    }
  }

  finish(): string {
    let out = this.held === null ? '' : this.release()
    if (this.stop === null) {
      this.stop = 'stop'
      out += this.flushCalls()
    }
    if (!this.lastSent) out += this.last()
    if (!this.sse) out += this.wrote ? ']' : '[]'
    return out
  }

  error(error: ClientError): string {
    const status = error.statusCode
    const body = JSON.stringify({ error: { code: geminiCode(status), message: error.message, status: geminiStatus(status) } })
    // No closing bracket in array mode: a client must not take the answer as complete.
    return this.frame(body)
  }

  keepAlive(): string {
    return this.sse ? SSE_KEEP_ALIVE : ARRAY_KEEP_ALIVE
  }

  /** The held reasoning, with its signatures unless a redacted block came. */
  private release(): string {
    const held = this.held ?? []
    this.held = null
    let out = ''
    for (const event of held) out += this.thought(event.text, this.redacted ? undefined : event.signature)
    return out
  }

  private thought(text: string, signature: string | undefined): string {
    if (signature === undefined) return text === '' ? '' : this.chunk(`{"text":${JSON.stringify(text)},"thought":true}`)
    return this.chunk(`{"text":${JSON.stringify(text)},"thought":true,"thoughtSignature":${JSON.stringify(signature)}}`)
  }

  private chunk(part: string): string {
    return this.frame(`{"candidates":[{"content":{"role":"model","parts":[${part}]},"index":0}${this.tail}`)
  }

  private frame(json: string): string {
    if (this.sse) return `data: ${json}\n\n`
    const separator = this.wrote ? ',' : '['
    this.wrote = true
    return separator + json
  }

  private callChunk(call: PendingCall): string {
    const args = parseToolArgs(call.args)
    if (args === undefined) {
      // Gemini never sends a partial functionCall part: a call the output cap cut off is left out (MAX_TOKENS).
      if (this.stop === 'length' && !call.closed) return ''
      this.malformed ??= `Malformed function call ${call.name}: ${call.args}`
      return ''
    }
    const signature = call.signature === undefined ? '' : `,"thoughtSignature":${JSON.stringify(call.signature)}`
    return this.chunk(
      `{"functionCall":{"id":${JSON.stringify(call.id)},"name":${JSON.stringify(call.name)},"args":${JSON.stringify(args)}}${signature}}`,
    )
  }

  /** The calls whose arguments closed, from the first not sent, up to one still open. */
  private sendClosedCalls(): string {
    let out = ''
    for (let call = this.calls[this.nextCall]; call?.closed === true; call = this.calls[this.nextCall]) {
      this.calls[this.nextCall++] = undefined
      out += this.callChunk(call)
    }
    return out
  }

  /** At the finish: every call not sent yet, in order, those whose arguments never closed too. */
  private flushCalls(): string {
    let out = ''
    for (; this.nextCall < this.calls.length; this.nextCall++) {
      const call = this.calls[this.nextCall]
      this.calls[this.nextCall] = undefined
      if (call !== undefined) out += this.callChunk(call)
    }
    return out
  }

  private last(): string {
    this.lastSent = true
    const reason = this.malformed === undefined ? GEMINI_FINISH[this.stop ?? 'stop'] : MALFORMED
    const message = this.malformed === undefined ? '' : `,"finishMessage":${JSON.stringify(this.malformed)}`
    const usage = JSON.stringify(toGeminiUsage(this.usage.total()))
    return this.frame(
      `{"candidates":[{"content":{"role":"model","parts":[${EMPTY_PARTS}]},"finishReason":"${reason}"${message},"index":0}],"usageMetadata":${usage}${this.tail.slice(1)}`,
    )
  }
}

/** A neutral answer → a Gemini `GenerateContentResponse`. */
export function writeGeminiResponse(answer: Answer, opts: EncoderOptions): Record<string, unknown> {
  const parts: Record<string, unknown>[] = []
  let malformed: string | undefined
  // As in a stream: an answer with a redacted_thinking block hands out no signature.
  const redacted = hasRedactedReasoning(answer)
  for (const block of answer.blocks) {
    switch (block.type) {
      case 'text':
        parts.push({ text: block.text })
        break
      case 'reasoning':
        parts.push(
          block.signature === undefined || redacted
            ? { text: block.text, thought: true }
            : { text: block.text, thought: true, thoughtSignature: block.signature },
        )
        break
      case 'tool': {
        const args = parseToolArgs(block.args)
        if (args === undefined) {
          // As in a stream: a call the output cap cut off is left out.
          if (cutByCap(block.args, answer.finish)) break
          malformed ??= `Malformed function call ${block.name}: ${block.args}`
          break
        }
        const functionCall = { id: block.id, name: block.name, args }
        parts.push(block.signature === undefined ? { functionCall } : { functionCall, thoughtSignature: block.signature })
        break
      }
      case 'redacted_reasoning':
        break
    }
  }
  if (parts.length === 0) parts.push({ text: '' })
  const candidate: Record<string, unknown> = {
    content: { role: 'model', parts },
    finishReason: malformed === undefined ? GEMINI_FINISH[answer.finish] : MALFORMED,
    index: 0,
  }
  if (malformed !== undefined) candidate.finishMessage = malformed
  return {
    candidates: [candidate],
    usageMetadata: toGeminiUsage(answer.usage),
    modelVersion: opts.model,
    responseId: opts.id ?? randomHex(),
  }
}
