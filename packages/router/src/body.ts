import type { IncomingMessage } from 'node:http'
import type { Transform } from 'node:stream'
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib'
import { errors, type LlmProxyError } from '@llmproxy/core'
import type { FastifyBodyParser, FastifyInstance, FastifyRequest } from 'fastify'

/** Deepest nesting of arrays and objects a request body may have (serde_json's default limit too). */
export const MAX_JSON_DEPTH = 128

/**
 * Bytes of a refused body (too large, unsupported coding) read and dropped after the answer. A client still sending
 * when the gateway answers and closes gets EPIPE or ECONNRESET instead of the answer, so the answer keeps the
 * connection open and the rest of the body is read (nginx lingers the same way); past this bound, or past the
 * server's request timeout, the connection is closed.
 */
export const DISCARD_LIMIT = 128 * 1024 * 1024

/** Overrides the `connection: close` Fastify sets after a body parser error: the connection stays while the body drains. */
const KEEP_ALIVE = { connection: 'keep-alive' }

/** The content codings decoded (RFC 9110 §8.4.1; x-gzip is gzip). A Map: no inherited keys. */
const DECODERS = new Map<string, () => Transform>([
  ['gzip', createGunzip],
  ['x-gzip', createGunzip],
  ['deflate', createInflate],
  ['br', createBrotliDecompress],
])

type Done = (err: Error | null, body?: unknown) => void
type ParseJson = FastifyBodyParser<string>

/**
 * The routes' only body parser: `application/json` (anything else is a 415 from Fastify), optionally compressed
 * (gzip, deflate, br; the decompressed size counts against `bodyLimit`, so a zip bomb stops at the limit), at
 * most MAX_JSON_DEPTH levels deep. Replaces every parser of `routes`.
 */
export function acceptJsonBodies(routes: FastifyInstance, bodyLimit: number): void {
  // Fastify's own JSON.parse with prototype-poisoning protection (secure-json-parse).
  const parseJson = routes.getDefaultJsonParser('error', 'error')
  routes.removeAllContentTypeParsers()
  routes.addContentTypeParser('application/json', (request, payload, done) => {
    // The raw headers: those reply-from copies for the upstream request.
    const headers = request.raw.headers
    const coding = headers['content-encoding']
    let decoder: Transform | null = null
    if (coding !== undefined) {
      // The router sends upstream a body it re-serialised: the client's coding must not travel with it.
      delete headers['content-encoding']
      const name = coding.trim().toLowerCase()
      if (name !== '' && name !== 'identity') {
        const decoderFor = DECODERS.get(name)
        if (decoderFor === undefined) return refuse(payload, errors.unsupportedContentEncoding(coding), done)
        decoder = decoderFor()
      }
    }
    if (Number(headers['content-length']) > bodyLimit) return refuse(payload, errors.bodyTooLarge(bodyLimit), done)
    new BodyReader(request, payload, done, bodyLimit, parseJson, decoder, coding ?? '').start()
  })
}

/**
 * Reads one body, through the decoder when it is compressed. A class whose listeners are anonymous arrows: named
 * closures would each cost a `__name` call per request under tsx (esbuild's keepNames).
 */
class BodyReader {
  private readonly chunks: Buffer[] = []
  /** Bytes collected (decoded, when compressed). */
  private size = 0
  /** Bytes received (compressed), when compressed. */
  private received = 0
  private readonly onData: (chunk: Buffer) => void
  private readonly onEnd: () => void
  private readonly onAborted: () => void

  constructor(
    private readonly request: FastifyRequest,
    private readonly payload: IncomingMessage,
    private readonly done: Done,
    private readonly limit: number,
    private readonly parseJson: ParseJson,
    private readonly decoder: Transform | null,
    private readonly coding: string,
  ) {
    this.onData = decoder === null ? (chunk) => this.collect(chunk) : (chunk) => this.decode(chunk, decoder)
    this.onEnd = decoder === null ? () => this.finish() : () => decoder.end()
    this.onAborted = () => {
      this.stop()
      done(errors.invalidRequest('The client closed the connection before its body was complete.'))
    }
  }

  start(): void {
    const decoder = this.decoder
    if (decoder !== null) {
      decoder.on('data', (chunk: Buffer) => this.collect(chunk))
      decoder.once('end', () => this.finish())
      decoder.once('error', () => this.fail(errors.invalidContentEncoding(this.coding)))
    }
    const payload = this.payload
    payload.on('data', this.onData)
    payload.on('end', this.onEnd)
    payload.on('error', this.onAborted)
    payload.resume()
  }

  private decode(chunk: Buffer, decoder: Transform): void {
    this.received += chunk.length
    if (this.received > this.limit) this.fail(errors.bodyTooLarge(this.limit))
    else if (!decoder.write(chunk)) {
      const payload = this.payload
      payload.pause()
      decoder.once('drain', () => payload.resume())
    }
  }

  private collect(chunk: Buffer): void {
    this.size += chunk.length
    if (this.size > this.limit) this.fail(errors.bodyTooLarge(this.limit, this.decoder !== null))
    else this.chunks.push(chunk)
  }

  private finish(): void {
    this.stop()
    const chunks = this.chunks
    const text = chunks.length === 1 ? (chunks[0] as Buffer).toString() : Buffer.concat(chunks, this.size).toString()
    parse(this.request, text, this.done, this.parseJson)
  }

  private fail(error: LlmProxyError): void {
    this.stop()
    refuse(this.payload, error, this.done)
  }

  private stop(): void {
    const payload = this.payload
    payload.removeListener('data', this.onData)
    payload.removeListener('end', this.onEnd)
    payload.removeListener('error', this.onAborted)
    const decoder = this.decoder
    if (decoder !== null) {
      decoder.removeAllListeners()
      decoder.on('error', ignore) // a write still in flight may fail after destroy(): nothing to report then
      decoder.destroy()
    }
  }
}

const ignore = (): void => {}

function parse(request: FastifyRequest, text: string, done: Done, parseJson: FastifyBodyParser<string>): void {
  if (text.length === 0) {
    done(errors.invalidJson('The request body is empty; send a JSON object.'))
    return
  }
  parseJson(request, text, (err, value) => {
    if (err !== null) done(errors.invalidJson('The request body is not valid JSON.'))
    // JSON.parse itself takes any depth; JSON.stringify (the body sent upstream) and other walks would overflow the stack.
    else if (typeof value === 'object' && value !== null && nestsDeeper(value, MAX_JSON_DEPTH - 1)) done(errors.jsonTooDeep(MAX_JSON_DEPTH))
    else done(null, value)
  })
}

/**
 * True when containers nest more than `levels` levels below `container`. One visit per value, no allocation, and
 * primitives are skipped in the loop: a chat body costs well under a microsecond (see the README).
 */
function nestsDeeper(container: object, levels: number): boolean {
  if (Array.isArray(container)) {
    for (let i = 0; i < container.length; i++) {
      const item: unknown = container[i]
      if (typeof item === 'object' && item !== null && (levels === 0 || nestsDeeper(item, levels - 1))) return true
    }
    return false
  }
  const fields = container as Record<string, unknown>
  for (const key in fields) {
    const item = fields[key]
    if (typeof item === 'object' && item !== null && (levels === 0 || nestsDeeper(item, levels - 1))) return true
  }
  return false
}

/** Answers `error` now; what is left of the body is read and dropped (at most DISCARD_LIMIT bytes of it). */
function refuse(payload: IncomingMessage, error: LlmProxyError, done: Done): void {
  if (payload.readableEnded) {
    done(error)
    return
  }
  let discarded = 0
  payload.on('data', (chunk: Buffer) => {
    discarded += chunk.length
    if (discarded > DISCARD_LIMIT) payload.destroy()
  })
  payload.resume()
  done(error.withHeaders(KEEP_ALIVE))
}
