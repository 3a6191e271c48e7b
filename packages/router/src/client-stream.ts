import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { errors, LlmProxyError } from '@llmproxy/core'
import type { WireFormat } from '@llmproxy/protocols'
import type { FastifyReply } from 'fastify'
import { clientResponseHeaders } from './headers.js'
import type { UpstreamBody } from './upstream-response.js'

/** How often a stalled client's progress is looked for per `clientStallMs`: it is cut at most 1/8 of it late. */
const STALL_CHECKS = 8

/**
 * The client's side of one request, across every upstream attempt: the commit point, writes with
 * backpressure, the in-band error in the client's own format, the end. Until `commit` nothing has been
 * sent and a failed attempt can still move on; after it, only this stream's bytes reach the client.
 */
export class ClientStream {
  /** The commit point is passed: the client has the status and headers (or an error answer). */
  committed = false
  private readonly reply: FastifyReply
  private readonly raw: ServerResponse
  /** The client's API: the shape of an in-band error, its heartbeat. */
  readonly wire: WireFormat
  /** Bytes written in this turn, not sent yet, and the upstream body they came from (paused if the client is slow). */
  private readonly queued: (Buffer | string)[] = []
  private source: UpstreamBody | null = null
  /**
   * The answer ends after its usage record is kept (`LlmHookRegistry.recordsKeptAtTurnEnd`): the call emits the
   * record first, and the end waits for an immediate queued after the spool's write of that turn.
   */
  readonly endsAfterRecord: boolean
  /**
   * With endsAfterRecord, the bytes of a content-length answer not written yet. At 0 (those bytes complete the answer,
   * or its end is scheduled: a stream's terminator may be queued) what is queued waits for the end. -1: no such hold.
   */
  private unwritten = -1
  /** The status the answer was committed with (0 before). */
  private committedStatus = 0
  /** How long a client may read nothing while bytes wait for it (`timeouts.clientStallMs`). */
  private readonly stallMs: number
  /**
   * The stall watch's timer: made at the first full socket, refreshed after (no allocation per full socket). It
   * fires every STALL_CHECKS-th of stallMs while bytes wait: nothing tells of a client's progress, it is looked for.
   */
  private stallTimer: NodeJS.Timeout | null = null
  private stallArmed = false
  /** Bytes (a string's characters, as Node's Writable counts them) handed to the response so far. */
  private handed = 0
  /** At the last check: what had left the response's buffers, and what of the write in flight was left. */
  private sentAtCheck = 0
  private inFlightAtCheck = 0
  /** When the client was last seen taking bytes (or the watch was armed: until then it kept up). */
  private progressAt = 0
  /** Its heartbeat while it waits for the answer's next bytes (null: none). */
  private heartbeat: NodeJS.Timeout | null = null

  constructor(reply: FastifyReply, wire: WireFormat, endsAfterRecord: boolean, stallMs: number) {
    this.reply = reply
    this.raw = reply.raw
    this.wire = wire
    this.endsAfterRecord = endsAfterRecord
    this.stallMs = stallMs
  }

  /** The client's response headers: the reply's own (x-request-id, rate limits) and the upstream's. */
  headers(upstream: IncomingHttpHeaders | null, bodyRewritten: boolean): OutgoingHttpHeaders {
    const headers = this.reply.getHeaders() as OutgoingHttpHeaders
    if (upstream !== null) Object.assign(headers, clientResponseHeaders(upstream, bodyRewritten))
    return headers
  }

  /** A stream's headers: never cached, never buffered by a reverse proxy in front. */
  streamHeaders(upstream: IncomingHttpHeaders | null): OutgoingHttpHeaders {
    // An error event may be appended or the usage chunk removed: the length is not the upstream's.
    const headers = this.headers(upstream, true)
    headers['cache-control'] = 'no-cache'
    headers['x-accel-buffering'] = 'no'
    return headers
  }

  /** The commit point: the reply is hijacked; status and headers go out with the first body bytes. */
  commit(status: number, headers: OutgoingHttpHeaders): void {
    this.committed = true
    this.committedStatus = status
    const length = headers['content-length']
    // Its last bytes complete such an answer, not its end: they wait for the end.
    if (this.endsAfterRecord && length !== undefined) this.unwritten = Number(length)
    this.reply.hijack()
    this.raw.writeHead(status, headers)
  }

  /** The commit point of a stream, which may stay open for minutes. */
  commitStream(status: number, headers: OutgoingHttpHeaders): void {
    this.commit(status, headers)
    // Node keeps the header block it built for as long as the response lasts, as the tree of concatenations that
    // built it (four 32-byte nodes per header: 1–1.8 KB a response here). Read as a number, V8 flattens it in place
    // into one string and the tree is garbage: 0.5–1.3 KB less per open stream (docs/benchmarks.md).
    Number((this.raw as { _header?: unknown })._header)
  }

  /**
   * Writes bytes; a client that reads slowly pauses `source` (the upstream body) until its socket drains. The bytes
   * written in one turn of the event loop are sent together at its end, as one write: Node sends a turn's writes
   * together anyway (it corks the socket until the end of the tick), but each write costs its own call, chunk framing
   * and buffer in the system call, and one upstream read often holds many events.
   */
  write(bytes: Buffer | string, source: UpstreamBody | null): void {
    const queued = this.queued
    if (queued.length === 0) process.nextTick(sendQueued, this)
    queued.push(bytes)
    if (source !== null) this.source = source
    if (this.unwritten > 0) this.unwritten -= typeof bytes === 'string' ? Buffer.byteLength(bytes) : bytes.length
  }

  /**
   * The client's stream is open and waits for an answer still to come (a first token, an upstream being reached): it
   * gets `beat`, now (unless `beatNow` is false: it just had the upstream's own) and every `everyMs`, until
   * `stopHeartbeat` or its end (0: never).
   */
  startHeartbeat(beat: string, everyMs: number, beatNow = true): void {
    this.stopHeartbeat()
    if (everyMs === 0) return
    if (beatNow) this.write(beat, null)
    this.heartbeat = setInterval(beatOnce, everyMs, this, beat)
    this.heartbeat.unref()
  }

  stopHeartbeat(): void {
    if (this.heartbeat !== null) {
      clearInterval(this.heartbeat)
      this.heartbeat = null
    }
  }

  /** Sends what this turn wrote, at its end (unless it completes the answer: then the end sends it). */
  sendQueued(): void {
    if (this.unwritten !== 0) this.send()
  }

  private send(): void {
    const queued = this.queued
    if (queued.length === 0) return
    const bytes = queued.length === 1 ? (queued[0] as Buffer | string) : joined(queued)
    queued.length = 0
    const source = this.source
    this.source = null
    const raw = this.raw
    if (raw.destroyed || raw.writableEnded) return
    if (this.put(bytes)) return
    this.watchStall()
    if (source !== null) {
      source.pause()
      raw.once('drain', () => source.resume())
    }
  }

  private put(bytes: Buffer | string): boolean {
    this.handed += bytes.length
    return this.raw.write(bytes)
  }

  /**
   * What of the socket's write in flight the kernel has not taken yet (libuv's `writeQueueSize`): it shrinks as a
   * client reads, while a large write (a whole converted answer, a turn's writes) leaves Node's buffers only at once.
   */
  private inFlight(): number {
    return (this.raw.socket as unknown as { _handle?: { writeQueueSize?: number } } | null)?._handle?.writeQueueSize ?? 0
  }

  /**
   * Bytes wait for the client: if none of them leaves for stallMs (the client reads nothing), the connection is
   * closed. Its close then aborts the upstream request and records the client as gone, instead of both ends held
   * open for ever. A client that reads, however slowly, is never cut.
   */
  private watchStall(): void {
    if (this.stallArmed) return
    this.stallArmed = true
    this.progressAt = performance.now()
    this.sentAtCheck = this.handed - this.raw.writableLength
    this.inFlightAtCheck = this.inFlight()
    if (this.stallTimer !== null) {
      this.stallTimer.refresh()
      return
    }
    this.stallTimer = setTimeout(checkStall, this.stallMs / STALL_CHECKS, this)
    // A client that leaves meanwhile: nothing to watch, nothing to keep alive.
    this.raw.once('close', () => clearTimeout(this.stallTimer as NodeJS.Timeout))
  }

  /**
   * @internal A check of the watch: the client is cut once it took nothing for stallMs, counted from the check that
   * last saw it take something (so between stallMs and stallMs plus one check after its last read).
   */
  onStallCheck(): void {
    const raw = this.raw
    if (raw.destroyed || raw.writableFinished || raw.writableLength === 0) {
      this.stallArmed = false
      return
    }
    const now = performance.now()
    const sent = this.handed - raw.writableLength
    const inFlight = this.inFlight()
    if (sent > this.sentAtCheck || (sent === this.sentAtCheck && inFlight < this.inFlightAtCheck)) {
      // Something left since the last check: the client reads, slowly.
      this.progressAt = now
      this.sentAtCheck = sent
      this.inFlightAtCheck = inFlight
    } else if (now - this.progressAt >= this.stallMs - this.stallMs / STALL_CHECKS / 2) {
      // (Half a check short counts: a timer may fire a millisecond early, and the cut would wait a whole check more.)
      this.stallArmed = false
      // (After the answer's end was written its usage record is out already: this line is what tells of it.)
      this.reply.log.warn({ stallMs: this.stallMs, answerEnded: raw.writableEnded }, 'client read nothing of its answer: connection closed')
      raw.destroy()
      return
    }
    this.stallTimer?.refresh()
  }

  /** Ends the response, after `tail` when given. */
  end(tail: Buffer | string | null = null): void {
    this.endWith(null, tail)
  }

  /**
   * Ends a stream (after `held`, bytes a transform still held) with an in-band error event in the client's format —
   * `event` when a transform framed it, else the client API's own — and no terminator.
   */
  endWithError(event: string | null, error: LlmProxyError, held: Buffer | string | null): void {
    this.endWith(held, event ?? this.wire.streamErrorEvent(error))
  }

  /** Ends the response with `held` then `last`: now, or after the usage record is kept (endsAfterRecord). */
  private endWith(held: Buffer | string | null, last: Buffer | string | null): void {
    this.stopHeartbeat()
    if (this.endsAfterRecord) {
      this.unwritten = 0
      setImmediate(endResponse, this, held, last)
    } else this.endResponse(held, last)
  }

  /** @internal */
  endResponse(held: Buffer | string | null, last: Buffer | string | null): void {
    this.send()
    const raw = this.raw
    if (raw.destroyed || raw.writableEnded) return
    if (held !== null) this.put(held)
    if (last === null) raw.end()
    else {
      this.handed += last.length
      raw.end(last)
    }
    // An end that waits in the buffers for a client that reads nothing: the same bound applies until it leaves.
    if (raw.writableLength > 0) this.watchStall()
  }

  /** A JSON body cannot carry an error once started: the connection is cut, so it cannot look complete. */
  cut(): void {
    this.stopHeartbeat()
    this.queued.length = 0
    this.raw.destroy()
  }

  /** Before the commit point: the error is the answer, in the client API's shape (after its record, as an end). */
  fail(error: LlmProxyError): void {
    this.committed = true
    if (this.endsAfterRecord) setImmediate(sendFailure, this, error)
    else this.sendFailure(error)
  }

  /** @internal */
  sendFailure(error: LlmProxyError): void {
    const reply = this.reply
    // Often run from an immediate, outside any handler: a bad status would throw there and end the process. Anything
    // but the gateway's own error with an error status (a bug passing on what it caught) is answered as internal.
    let failure = error
    if (!(error instanceof LlmProxyError) || !isErrorStatus(error.statusCode)) {
      reply.log.error({ err: error }, 'request failed with an error that is no gateway error: answered as internal')
      failure = errors.internal({ cause: error })
    }
    if (failure.headers !== undefined) reply.headers(failure.headers)
    reply.code(failure.statusCode).type('application/json; charset=utf-8').send(this.wire.errorBody(failure))
  }

  /**
   * The status the client got (0 when nothing was written). Once committed, the one sent then: a later attempt (a continuation) goes through
   * reply-from, which sets the reply's status code to its upstream's, though nothing more is sent to the client.
   */
  get status(): number {
    if (this.committedStatus !== 0) return this.committedStatus
    return this.raw.headersSent ? this.raw.statusCode : 0
  }

  /** The answer's end was written (it may still be draining to the client). */
  get ended(): boolean {
    return this.raw.writableEnded
  }

  /**
   * Everything was written and flushed (a close before that is a client that went away). Under `app.inject()`, whose
   * response (light-my-request's, `isLightMyRequest`) writes to a stub socket that never reads as flushed: the end
   * written, as its 'finish' says then. Read only at the response's close.
   */
  get finished(): boolean {
    const raw = this.raw
    return raw.writableFinished || (raw.writableEnded && (raw as { isLightMyRequest?: boolean }).isLightMyRequest === true)
  }
}

// Tick and immediate callbacks shared by every response (no per-response closures).
function sendQueued(client: ClientStream): void {
  client.sendQueued()
}

function beatOnce(client: ClientStream, beat: string): void {
  client.write(beat, null)
}

function endResponse(client: ClientStream, held: Buffer | string | null, last: Buffer | string | null): void {
  client.endResponse(held, last)
}

function sendFailure(client: ClientStream, error: LlmProxyError): void {
  client.sendFailure(error)
}

function checkStall(client: ClientStream): void {
  client.onStallCheck()
}

/** One turn's writes as one: strings joined, else bytes concatenated (a string among them encoded). */
function joined(parts: (Buffer | string)[]): Buffer | string {
  let strings = 0
  for (const part of parts) if (typeof part === 'string') strings++
  if (strings === parts.length) return parts.join('')
  if (strings === 0) return Buffer.concat(parts as Buffer[])
  return Buffer.concat(parts.map((part) => (typeof part === 'string' ? Buffer.from(part) : part)))
}

/** A status an error answer may have (Fastify throws on anything outside 100–599). */
function isErrorStatus(status: unknown): boolean {
  return Number.isInteger(status) && (status as number) >= 400 && (status as number) <= 599
}
