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
    // The coding the body was sent with, '' when none.
    let compressedWith = ''
    let decoder: Transform | null = null
    if (coding !== undefined) {
      // The router sends upstream a body it re-serialised: the client's coding must not travel with it.
      delete headers['content-encoding']
      const name = coding.trim().toLowerCase()
      if (name !== '' && name !== 'identity') {
        compressedWith = coding
        // A preParsing hook that put its own stream in place of the request has decoded the body already, and left
        // the header (@fastify/compress does so on every route of the app): a second decoding would refuse the body.
        if (payload === request.raw) {
          const decoderFor = DECODERS.get(name)
          if (decoderFor === undefined) return refuse(payload, errors.unsupportedContentEncoding(coding), done)
          decoder = decoderFor()
        }
      }
    }
    if (Number(headers['content-length']) > bodyLimit) return refuse(payload, errors.bodyTooLarge(bodyLimit), done)
    // The compressed size says nothing of the body the hooks after this see (a token estimate would take it for it).
    if (compressedWith !== '') delete headers['content-length']
    readBody(request, payload, done, bodyLimit, parseJson, decoder, compressedWith)
  })
}

/**
 * Reads one body, through the decoder when it is compressed. Plain closures over locals, as Fastify's own body
 * reader: a per-request class whose constructor made these closures (capturing `done`) had V8 pretenure them into
 * the old generation, and each one kept its whole request alive across young collections until a full GC
 * (7.5 KB promoted per request, scavenges 10× longer; see docs/benchmarks.md).
 */
function readBody(
  request: FastifyRequest,
  payload: IncomingMessage,
  done: Done,
  limit: number,
  parseJson: ParseJson,
  decoder: Transform | null,
  coding: string,
): void {
  const chunks: Buffer[] = []
  // Bytes collected (decoded, when compressed), and received (compressed), when compressed.
  let size = 0
  let received = 0
  const collect = (chunk: Buffer): void => {
    size += chunk.length
    if (size > limit) fail(errors.bodyTooLarge(limit, coding !== ''))
    else chunks.push(chunk)
  }
  const finish = (): void => {
    stop()
    const text = chunks.length === 1 ? (chunks[0] as Buffer).toString() : Buffer.concat(chunks, size).toString()
    parse(request, text, done, parseJson)
  }
  const fail = (error: LlmProxyError): void => {
    stop()
    refuse(payload, error, done)
  }
  const onData =
    decoder === null
      ? collect
      : (chunk: Buffer): void => {
          received += chunk.length
          if (received > limit) fail(errors.bodyTooLarge(limit))
          else if (!decoder.write(chunk)) {
            payload.pause()
            decoder.once('drain', () => payload.resume())
          }
        }
  const onEnd = decoder === null ? finish : (): void => void decoder.end()
  // The request's own stream fails only when the client leaves before the body is complete. A preParsing hook's
  // decoding stream fails on data it cannot decode (@fastify/compress's also on a client leaving: no one reads the
  // answer then).
  const onReadError = (): void => {
    stop()
    done(
      payload !== request.raw && coding !== ''
        ? errors.invalidContentEncoding(coding)
        : errors.invalidRequest('The client closed the connection before its body was complete.'),
    )
  }
  const stop = (): void => {
    payload.removeListener('data', onData)
    payload.removeListener('end', onEnd)
    payload.removeListener('error', onReadError)
    if (decoder !== null) {
      decoder.removeAllListeners()
      decoder.on('error', ignore) // a write still in flight may fail after destroy(): nothing to report then
      decoder.destroy()
    }
  }
  if (decoder !== null) {
    decoder.on('data', collect)
    decoder.once('end', finish)
    decoder.once('error', () => fail(errors.invalidContentEncoding(coding)))
  }
  payload.on('data', onData)
  payload.on('end', onEnd)
  payload.on('error', onReadError)
  payload.resume()
}

const ignore = (): void => {}

/** Why a body Fastify's parser refuses was refused: not JSON at all, or JSON with a key that could poison prototypes. */
function whyNotParsed(text: string): string {
  try {
    // The error path only: Fastify's parser does not tell the two apart.
    JSON.parse(text)
    return 'The request body has a "__proto__" key (or a "constructor" with a "prototype"), which is refused.'
  } catch {
    return 'The request body is not valid JSON.'
  }
}

function parse(request: FastifyRequest, text: string, done: Done, parseJson: FastifyBodyParser<string>): void {
  if (text.length === 0) {
    done(errors.invalidJson('The request body is empty; send a JSON object.'))
    return
  }
  parseJson(request, text, (err, value) => {
    if (err !== null) done(errors.invalidJson(whyNotParsed(text)))
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
