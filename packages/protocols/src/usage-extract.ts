import { JsonKeyScanner, type Protocol, type Usage } from '@llmproxy/core'
import { count, type Json, objectAt } from './convert/fields.js'

/**
 * The JSON key each wire format reports usage under (streamed and not). TGI is reached through its OpenAI-compatible
 * routes (the gateway serves no other), which report `usage` as OpenAI does; `details` is its native `/generate`'s.
 */
const USAGE_KEY: Record<Protocol, string> = {
  openai: 'usage',
  vllm: 'usage',
  anthropic: 'usage',
  gemini: 'usageMetadata',
  tgi: 'usage',
}

/**
 * How deep the usage key may be (1: a key of the body's or event's own object). Most reports are there: chat,
 * completions, embeddings and Responses bodies, Anthropic's `message_delta` and body, Gemini's chunks and body.
 * One level down: a Responses stream's `response.completed` → `response.usage`, Anthropic's `message_start` →
 * `message.usage`, the elements of a Gemini stream sent as one JSON array. Deeper, the key is content: a model's
 * tool-call arguments, which Gemini and Anthropic send as objects, are three levels down or more in every format.
 */
const REPORT_DEPTH = 2

/** `null` backwards, for {@link UsageExtractor.endsWithNullReport}. */
const NULL_REVERSED = [0x6c, 0x6c, 0x75, 0x6e]
const COLON = 0x3a

function isSpace(byte: number | undefined): boolean {
  return byte === 0x20 || byte === 0x09
}

/**
 * Reads the usage a response reports, from its bytes as they pass, for any supported wire format.
 * Later reports override earlier ones field by field (Anthropic sends input tokens in `message_start`
 * and cumulative output tokens in `message_delta`; Gemini repeats cumulative `usageMetadata`).
 */
export class UsageExtractor {
  private readonly scanner: JsonKeyScanner
  private prompt: number | undefined
  private completion: number | undefined
  private total: number | undefined
  private cached: number | undefined
  private reasoning: number | undefined
  /** The latest report, not parsed yet: parsing waits until the counts are asked for or the next report comes. */
  private unparsed: string | null = null
  /** Usage reports seen so far: lets a caller tell whether a chunk carried one, without scanning it again. */
  reports = 0

  private readonly protocol: Protocol

  constructor(protocol: Protocol) {
    this.protocol = protocol
    this.scanner = new JsonKeyScanner(USAGE_KEY[protocol], REPORT_DEPTH, (json) => this.found(json))
  }

  /**
   * Whether the JSON object ending at `bytes[last]` (its closing brace) ends with the usage key set to null
   * (`"usage":null}`), as OpenAI, vLLM and TGI end every streamed chunk but the usage one when include_usage is on.
   * Such an object reports nothing: a caller that sees only those in a chunk of whole lines may skip
   * writing that chunk, since the key's last value is the one that counts.
   */
  endsWithNullReport(bytes: Buffer, last: number): boolean {
    let pos = last - 1
    while (isSpace(bytes[pos])) pos--
    for (let i = 0; i < NULL_REVERSED.length; i++, pos--) if (bytes[pos] !== NULL_REVERSED[i]) return false
    while (isSpace(bytes[pos])) pos--
    if (bytes[pos] !== COLON) return false
    pos--
    while (isSpace(bytes[pos])) pos--
    const key = this.scanner.needle
    return key.isAt(bytes, pos - key.length + 1)
  }

  /** Reads the chunk's bytes from `from` on (the caller knows the bytes before it, whole lines, report nothing). */
  write(chunk: Buffer, from = 0): void {
    this.scanner.write(chunk, from)
  }

  /** Whether the bytes read so far open a JSON document; null while they are whitespace only (JsonKeyScanner). */
  get opensJson(): boolean | null {
    return this.scanner.opensJson
  }

  /** The bytes read so far are a whole JSON document: every object, array and string closed (JsonKeyScanner). */
  get jsonClosed(): boolean {
    return this.scanner.jsonClosed
  }

  /** What the upstream reported, or null when it reported nothing. */
  result(): Usage | null {
    this.parsePending()
    if (this.prompt === undefined && this.completion === undefined && this.total === undefined) return null
    const prompt = this.prompt ?? 0
    const completion = this.completion ?? 0
    const usage: Usage = {
      promptTokens: prompt,
      completionTokens: completion,
      totalTokens: this.total ?? prompt + completion,
    }
    if (this.cached !== undefined) usage.cachedTokens = this.cached
    if (this.reasoning !== undefined) usage.reasoningTokens = this.reasoning
    return usage
  }

  /**
   * Whether the answer's final usage report came. An Anthropic stream reports its input tokens in `message_start`
   * (with `output_tokens: 1`) and its output only in the closing `message_delta`: one report is not final there.
   */
  isFinal(stream: boolean): boolean {
    return this.reports >= (stream && this.protocol === 'anthropic' ? 2 : 1)
  }

  /** True when the report lacks the prompt side, so that part must be estimated. */
  get missingPrompt(): boolean {
    this.parsePending()
    return this.prompt === undefined
  }

  /** True when the report lacks the output side (a Gemini chunk before its last may count the prompt only). */
  get missingCompletion(): boolean {
    this.parsePending()
    return this.completion === undefined
  }

  private found(json: string): void {
    this.reports++
    this.parsePending()
    this.unparsed = json
  }

  private parsePending(): void {
    const json = this.unparsed
    if (json === null) return
    this.unparsed = null
    this.merge(json)
  }

  /** Reads each format's fields as the converters' `fromOpenAiUsage`, `fromAnthropicUsage` and `fromGeminiUsage` do. */
  private merge(json: string): void {
    let obj: Json
    try {
      obj = JSON.parse(json) as Json
    } catch {
      return
    }
    // OpenAI chat/completions/embeddings, vLLM, TGI
    const prompt = count(obj.prompt_tokens)
    if (prompt !== undefined) this.prompt = prompt
    const completion = count(obj.completion_tokens)
    if (completion !== undefined) this.completion = completion
    const total = count(obj.total_tokens)
    if (total !== undefined) this.total = total
    const cached =
      count(objectAt(obj, 'prompt_tokens_details')?.cached_tokens) ?? count(objectAt(obj, 'input_tokens_details')?.cached_tokens)
    if (cached !== undefined) this.cached = cached
    // Chat's reasoning; then a Responses body's (reasoning_tokens) or Anthropic's (thinking_tokens), both in output_tokens_details
    const outputDetails = objectAt(obj, 'output_tokens_details')
    const reasoning =
      count(objectAt(obj, 'completion_tokens_details')?.reasoning_tokens) ??
      count(outputDetails?.reasoning_tokens) ??
      count(outputDetails?.thinking_tokens)
    if (reasoning !== undefined) this.reasoning = reasoning

    // OpenAI responses, Anthropic (input_tokens excludes cache reads/writes, so they are added back)
    const input = count(obj.input_tokens)
    const cacheRead = count(obj.cache_read_input_tokens)
    const cacheWrite = count(obj.cache_creation_input_tokens)
    if (input !== undefined || cacheRead !== undefined || cacheWrite !== undefined) {
      if (cacheRead !== undefined || cacheWrite !== undefined) {
        this.prompt = (input ?? 0) + (cacheRead ?? 0) + (cacheWrite ?? 0)
        if (cacheRead !== undefined) this.cached = cacheRead
      } else if (input !== undefined && (this.prompt === undefined || input > 0)) {
        this.prompt = input
      }
    }
    const output = count(obj.output_tokens)
    if (output !== undefined) this.completion = output

    // Gemini usageMetadata: completion includes thinking tokens, as OpenAI's includes reasoning
    // (prompt tokens include cached ones, and the tool-use prompt is input too)
    const promptCount = count(obj.promptTokenCount)
    if (promptCount !== undefined) this.prompt = promptCount + (count(obj.toolUsePromptTokenCount) ?? 0)
    const candidates = count(obj.candidatesTokenCount)
    const thoughts = count(obj.thoughtsTokenCount)
    if (candidates !== undefined || thoughts !== undefined) this.completion = (candidates ?? 0) + (thoughts ?? 0)
    if (thoughts !== undefined) this.reasoning = thoughts
    const totalCount = count(obj.totalTokenCount)
    if (totalCount !== undefined) this.total = totalCount
    const cachedContent = count(obj.cachedContentTokenCount)
    if (cachedContent !== undefined) this.cached = cachedContent

    if (total === undefined && totalCount === undefined) this.total = undefined
  }
}
