import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import type { LlmProxyError } from '@llmproxy/core'
import type { WireFormat } from '@llmproxy/protocols'
import type { FastifyReply } from 'fastify'
import { clientResponseHeaders } from './headers.js'

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
  /** The client's API: the shape of an in-band error. */
  private readonly wire: WireFormat

  constructor(reply: FastifyReply, wire: WireFormat) {
    this.reply = reply
    this.raw = reply.raw
    this.wire = wire
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
    this.reply.hijack()
    this.raw.writeHead(status, headers)
  }

  /** Writes bytes; a client that reads slowly pauses `source` (the upstream body) until its socket drains. */
  write(bytes: Buffer | string, source: Readable | null): void {
    if (!this.raw.write(bytes) && source !== null) {
      source.pause()
      this.raw.once('drain', () => source.resume())
    }
  }

  /**
   * Sends what was written now. Node holds a response's writes until the end of the tick (it corks the socket to
   * batch them), so the first token would wait for whatever runs after it in that tick: with a short answer in one
   * chunk, the whole end of the request (its usage record, listeners, the log line).
   */
  flush(): void {
    const socket = this.raw.socket
    if (socket !== null && socket.writableCorked > 0) socket.uncork()
  }

  /** Ends the response, after `tail` when given. */
  end(tail: Buffer | string | null = null): void {
    if (tail === null) this.raw.end()
    else this.raw.end(tail)
  }

  /**
   * Ends a stream (after `held`, bytes a transform still held) with an in-band error event in the client's format —
   * `event` when a transform framed it, else the client API's own — and no terminator.
   */
  endWithError(event: string | null, error: LlmProxyError, held: Buffer | string | null): void {
    if (held !== null) this.raw.write(held)
    this.raw.end(event ?? this.wire.streamErrorEvent(error))
  }

  /** A JSON body cannot carry an error once started: the connection is cut, so it cannot look complete. */
  cut(): void {
    this.raw.destroy()
  }

  /** Before the commit point: the error is the answer, in the client API's shape. */
  fail(error: LlmProxyError): void {
    this.committed = true
    const reply = this.reply
    if (error.headers !== undefined) reply.headers(error.headers)
    reply.code(error.statusCode).type('application/json; charset=utf-8').send(this.wire.errorBody(error))
  }

  /** The status the client received (0 when nothing was written). */
  get status(): number {
    return this.raw.headersSent ? this.raw.statusCode : 0
  }

  /** Everything was written and flushed (a close before that is a client that went away). */
  get finished(): boolean {
    return this.raw.writableFinished
  }
}
