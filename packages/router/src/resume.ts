import { ByteNeedle } from '@llmproxy/core'
import type { ApiFamily, EncoderResume } from '@llmproxy/protocols'

const NEWLINE = 0x0a
const QUOTE = 0x22
const BACKSLASH = 0x5c
const COLON = 0x3a
const DATA = new ByteNeedle('data:')
/**
 * Text kept for a continuation, at most (JSON-escaped bytes here, characters in a converted stream): a longer answer
 * is not continued, and a stream's memory stays bounded however long it runs.
 */
export const MAX_TEXT_BYTES = 256 * 1024
/** A line split across chunks is carried whole, up to this size; a longer one makes the stream not continuable. */
const MAX_CARRIED_LINE = 64 * 1024
/** Text values up to this many bytes (a token's) are copied byte by byte. */
const SHORT_COPY = 64

/** What a cut stream's continuation needs from its first part: the text the client got, and where the stream stood. */
export interface ResumePoint {
  /** The answer text the client received. */
  readonly text: string
  /** Text events the client received (an estimate of the tokens generated). */
  readonly events: number
  /** The id and model the client saw (OpenAI chunks repeat them; Anthropic's message_start had them). */
  readonly id: string | undefined
  readonly model: string | undefined
  /** Where the client's stream stands, for an encoder that continues it (undefined: nothing of it was sent yet). */
  readonly resume: EncoderResume | undefined
}

/**
 * Keys (OpenAI, Gemini) or `type` values (Anthropic) whose presence makes a stream not continuable: tool calls,
 * reasoning (neither can be prefilled). A key whose value is null is absent: OpenAI-compatible shims in Python write
 * every field of a delta (`"tool_calls":null`).
 */
const NOT_TEXT: Record<ApiFamily, ByteNeedle[]> = {
  openai: ['"tool_calls"', '"function_call"', '"reasoning_content"', '"reasoning"', '"refusal"'].map((n) => new ByteNeedle(n)),
  anthropic: ['"tool_use"', '"thinking"', '"redacted_thinking"', '"server_tool_use"'].map((n) => new ByteNeedle(n)),
  gemini: ['"functionCall"', '"thought"', '"executableCode"', '"inlineData"'].map((n) => new ByteNeedle(n)),
}
/** Whether NOT_TEXT's needles are keys only: then a match that no colon follows is a string value (a text `"thought"`). */
const NOT_TEXT_KEYS: Record<ApiFamily, boolean> = { openai: true, anthropic: false, gemini: true }
const NULL = new ByteNeedle('null')
/** Where answer text is: OpenAI's delta `"content"`, Anthropic's `"text"` after `"text_delta"`, each Gemini part's `"text"`. */
const CONTENT = new ByteNeedle('"content"')
const TEXT_DELTA_TYPE = new ByteNeedle('"text_delta"')
const TEXT = new ByteNeedle('"text"')
const PARTS = new ByteNeedle('"parts"')
/** An OpenAI delta whose first key is its content: with the object closing right after the string, a plain text delta. */
const TEXT_DELTA = new ByteNeedle('"delta":{"content":"', '{')
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const BLOCK_START = new ByteNeedle('"content_block_start"')
const MESSAGE_START = new ByteNeedle('"message_start"')
const BLOCK_STOP = new ByteNeedle('"content_block_stop"')

/**
 * Beside a same-format stream (nothing else parses it), keeps what a continuation would need: the answer text, by
 * finding each event's text value with byte searches (no JSON parsing per event), and where the stream stands.
 * Anything but text (tool calls, reasoning) makes the stream not continuable, and the tap stops. The first event is
 * parsed when a continuation asks, for the id and model the client saw. Memory: the text, capped.
 */
export class ResumeTap {
  /** The stream so far is plain text, within the cap: a continuation can take over from it. */
  continuable = true
  private readonly family: ApiFamily
  /** The escaped bytes of the text values, in a buffer that doubles as it fills (up to MAX_TEXT_BYTES). */
  private text: Buffer | null = null
  private bytes = 0
  private events = 0
  private first = true
  /** The first event's JSON, parsed only when a continuation needs its id and model (most streams are never cut). */
  private head: string | null = null
  private id: string | undefined
  private model: string | undefined
  private created: number | undefined
  /** Anthropic: the last content block started, and whether it is still open. */
  private blockIndex = -1
  private blockOpen = false
  /** A line begun in an earlier chunk. */
  private carried: Buffer | null = null
  /** OpenAI: where the last text delta began in its data line (-1: none yet). */
  private deltaAt = -1

  constructor(family: ApiFamily) {
    this.family = family
  }

  /** Reads a chunk already sent to the client. */
  push(chunk: Buffer): void {
    if (!this.continuable) return
    let data = chunk
    if (this.carried !== null) {
      data = Buffer.concat([this.carried, chunk])
      this.carried = null
    }
    let pos = 0
    const length = data.length
    while (pos < length) {
      // A blank line (between events): nothing to search.
      if (data[pos] === NEWLINE) {
        pos++
        continue
      }
      const eol = data.indexOf(NEWLINE, pos)
      if (eol === -1) {
        if (length - pos > MAX_CARRIED_LINE) this.continuable = false
        else this.carried = data.subarray(pos)
        return
      }
      if (DATA.isAt(data, pos)) this.line(data, pos + DATA.length, eol)
      if (!this.continuable) return
      pos = eol + 1
    }
  }

  /** Where the stream stands (resume undefined: no event reached the client yet), or null when it cannot be continued. */
  point(): ResumePoint | null {
    if (!this.continuable) return null
    let text = ''
    if (this.text !== null && this.bytes > 0) {
      try {
        text = JSON.parse(`"${this.text.toString('utf8', 0, this.bytes)}"`) as string
      } catch {
        // Text that is not a valid JSON string (a raw control character, a bad escape): nothing to continue from.
        return null
      }
    }
    if (this.first) return { text, events: 0, id: undefined, model: undefined, resume: undefined }
    if (this.head !== null) {
      this.readHead(this.head)
      this.head = null
      if (!this.continuable) return null
    }
    const resume: EncoderResume = {}
    if (this.created !== undefined) resume.created = this.created
    if (this.blockIndex >= 0) resume.block = { index: this.blockIndex, type: 'text', open: this.blockOpen }
    return { text, events: this.events, id: this.id, model: this.model, resume }
  }

  private line(data: Buffer, start: number, end: number): void {
    // (An Anthropic stream's head is its message_start: a ping before it, a gateway's keep-alive its hold did not
    // recognise, starts nothing, and a continuation then opens the message.)
    if (this.first && (this.family !== 'anthropic' || MESSAGE_START.indexIn(data, start, end) !== -1)) {
      this.first = false
      this.head = data.toString('utf8', start, end)
    }
    // Most lines are plain text deltas, recognised by their shape without looking for anything else in them.
    if (this.family === 'openai') {
      // One upstream writes its chunks alike (same id, model, fields): the text delta is where it was in the last one.
      const guess = start + this.deltaAt
      const at =
        this.deltaAt >= 0 && guess + TEXT_DELTA.length <= end && TEXT_DELTA.isAt(data, guess) ? guess : TEXT_DELTA.indexIn(data, start, end)
      if (at !== -1) {
        this.deltaAt = at - start
        const from = at + TEXT_DELTA.length
        const close = closingQuote(data, from, end)
        if (close !== -1 && data[close + 1] === CLOSE_BRACE) {
          this.keep(data, from, close)
          return
        }
      }
    } else if (this.family === 'anthropic') {
      const value = this.textValue(data, start, end)
      if (value !== null) {
        this.keep(data, value[0], value[1])
        return
      }
    }
    for (const needle of NOT_TEXT[this.family]) {
      if (present(needle, NOT_TEXT_KEYS[this.family], data, start, end)) {
        this.continuable = false
        return
      }
    }
    if (this.family === 'anthropic') {
      this.trackBlocks(data, start, end)
      return
    }
    if (this.family === 'gemini') {
      this.keepParts(data, start, end)
      return
    }
    const value = this.textValue(data, start, end)
    if (value !== null) this.keep(data, value[0], value[1])
  }

  /** The escaped text value of an OpenAI delta's content or an Anthropic text delta, [start, end) of its string, or null. */
  private textValue(data: Buffer, start: number, end: number): [number, number] | null {
    if (this.family === 'anthropic') {
      // `"type":"text_delta","text":"…"`: the value is that of the "text" key after the marker.
      const marker = TEXT_DELTA_TYPE.indexIn(data, start, end)
      if (marker === -1) return null
      const at = TEXT.indexIn(data, marker + TEXT_DELTA_TYPE.length, end)
      return at === -1 ? null : stringValueAfterKey(data, at + TEXT.length, end)
    }
    const at = CONTENT.indexIn(data, start, end)
    return at === -1 ? null : stringValueAfterKey(data, at + CONTENT.length, end)
  }

  /**
   * Gemini: the text of every part of the candidate's content, in order (a chunk may hold several; `.text` joins them).
   * The parts array is walked to its end, its strings skipped whole: only a part's own "text" key is answer text.
   */
  private keepParts(data: Buffer, start: number, end: number): void {
    const key = PARTS.indexIn(data, start, end)
    if (key === -1) return
    let pos = valueAfterKey(data, key + PARTS.length, end)
    if (pos === -1 || data[pos] !== OPEN_BRACKET) return
    // 1: in the parts array; 2: in one part.
    let depth = 0
    for (; pos < end; pos++) {
      const byte = data[pos]
      if (byte === QUOTE) {
        if (depth === 2 && TEXT.isAt(data, pos)) {
          const value = stringValueAfterKey(data, pos + TEXT.length, end)
          if (value !== null) {
            this.keep(data, value[0], value[1])
            pos = value[1]
            continue
          }
        }
        pos = closingQuote(data, pos + 1, end)
        if (pos === -1) return
      } else if (byte === OPEN_BRACE || byte === OPEN_BRACKET) depth++
      else if ((byte === CLOSE_BRACE || byte === CLOSE_BRACKET) && --depth === 0) return
    }
  }

  /** Keeps the escaped bytes [from, to) of a text value, byte for byte (decoded once, if ever needed). */
  private keep(data: Buffer, from: number, to: number): void {
    const length = to - from
    if (length > 0) {
      const total = this.bytes + length
      if (total > MAX_TEXT_BYTES) {
        this.continuable = false
        this.text = null
        return
      }
      let text = this.text
      if (text === null || total > text.length) {
        // Outside Buffer's shared pool: a stream's text must not keep a pool slab alive.
        const grown = Buffer.allocUnsafeSlow(Math.min(MAX_TEXT_BYTES, Math.max(256, total * 2)))
        if (text !== null) text.copy(grown, 0, 0, this.bytes)
        this.text = text = grown
      }
      // A token's few bytes by hand: Buffer#copy with offsets allocates a view per call (~100 B a chunk of garbage).
      if (length <= SHORT_COPY) for (let i = 0, at = this.bytes; i < length; i++) text[at + i] = data[from + i] as number
      else data.copy(text, this.bytes, from, to)
      this.bytes = total
      // An empty value (the role chunk's `"content":""`) is no generated token: the continuation's cap counts these.
      this.events++
    }
  }

  /** The first event: the id, model and creation time the client saw (parsed once, when a continuation asks). */
  private readHead(json: string): void {
    try {
      const event = JSON.parse(json) as {
        id?: unknown
        model?: unknown
        created?: unknown
        message?: { id?: unknown; model?: unknown }
        responseId?: unknown
        modelVersion?: unknown
      }
      // OpenAI chunks name them id/model; Anthropic's message_start in its message; Gemini responseId/modelVersion.
      const source = this.family === 'anthropic' && event.message !== undefined ? event.message : event
      const id = this.family === 'gemini' ? event.responseId : source.id
      const model = this.family === 'gemini' ? event.modelVersion : source.model
      if (typeof id === 'string') this.id = id
      if (typeof model === 'string') this.model = model
      if (typeof event.created === 'number') this.created = event.created
    } catch {
      this.continuable = false
    }
  }

  private trackBlocks(data: Buffer, start: number, end: number): void {
    if (BLOCK_START.indexIn(data, start, end) !== -1) {
      this.blockIndex++
      this.blockOpen = true
      return
    }
    if (BLOCK_STOP.indexIn(data, start, end) !== -1) this.blockOpen = false
  }
}

/** After a key (just past its closing quote): where its value begins, past `:` and blanks, or -1. */
function valueAfterKey(data: Buffer, from: number, end: number): number {
  let pos = from
  while (pos < end && data[pos] !== COLON) {
    if (data[pos] !== 0x20 && data[pos] !== 0x09) return -1
    pos++
  }
  pos++
  while (pos < end && (data[pos] === 0x20 || data[pos] === 0x09)) pos++
  return pos < end ? pos : -1
}

/** After a key (just past its closing quote): `: "…"` → the string's escaped content [start, end), or null. */
function stringValueAfterKey(data: Buffer, from: number, end: number): [number, number] | null {
  const pos = valueAfterKey(data, from, end)
  if (pos === -1 || data[pos] !== QUOTE) return null
  const close = closingQuote(data, pos + 1, end)
  return close === -1 ? null : [pos + 1, close]
}

/**
 * Whether `needle` is in [start, end) as JSON, other than as a key whose value is null; `keyOnly`: as a key, not as
 * a string value (a delta whose whole text is `reasoning`). Escaped, it is inside a string: answer text that quotes
 * `"thought"` or `"tool_calls"` is neither.
 */
function present(needle: ByteNeedle, keyOnly: boolean, data: Buffer, start: number, end: number): boolean {
  for (let at = needle.indexIn(data, start, end); at !== -1; at = needle.indexIn(data, at + needle.length, end)) {
    if (at > start && data[at - 1] === BACKSLASH) continue
    const value = valueAfterKey(data, at + needle.length, end)
    if (value === -1 ? !keyOnly : !NULL.isAt(data, value)) return true
  }
  return false
}

/**
 * The quote that closes a JSON string whose content starts at `start` (one not escaped by a backslash), or -1. A loop
 * over the bytes: a token's string is a few bytes, shorter than what a call to `indexOf` costs.
 */
function closingQuote(data: Buffer, start: number, end: number): number {
  for (let i = start; i < end; i++) {
    const byte = data[i]
    if (byte === QUOTE) return i
    // An escape: the byte after the backslash is part of it (an escaped quote or backslash included).
    if (byte === BACKSLASH) i++
  }
  return -1
}
