import type { EventEmitter } from 'node:events'
import { type IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import type { MockFault } from './behavior.js'
import type { Fields } from './content.js'
import type { Answer, Wire } from './wires.js'

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
  /** The request body when it is a JSON object. */
  body: Fields = {}
  model = ''
  modelJson = '""'
  id = ''
  created = 0
  promptTokens = 0
  tokens = 8
  /** The request's max-tokens field stopped the generation ('length'). */
  capped = false
  includeUsage = false
  usage = true
  ttft = 0
  gap = 0
  status = 0
  retryAfter = -1
  errorCode: string | null = null
  fault: MockFault | null = null
  faultAfter = 2
  /** Token index at which `cut` / `stall` / `malformed` fires (-1: none pending). */
  faultAt = -1

  /** Index of the next token to write. */
  next = 0
  /** Event counter for wire formats that number their events (OpenAI Responses). */
  eventSeq = 0
  /** Per-request text before and after the token in a token event, built by the wire at `open`. */
  prefix = ''
  suffix = ''

  timer: NodeJS.Timeout | null = null
  /** The mock has finished its answer (or ended the connection on purpose). */
  done = false

  constructor(owner: JobOwner, req: MockRequest, res: MockResponse, rec: RecordedRequest) {
    this.owner = owner
    this.req = req
    this.res = res
    this.rec = rec
  }

  /** Ends the connection with a TCP reset (the `reset-before-headers` and `cut` faults). */
  reset(): void {
    this.done = true
    this.req.socket.resetAndDestroy()
  }

  /** Answers at once with a complete body. */
  sendBody(status: number, contentType: string, text: string, retryAfter = -1): void {
    this.done = true
    const headers: Record<string, string | number> = { 'content-type': contentType, 'content-length': Buffer.byteLength(text) }
    if (retryAfter >= 0) headers['retry-after'] = retryAfter
    this.res.writeHead(status, headers)
    this.res.end(text)
  }

  /** Sends the streamed answer's headers at once, then waits for the first token. */
  startStream(wire: Wire): void {
    this.res.writeHead(200, wire.headers)
    this.res.flushHeaders()
    this.timer = setTimeout(firstToken, this.ttft, this)
  }

  /** Waits for the non-streamed answer to be ready (or for the fault to fire). */
  startAnswer(): void {
    const fault = this.fault
    const tokensDue = fault === 'cut' || fault === 'stall' ? Math.min(this.faultAfter, this.tokens) : this.tokens
    this.timer = setTimeout(sendAnswer, this.ttft + tokensDue * this.gap, this)
  }

  /** Writes every event that is due, then schedules the next token, or ends the stream. */
  pump(wire: Wire, first: boolean): void {
    this.timer = null
    const res = this.res
    res.cork()
    if (first) wire.open(this)
    const tokens = this.tokens
    let next = this.next
    for (;;) {
      if (next === this.faultAt) {
        this.faultAt = -1
        if (this.fault === 'cut' || this.fault === 'stall') {
          this.next = next
          res.uncork()
          if (this.fault === 'cut') this.timer = setTimeout(cut, CUT_GRACE_MS, this)
          return
        }
        res.write(wire.malformed)
      }
      if (next === tokens) {
        wire.finish(this, this.fault !== 'no-done')
        this.done = true
        res.end()
        break
      }
      res.write(wire.token(this, next))
      this.rec.chunkTimes.push(performance.now())
      next++
      if (this.gap > 0) {
        this.timer = setTimeout(nextToken, this.gap, this)
        break
      }
    }
    this.next = next
    res.uncork()
  }

  /** Called when the response or its connection closed. */
  closed(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
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

/** The non-streamed answer, or its fault: `malformed` sends broken JSON, `cut` / `stall` send half the body. */
function sendAnswer(job: Job): void {
  job.timer = null
  const format = job.answer
  if (format === null) return
  const fault = job.fault
  if (fault === 'malformed') {
    job.sendBody(200, JSON_TYPE, '{not json')
    return
  }
  const text = JSON.stringify(format.body(job))
  if (fault !== 'cut' && fault !== 'stall') {
    job.sendBody(200, JSON_TYPE, text)
    return
  }
  const res = job.res
  res.writeHead(200, { 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(text) })
  res.write(text.slice(0, text.length >> 1))
  if (fault === 'cut') job.timer = setTimeout(cut, CUT_GRACE_MS, job)
}

function cut(job: Job): void {
  job.timer = null
  job.reset()
}
