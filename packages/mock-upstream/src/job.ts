import type { EventEmitter } from 'node:events'
import { type IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import { createGzip, type Gzip, gzipSync, constants as zlib } from 'node:zlib'
import type { MockDialect, MockFault, MockFinish } from './behavior.js'
import { type Fields, type PlannedToolCall, type Vocabulary, WORDS_VOCABULARY } from './content.js'
import { type ErrorShape, faultError } from './errors.js'
import type { Answer, Wire } from './wire.js'

/** One request the mock received. */
export interface RecordedRequest {
  /** 1-based number of the request since the mock started. */
  seq: number
  method: string
  /** The path, query string excluded. */
  path: string
  headers: IncomingHttpHeaders
  /** Parsed JSON, or the raw string if not JSON ('' when there was no body). */
  body: unknown
  /** performance.now() when the request arrived. */
  receivedAt: number
  /** performance.now() when each token event was written (streamed answers). */
  chunkTimes: number[]
  /** performance.now() when the connection/response closed. */
  closedAt: number | null
  /** The client went away before the mock finished its answer. */
  aborted: boolean
}

/** Events of a MockUpstream. */
export interface MockUpstreamEvents {
  /** A request was received and its body read. */
  request: [RecordedRequest]
  /** The client went away before the mock finished its answer. */
  abort: [RecordedRequest]
  /** The response or its connection closed (every request, after 'abort' if any). */
  close: [RecordedRequest]
}

/** What a Job reports to: the MockUpstream. */
export interface JobOwner extends EventEmitter<MockUpstreamEvents> {
  /** The request's body has been read. */
  requestRead(job: Job): void
}

/** The request class of the mock's server: carries its Job so that listeners need no closure. */
export class MockRequest extends IncomingMessage {
  job: Job | null = null
}

/** The response class of the mock's server: carries its Job so that listeners need no closure. */
export class MockResponse extends ServerResponse<MockRequest> {
  job: Job | null = null
}

const JSON_TYPE = 'application/json'
/**
 * The `cut` fault resets the socket this long after the last write, so the client has read what was
 * sent (a reset can make the peer drop data it has not read yet).
 */
const CUT_GRACE_MS = 20
const LINE_BREAK = /\r?\n/g
const EOLS = { lf: '\n', crlf: '\r\n', cr: '\r' } as const

/** Why the answer ends, in neutral terms: a forced finish, or what the answer did. */
export type Finish = MockFinish | 'tool_calls'

/** The state of one request: what it asked for, how to answer it, and how far the answer went. */
export class Job {
  readonly owner: JobOwner
  readonly rec: RecordedRequest
  readonly req: MockRequest
  readonly res: MockResponse
  readonly chunks: Buffer[] = []

  /** The streamed format, when the answer is streamed. */
  wire: Wire | null = null
  /** The non-streamed format, when it is not. */
  answer: Answer | null = null
  /** The error shape of the route. */
  shape: ErrorShape = 'openai'
  /** The request body when it is a JSON object. */
  body: Fields = {}
  model = ''
  modelJson = '""'
  id = ''
  created = 0
  /** Prompt tokens in all, cache reads and writes included. */
  promptTokens = 0
  cachedTokens = 0
  cacheWriteTokens = 0

  /** The answer text: `tokens` tokens from token index `from` (past 0 in a continuation) of `vocab`, cycled from `shift`. */
  vocab: Vocabulary = WORDS_VOCABULARY
  /** The behavior's literal `text`, or null for the WORDS. */
  text: string | null = null
  shift = 0
  from = 0
  tokens = 8
  /** Token `from` when a continuation starts inside it (only its rest is sent), else null; and its JSON. */
  head: string | null = null
  headJson: string | null = null
  /** Reasoning tokens before the text. */
  reasoning = 0
  /** Anthropic: a redacted_thinking block follows the thinking block. */
  redactedThinking = false
  /** Tool calls after the text, and the tokens their arguments count. */
  calls: readonly PlannedToolCall[] = []
  toolTokens = 0
  forcedFinish: MockFinish | null = null
  finish: Finish = 'stop'
  rejectPrefill = false
  includeUsage = false
  usage = true
  ttft = 0
  gap = 0
  status = 0
  retryAfter = -1
  errorCode: string | null = null
  fault: MockFault | null = null
  faultAfter = 2
  /** Step at which `cut` / `stall` / `malformed` / `error-event` fires (-1: none pending). */
  faultAt = -1
  contentEncoding: 'gzip' | 'identity' = 'identity'
  lineEnding: 'lf' | 'crlf' | 'cr' | null = null
  dialect: MockDialect = 'openai'

  /** The next step to write: reasoning tokens, then text tokens, then tool calls (`steps` in all). */
  next = 0
  steps = 0
  /** Event counter for wire formats that number or separate their events (OpenAI Responses, Gemini array). */
  eventSeq = 0
  /** Per-request text around the token in a token event, built by the wire (Gemini: `tail` after the token count). */
  prefix = ''
  suffix = ''
  tail = ''
  /** Anthropic: the kind of content block open (0 none, see anthropic.ts) and the index of the open or next block. */
  block = 0
  blockIndex = 0
  /** The line ending SSE events are written with, or null for the format's own. */
  eol: string | null = null
  /** The compressor the streamed body goes through (`contentEncoding: 'gzip'`). */
  gzip: Gzip | null = null

  timer: NodeJS.Timeout | null = null
  /** The mock has finished its answer (or ended the connection on purpose). */
  done = false

  constructor(owner: JobOwner, req: MockRequest, res: MockResponse, rec: RecordedRequest) {
    this.owner = owner
    this.req = req
    this.res = res
    this.rec = rec
  }

  /** Text token `i` as a JSON string literal (quotes included). */
  tokenJson(i: number): string {
    if (i === this.from && this.headJson !== null) return this.headJson
    const json = this.vocab.json
    return json[(i + this.shift) % json.length] as string
  }

  /** The whole answer text. */
  answerText(): string {
    const texts = this.vocab.texts
    const end = this.from + this.tokens
    let i = this.from
    let text = ''
    if (this.head !== null && i < end) {
      text = this.head
      i++
    }
    for (; i < end; i++) text += texts[(i + this.shift) % texts.length]
    return text
  }

  /** Completion tokens: reasoning, text and tool-call tokens. */
  get outputTokens(): number {
    return this.reasoning + this.tokens + this.toolTokens
  }

  /** Writes an event of the streamed answer (through the line-ending rewrite and the compressor, when asked). */
  write(event: string): void {
    const text = this.eol === null ? event : event.replace(LINE_BREAK, this.eol)
    const gzip = this.gzip
    if (gzip === null) {
      this.res.write(text)
    } else {
      gzip.write(text)
      gzip.flush(zlib.Z_SYNC_FLUSH)
    }
  }

  /** Ends the streamed answer. */
  end(): void {
    if (this.gzip !== null) this.gzip.end()
    else this.res.end()
  }

  /** Ends the connection with a TCP reset (the `reset-before-headers` and `cut` faults). */
  reset(): void {
    this.done = true
    this.req.socket.resetAndDestroy()
  }

  /** A body as sent: gzip-compressed when asked. */
  encode(text: string): Buffer {
    return this.contentEncoding === 'gzip' ? gzipSync(text) : Buffer.from(text)
  }

  /** The headers of a body of `length` bytes. */
  headers(contentType: string, length: number): Record<string, string | number> {
    const headers: Record<string, string | number> = { 'content-type': contentType, 'content-length': length }
    if (this.contentEncoding === 'gzip') headers['content-encoding'] = 'gzip'
    return headers
  }

  /** Answers at once with a complete body. */
  sendBody(status: number, contentType: string, text: string, retryAfter = -1): void {
    this.done = true
    const payload = this.encode(text)
    const headers = this.headers(contentType, payload.length)
    if (retryAfter >= 0) headers['retry-after'] = retryAfter
    this.res.writeHead(status, headers)
    this.res.end(payload)
  }

  /** Sends the streamed answer's headers at once, then waits for the first token. */
  startStream(wire: Wire): void {
    const res = this.res
    if (this.contentEncoding === 'gzip') {
      res.writeHead(200, { ...wire.headers, 'content-encoding': 'gzip' })
      this.gzip = createGzip()
      this.gzip.pipe(res)
    } else {
      res.writeHead(200, wire.headers)
    }
    res.flushHeaders()
    if (wire.sse && this.lineEnding !== null) this.eol = EOLS[this.lineEnding]
    this.timer = setTimeout(firstToken, this.ttft, this)
  }

  /** Waits for the non-streamed answer to be ready (or for the fault to fire). */
  startAnswer(): void {
    const fault = this.fault
    const early = fault === 'cut' || fault === 'stall' || fault === 'error-event'
    const stepsDue = early ? Math.min(this.faultAfter, this.steps) : this.steps
    this.timer = setTimeout(sendAnswer, this.ttft + stepsDue * this.gap, this)
  }

  /**
   * The client has not taken what is buffered for it: the stream waits for it (backpressure, as a real server's
   * generation does), else a reader that stalls would have the whole answer buffered here. A reader that keeps up
   * never waits: the timing stays as asked.
   */
  private awaitReader(wire: Wire): boolean {
    const sink = this.gzip ?? this.res
    if (!sink.writableNeedDrain) return false
    sink.once('drain', () => this.pump(wire, false))
    return true
  }

  /** Writes every event that is due, then schedules the next step, or ends the stream. */
  pump(wire: Wire, first: boolean): void {
    this.timer = null
    if (!first && this.awaitReader(wire)) return
    const res = this.res
    res.cork()
    if (first) wire.open(this)
    const steps = this.steps
    let next = this.next
    for (;;) {
      if (next === this.faultAt) {
        this.faultAt = -1
        const fault = this.fault
        if (fault === 'cut' || fault === 'stall' || fault === 'error-event') {
          this.next = next
          if (fault === 'cut') this.timer = setTimeout(cut, CUT_GRACE_MS, this)
          else if (fault === 'error-event') {
            this.write(wire.error(this))
            this.done = true
            this.end()
          }
          res.uncork()
          return
        }
        this.write(wire.malformed)
      }
      if (next === steps) {
        wire.finish(this, this.fault !== 'no-done')
        this.done = true
        // hold-open: the answer is complete, the response never ends (until the client leaves).
        if (this.fault !== 'hold-open') this.end()
        break
      }
      this.write(this.step(wire, next))
      this.rec.chunkTimes.push(performance.now())
      next++
      if (this.gap > 0) {
        this.timer = setTimeout(nextToken, this.gap, this)
        break
      }
      if (this.awaitReader(wire)) break
    }
    this.next = next
    res.uncork()
  }

  /** The event of step `i`: a reasoning token, a text token or a tool call. */
  private step(wire: Wire, i: number): string {
    const reasoning = this.reasoning
    if (i < reasoning) return wire.reasoning?.(this, i) ?? ''
    const t = i - reasoning
    if (t < this.tokens) return wire.token(this, this.from + t)
    return wire.toolCall?.(this, t - this.tokens) ?? ''
  }

  /** Called when the response or its connection closed. */
  closed(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
    this.gzip?.destroy()
    const rec = this.rec
    rec.closedAt = performance.now()
    if (!this.done) {
      rec.aborted = true
      this.owner.emit('abort', rec)
    }
    this.owner.emit('close', rec)
  }
}

function firstToken(job: Job): void {
  if (job.wire !== null) job.pump(job.wire, true)
}

function nextToken(job: Job): void {
  if (job.wire !== null) job.pump(job.wire, false)
}

/**
 * The non-streamed answer, or its fault: `malformed` sends broken JSON, `cut` / `stall` send half the body (none
 * with `faultAfter: 0`), `error-event` the error it would have sent in a stream, as an HTTP error.
 */
function sendAnswer(job: Job): void {
  job.timer = null
  const format = job.answer
  if (format === null) return
  const fault = job.fault
  if (fault === 'malformed') {
    job.sendBody(200, JSON_TYPE, '{not json')
    return
  }
  if (fault === 'error-event') {
    const error = faultError(job, job.shape)
    job.sendBody(error.status, JSON_TYPE, JSON.stringify(error.body))
    return
  }
  const text = JSON.stringify(format.body(job))
  if (fault !== 'cut' && fault !== 'stall') {
    job.sendBody(200, JSON_TYPE, text)
    return
  }
  const res = job.res
  const payload = job.encode(text)
  res.writeHead(200, job.headers(JSON_TYPE, payload.length))
  // faultAfter 0: nothing of the body (headers only), else half of it.
  res.write(payload.subarray(0, job.faultAfter === 0 ? 0 : payload.length >> 1))
  if (fault === 'cut') job.timer = setTimeout(cut, CUT_GRACE_MS, job)
}

function cut(job: Job): void {
  job.timer = null
  job.reset()
}
