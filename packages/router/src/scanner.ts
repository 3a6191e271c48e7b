import { ByteNeedle, errors, keptTail, type LlmProxyError } from '@llmproxy/core'
import { type Endpoint, statusOfUpstreamError, type UsageExtractor } from '@llmproxy/protocols'
import { KeySearch, NeedleSearch } from './stream-search.js'

const DATA_PREFIX = 'data:'
/** An SSE data field at a line's start (what every wire format's events carry). */
export const DATA_FIELD = new ByteNeedle(DATA_PREFIX)
const SPACE = 0x20
const NEWLINE = 0x0a
const CR = 0x0d
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const DONE_LENGTH = '[DONE]'.length
const LINE_END = Buffer.from('\n')
/** `data: [DONE]` (with an optional CR) is 14 bytes at most; a split line longer than this is neither it nor a field name. */
const SPLIT_HEAD_MAX = 16
/**
 * How much of a line split across chunks is kept, to be checked whole for an error (`{"error"`, `event: error`, a
 * failed finish) once its end comes (a vLLM abort chunk is ~200 bytes, OpenRouter's error chunk a few hundred); of a
 * longer one, its start: an error is known by its opening.
 */
const SPLIT_LINE_MAX = 4096
const SPLIT_DONE_LINE = /^data: ?\[DONE\]\r?$/
/**
 * An upstream's error inside a stream: a data line `{"error":…}` (OpenAI, vLLM, Gemini), an `event: error`
 * (Anthropic), or (OpenAI's format) a chunk whose finish reason says the generation failed (see `failedFinishLine`).
 */
const ERROR_OBJECT = new ByteNeedle('{"error"')
const ERROR_EVENT = new ByteNeedle('event: error')
const LETTER_E = 0x65
const ERROR_MESSAGE = /"message"\s*:\s*"((?:[^"\\]|\\.)*)"/
/** An error's name: Anthropic's `type`, Gemini's `status`, OpenAI's `code` or `type`. */
const ERROR_NAME = /"(?:type|status|code)"\s*:\s*"(\w+)"/g
/**
 * An error's HTTP status, where the upstream puts it in the event: vLLM's, OpenRouter's and Gemini's numeric `code`.
 * (TGI's `http_status_code` is not one: TGI writes 422 into every stream error, whatever failed.)
 */
const ERROR_STATUS = /"code"\s*:\s*([45]\d\d)\b/

/** An upstream's error event, read when it came before any byte of the answer reached the client. */
export interface UpstreamErrorEvent {
  /** The HTTP status the error stands for: its numeric code, else its name's (`overloaded_error`); undefined: neither. */
  readonly status: number | undefined
  /** The error as the gateway reports it: the upstream's message, with that status (502 without one). */
  readonly error: LlmProxyError
  /**
   * The event's data line (its JSON): what the upstream answers an error with before a stream (vLLM's
   * `{"error":{…,"code":400}}`, Anthropic's `{"type":"error",…}`); '' when that line is not whole in the chunk.
   */
  readonly json: string
}

/**
 * Reads one upstream attempt's SSE bytes beside the relay, chunk by chunk, without parsing JSON: counts the data
 * events (the estimate when no usage is reported), checks their shape, finds the stream's terminator across chunk
 * boundaries, and says which chunks the usage tap may skip. O(1) state: the start of a line split across chunks (up
 * to SPLIT_LINE_MAX), and per terminator the bytes of it matched so far.
 */
export class StreamScanner {
  /** Data events seen (a `data:` field at a line start). */
  dataEvents = 0
  /** The endpoint's terminator went by: the stream is complete. */
  sawTerminator = false
  /** A finish was reported (a non-null finish reason): a clean end after it is complete too, terminator or not. */
  sawFinish = false
  /**
   * Where the usage readers must start reading the chunk just scanned: the bytes before it are whole lines whose
   * every object ends with its usage set to null (see `scan`); the chunk's length when none of it reports usage.
   */
  tapFrom = 0
  private readonly endpoint: Endpoint
  private readonly extractor: UsageExtractor
  /** A `data: [DONE]` line went by (found while walking the events). */
  private sawDone = false
  /** The last chunk ended inside a line (the next one starts mid-line). */
  private midLine = false
  /**
   * The first bytes of a line split across chunks, while they are few (`SPLIT_HEAD_MAX`): enough to finish its
   * field name or to recognise `data: [DONE]`. null: the line is longer than that.
   */
  private lineHead: string | null = null
  /**
   * The bytes so far of a line split across chunks, its first SPLIT_LINE_MAX at most (null: none, or too long when it
   * began): checked for an error (`{"error"`, `event: error`, a failed finish) when its end comes. Its own bytes
   * (`keptTail`), not a view of the read it came in.
   */
  private splitLine: Buffer | null = null
  private readonly terminators: NeedleSearch
  /** Where the terminators are JSON keys (Gemini's): found only as deep as they end the stream. null: they are not. */
  private readonly terminatorKeys: KeySearch | null
  private readonly finishes: NeedleSearch
  /** The chunks so far end with a blank line: the last event is complete. */
  atEventEnd = false
  /** The first bytes of a finish value cut by the last chunk's end, while they cannot tell a finish from an error. */
  private finishValueHead: string | null = null
  /** Where in the chunk just scanned an upstream error event starts (-1: none); the scan stops there. */
  errorAt = -1
  /** The format's finish reason can say the generation failed (OpenAI's: vLLM, OpenRouter), not only how it ended. */
  private readonly findsFailedFinishes: boolean
  /** Where the chunk just scanned has a line with a failed finish (-1: none), and that finish (`abort`, `error`). */
  private failedLine = -1
  private failedReason = ''
  /** Where the lines of the chunk being scanned start (after the end of a line begun in an earlier chunk). */
  private linesFrom = 0
  /**
   * The error event's bytes when its line began in an earlier chunk (split across reads): that line's start, then
   * this chunk (Anthropic's data line follows its `event: error` line); errorAt is then 0. null: the event is in the
   * chunk, at errorAt.
   */
  private splitErrorLine: Buffer | null = null
  /**
   * The chunk `scan` searched for finish markers (null: none was), and whether none was in it: `checkEnd` need not
   * search that chunk again (one search per chunk, not two).
   */
  private searched: Buffer | null = null
  private noFinishMarker = false
  /** The chunks so far end with a line end. */
  private atLineStart = true

  constructor(endpoint: Endpoint, extractor: UsageExtractor) {
    this.endpoint = endpoint
    this.extractor = extractor
    const keys = endpoint.terminatorDepth > 0
    this.terminators = new NeedleSearch(keys ? NO_NEEDLES : endpoint.terminators)
    this.terminatorKeys = keys ? new KeySearch(endpoint.terminators, endpoint.terminatorDepth) : null
    this.finishes = new NeedleSearch(endpoint.finishMarkers)
    this.findsFailedFinishes = endpoint.family === 'openai' && endpoint.finishMarkers.length > 0
  }

  /** The stream ended with a terminator that says the upstream failed the answer (the endpoint's `failedEnds`). */
  get failedEnd(): boolean {
    const found = this.terminators.found
    return this.sawTerminator && found !== null && this.endpoint.failedEnds.includes(found)
  }

  /** The stream may end here as a complete answer: its terminator, or a finish (the client then gets `closing`). */
  get complete(): boolean {
    return this.sawTerminator || this.sawFinish
  }

  /**
   * Counts the chunk's data events and checks their shape: every wire format here sends one JSON object (or
   * `[DONE]`) per data line. Lines are walked from their starts (a `data:` inside a JSON string is not a field);
   * only each data line's first and last bytes are looked at, not parsed. A line split across chunks is counted
   * (and known when it is `[DONE]`) but not checked. Also sets `tapFrom`: the start of the first line that may
   * report usage, after whole lines whose every JSON object ends with the usage key set to null (OpenAI and vLLM
   * with include_usage, every chunk but the last).
   * Returns false when a data line is malformed.
   */
  scan(chunk: Buffer): boolean {
    const length = chunk.length
    if (length > 0) this.atEventEnd = endsBlankLine(chunk, this.atLineStart)
    this.atLineStart = length === 0 ? this.atLineStart : chunk[length - 1] === NEWLINE
    const extractor = this.extractor
    let pos = 0
    this.errorAt = -1
    this.splitErrorLine = null
    this.searched = null
    // Until a line that may report usage is found, the whole chunk is skipped (not at all when it starts mid-line).
    let skipping = !this.midLine
    this.tapFrom = skipping ? length : 0
    if (this.midLine) {
      // The rest of a line begun in an earlier chunk.
      const eol = chunk.indexOf(NEWLINE)
      const head = this.lineHead
      if (head !== null) {
        const end = eol === -1 ? length : eol
        const line = head.length + end <= SPLIT_HEAD_MAX ? head + chunk.toString('latin1', 0, end) : null
        // Its data event is counted once its field name is whole: now, if it was not at the split.
        if (head.length < DATA_FIELD.length && (line === null || line.length >= DATA_FIELD.length || eol !== -1)) {
          if ((line ?? head + chunk.toString('latin1', 0, DATA_FIELD.length)).startsWith(DATA_PREFIX)) this.dataEvents++
        }
        if (eol !== -1 && line !== null && SPLIT_DONE_LINE.test(line)) this.sawDone = true
        this.lineHead = line
      }
      const split = this.splitLine
      if (split !== null) {
        const end = eol === -1 ? length : eol + 1
        // Past SPLIT_LINE_MAX only the line's start is kept (and no longer copied): an error is known by its opening.
        const whole = split.length + end <= SPLIT_LINE_MAX
        const line =
          split.length >= SPLIT_LINE_MAX ? split : Buffer.concat([split, chunk.subarray(0, whole ? end : SPLIT_LINE_MAX - split.length)])
        this.splitLine = eol === -1 && this.mayFail(line, 0) ? keptTail(line) : null
        // Its start was held (a same-format event goes out whole), its end is here: an error line is not relayed.
        if (eol !== -1 && this.isSplitErrorLine(line)) {
          // The event's bytes: the line, then the rest of the chunk (Anthropic's data line follows its event line).
          const event = whole ? Buffer.concat([split, chunk]) : line
          if (DATA_FIELD.isAt(line, 0)) {
            this.splitErrorLine = event
            return this.errorLineAt(0)
          }
          if (!this.awaitsErrorData(event)) {
            this.splitErrorLine = event
            this.errorAt = 0
          }
          return true
        }
      }
      if (eol === -1) return true
      pos = eol + 1
      this.midLine = false
    }
    const failedLine = this.failedFinishLine(chunk, pos)
    while (pos < length) {
      const eol = chunk.indexOf(NEWLINE, pos)
      const data = DATA_FIELD.isAt(chunk, pos)
      if (data) this.dataEvents++
      if (eol === -1) {
        // A failed finish whose line end is still to come: its marker and value are in this chunk.
        if (data && pos === failedLine) return this.errorLineAt(pos)
        const kept = length - pos <= SPLIT_LINE_MAX && this.mayFail(chunk, pos)
        // An error event too, where the line is not kept to be read whole when its end comes (its message with it).
        if (data && !kept && opensErrorObject(chunk, dataValueAt(chunk, pos))) return this.errorLineAt(pos)
        this.midLine = true
        if (skipping) this.tapFrom = pos
        this.lineHead = length - pos <= SPLIT_HEAD_MAX ? chunk.toString('latin1', pos) : null
        this.splitLine = kept ? keptTail(chunk, pos) : null
        return true
      }
      if (!data && chunk[pos] === LETTER_E && ERROR_EVENT.isAt(chunk, pos)) {
        if (this.awaitsErrorData(chunk.subarray(pos))) {
          this.midLine = true
          if (skipping) this.tapFrom = pos
        } else this.errorAt = pos
        return true
      }
      if (data) {
        const start = dataValueAt(chunk, pos)
        if (pos === failedLine || opensErrorObject(chunk, start)) return this.errorLineAt(pos)
        let last = eol - 1
        if (chunk[last] === CR) last--
        if (last >= start) {
          const first = chunk[start]
          const end = chunk[last]
          if (first === OPEN_BRACKET && end === CLOSE_BRACKET) {
            if (last - start === DONE_LENGTH - 1) this.sawDone = true
          } else if (first !== OPEN_BRACE || end !== CLOSE_BRACE) return false
          else if (skipping && !extractor.endsWithNullReport(chunk, last)) {
            skipping = false
            this.tapFrom = pos
          }
        }
      }
      pos = eol + 1
    }
    return true
  }

  /**
   * Whether the whole `event: error` line that `event` starts with comes without its data line whole (the error's
   * type and message: Anthropic's overloaded_error): the event is then kept as the line split across chunks, and read
   * whole when the data line ends. Not when it would reach SPLIT_LINE_MAX (read as far as it came).
   */
  private awaitsErrorData(event: Buffer): boolean {
    if (event.indexOf(NEWLINE, event.indexOf(NEWLINE) + 1) !== -1 || event.length >= SPLIT_LINE_MAX) return false
    this.lineHead = null
    this.splitLine = keptTail(event)
    return true
  }

  /**
   * Whether the line at `pos`, cut by the chunk's end, may turn out an error event, so that it is kept for its end:
   * where a finish can fail, any line; elsewhere one that opens as an error, or is too short yet to tell.
   */
  private mayFail(chunk: Buffer, pos: number): boolean {
    if (this.findsFailedFinishes || chunk.length - pos < SPLIT_HEAD_MAX) return true
    return DATA_FIELD.isAt(chunk, pos) ? opensErrorObject(chunk, dataValueAt(chunk, pos)) : ERROR_EVENT.isAt(chunk, pos)
  }

  /** The data line at `pos` is an upstream error event: the scan stops there. */
  private errorLineAt(pos: number): true {
    // An error is no token of the answer (counted as a data line before it was known).
    this.dataEvents--
    this.errorAt = pos
    return true
  }

  /**
   * Whether a line split across chunks, whole now (its line end included; of a longer one, its first SPLIT_LINE_MAX
   * bytes), is an error event: a data line that opens with `{"error"`, an `event: error` line, or (where a finish can
   * fail) a data line with a failed finish.
   */
  private isSplitErrorLine(line: Buffer): boolean {
    if (!DATA_FIELD.isAt(line, 0)) return ERROR_EVENT.isAt(line, 0)
    if (opensErrorObject(line, dataValueAt(line, 0))) return true
    if (!this.findsFailedFinishes) return false
    this.linesFrom = 0
    if (this.finishes.indexIn(line, this.acceptFailedFinish) === -1) return false
    this.failedLine = 0
    return true
  }

  /**
   * Where the first line from `from` on whose finish reason says the generation failed starts (-1: none): vLLM's
   * `abort` (an aborted request), `error` (vLLM's engine, OpenRouter's error chunk: `{…,"error":{…},"choices":[{…,
   * "finish_reason":"error"}]}`). Such a line is the upstream's error event, never part of the answer. Found by the
   * search for the finish markers (one probe byte per chunk, a look at the value past a non-null finish), not by
   * parsing the chunk. A line whose end is in a later chunk is one when its marker and value are in this chunk; a
   * line begun in an earlier chunk is checked whole when its end comes (`isSplitErrorLine`, up to SPLIT_LINE_MAX).
   */
  private failedFinishLine(chunk: Buffer, from: number): number {
    if (!this.findsFailedFinishes) return -1
    this.linesFrom = from
    this.searched = chunk
    this.noFinishMarker = true
    // The whole chunk is searched (checkEnd reuses the search); a line begun before `from` was checked whole.
    const at = this.finishes.indexIn(chunk, this.acceptFailedFinish)
    this.failedLine = at === -1 ? -1 : chunk.lastIndexOf(NEWLINE, at) + 1
    return this.failedLine
  }

  private readonly acceptFailedFinish = (chunk: Buffer, after: number): boolean => {
    this.noFinishMarker = false
    const value = chunk.toString('latin1', after, after + NOT_FINISH_LENGTH)
    if (!NOT_FINISHES.includes(value) || chunk.lastIndexOf(NEWLINE, after) + 1 < this.linesFrom) return false
    this.failedReason = value.slice(0, -1)
    return true
  }

  /**
   * The upstream error event found in `chunk` (at `errorAt`) as the client's in-band error (the client reads the
   * stream already): its message, and the status its error's name stands for (502 for any other).
   */
  upstreamError(chunk: Buffer): LlmProxyError {
    const event = this.errorEventText(chunk)
    const message = this.errorMessage(event, ' mid-stream')
    const status = namedStatus(event)
    return status === undefined ? errors.upstreamFailed(message) : errors.upstreamFailedInBand(status, message)
  }

  /**
   * The upstream error event found in `chunk` (at `errorAt`) when nothing of the answer reached the client yet: the
   * error the upstream would have answered before its stream, with the status it says (vLLM's `"code":400`,
   * Anthropic's `overloaded_error`).
   */
  errorEvent(chunk: Buffer): UpstreamErrorEvent {
    const json = this.errorData(chunk)
    const event = json === '' ? this.errorEventText(chunk) : json
    const message = this.errorMessage(event, '')
    let status: number | undefined
    if (json !== '') {
      const code = ERROR_STATUS.exec(json)
      status = code === null ? namedStatus(json) : Number(code[1])
    }
    return { status, error: status === undefined ? errors.upstreamFailed(message) : errors.upstreamFailedInBand(status, message), json }
  }

  /**
   * The error event (in `chunk` at errorAt, or its split line joined): up to its blank line, at most 4 KB (its
   * message and name come first).
   */
  private errorEventText(chunk: Buffer): string {
    const bytes = this.splitErrorLine ?? chunk
    const blank = bytes.indexOf('\n\n', this.errorAt)
    const end = Math.min(blank === -1 ? bytes.length : blank, this.errorAt + 4096)
    return bytes.toString('utf8', this.errorAt, end)
  }

  /** The error event's data line (Anthropic's follows its `event: error` line), when it is whole; else ''. */
  private errorData(chunk: Buffer): string {
    const bytes = this.splitErrorLine ?? chunk
    let at = this.errorAt
    if (!DATA_FIELD.isAt(bytes, at)) {
      // Anthropic's: the line after its `event: error`.
      at = bytes.indexOf(NEWLINE, at) + 1
      if (at === 0 || !DATA_FIELD.isAt(bytes, at)) return ''
    }
    const eol = bytes.indexOf(NEWLINE, at)
    if (eol === -1) return ''
    const start = dataValueAt(bytes, at)
    return bytes.toString('utf8', start, bytes[eol - 1] === CR ? eol - 1 : eol)
  }

  /** What the error event says (`when`: ' mid-stream' once the client reads the answer): the upstream's message, or the failed finish. */
  private errorMessage(event: string, when: string): string {
    const found = ERROR_MESSAGE.exec(event)
    if (found !== null) {
      try {
        return `The upstream reported an error${when}: ${JSON.parse(`"${found[1]}"`) as string}`
      } catch {}
    }
    if (this.errorAt === this.failedLine) return `The upstream ended the generation with finish_reason ${this.failedReason}.`
    return `The upstream reported an error${when}.`
  }

  /**
   * The stream ended cleanly inside a line: the line ends there (a last `data: [DONE]` without its line end is the
   * terminator all the same).
   */
  endLine(): void {
    if (this.midLine) this.scan(LINE_END)
  }

  /** Notes whether this (already scanned) chunk holds the endpoint's terminator or a finish, or completes one begun before it. */
  checkEnd(chunk: Buffer): void {
    // Let go of the chunk: held until the next one (a second, in a slow stream), it would outlive the young
    // generation, and its socket read with it, until a full GC (megabytes with thousands of streams open).
    const searched = this.searched
    this.searched = null
    if (this.sawTerminator) return
    const keys = this.terminatorKeys
    if (this.endpoint.endsWithDone) this.sawTerminator = this.sawDone
    else this.sawTerminator = keys === null ? this.terminators.foundIn(chunk) : keys.foundIn(chunk)
    if (this.sawFinish) return
    const head = this.finishValueHead
    if (head !== null) {
      // A finish value cut by the last chunk's end: decided with this chunk's first bytes.
      this.finishValueHead = null
      this.sawFinish = this.isFinishValue(head + chunk.toString('latin1', 0, NOT_FINISH_LENGTH - head.length))
    }
    if (!this.sawFinish) this.sawFinish = this.finishes.foundIn(chunk, this.acceptFinish, chunk === searched && this.noFinishMarker)
  }

  /**
   * A finish marker's value is a finish unless it is `abort` or `error` (Anthropic's `end_turn` starts as `error`
   * does: the word is compared). A value the chunk cuts before it can tell is held for the next chunk.
   */
  private readonly acceptFinish = (chunk: Buffer, after: number): boolean => {
    return this.isFinishValue(chunk.toString('latin1', after, Math.min(chunk.length, after + NOT_FINISH_LENGTH)))
  }

  /** Decides on a value's first bytes; false and held (finishValueHead) while they cannot tell yet. */
  private isFinishValue(head: string): boolean {
    if (!mayNotFinish(head)) return true
    if (head.length < NOT_FINISH_LENGTH) this.finishValueHead = head
    return false
  }
}

/** Where the value of the data line at `pos` starts: after `data:` and the space that may follow it. */
function dataValueAt(chunk: Buffer, pos: number): number {
  const start = pos + DATA_FIELD.length
  return chunk[start] === SPACE ? start + 1 : start
}

/** Whether a data line's value at `start` opens with `{"error"` (OpenAI's, vLLM's, Gemini's error event). */
function opensErrorObject(chunk: Buffer, start: number): boolean {
  return chunk[start] === OPEN_BRACE && ERROR_OBJECT.isAt(chunk, start)
}

/** The status an error's name in the event stands for, among those a client treats apart (overloaded, rate limited). */
function namedStatus(event: string): number | undefined {
  for (const name of event.matchAll(ERROR_NAME)) {
    const status = statusOfUpstreamError(name[1] as string)
    if (status !== undefined) return status
  }
  return undefined
}

/** The finish values that end nothing complete: vLLM's `abort`, and `error` (with their closing quote). */
/** The terminators' search where they are JSON keys (KeySearch finds them): none. */
const NO_NEEDLES: readonly ByteNeedle[] = []

const NOT_FINISHES = ['abort"', 'error"']
const NOT_FINISH_LENGTH = 6

/** Whether a finish value's first bytes (all of it, or as far as a chunk went) may still be one of NOT_FINISHES. */
function mayNotFinish(head: string): boolean {
  return NOT_FINISHES.some((word) => word.startsWith(head))
}

/** Whether the stream ends with a blank line after this chunk (`lineStartBefore`: the chunks before it ended with a line end). */
function endsBlankLine(chunk: Buffer, lineStartBefore: boolean): boolean {
  let i = chunk.length - 1
  if (chunk[i] !== NEWLINE) return false
  i--
  if (i >= 0 && chunk[i] === CR) i--
  return i < 0 ? lineStartBefore : chunk[i] === NEWLINE
}
