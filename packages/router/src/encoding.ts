import type { IncomingHttpHeaders } from 'node:http'
import type { Transform } from 'node:stream'
import { constants, createBrotliDecompress, createGunzip, createInflate } from 'node:zlib'
import type { UpstreamBody } from './upstream-response.js'

/**
 * The upstream body as plain bytes. Upstreams are asked for `identity` (the gateway reads usage from the
 * bytes), but one that compresses anyway is decoded here, for the tap and for the client alike, so that one
 * response never mixes encodings. Each decoder flushes what it has at once (SSE events still go out one by
 * one). The upstream headers lose `content-encoding` and `content-length`, which described the encoded body.
 */
export function decodedBody(body: UpstreamBody, headers: IncomingHttpHeaders | null): UpstreamBody {
  const encoding = headers?.['content-encoding']
  if (encoding === undefined || headers === null) return body
  const decoder = decoderFor(encoding.trim().toLowerCase())
  if (decoder === null) return body
  delete headers['content-encoding']
  delete headers['content-length']
  body.on('data', (chunk: Buffer) => {
    // A decoder that is full (its reader paused) pauses the upstream until it drains.
    if (!decoder.write(chunk)) {
      body.pause()
      decoder.once('drain', () => body.resume())
    }
  })
  body.once('end', () => decoder.end())
  body.on('error', (err: Error) => decoder.destroy(err))
  // Destroying the decoder (abandoned attempt, client gone) releases the upstream request too.
  decoder.once('close', () => body.destroy())
  return decoder
}

function decoderFor(encoding: string): Transform | null {
  const flush = { flush: constants.Z_SYNC_FLUSH, finishFlush: constants.Z_SYNC_FLUSH }
  switch (encoding) {
    case 'gzip':
    case 'x-gzip':
      return createGunzip(flush)
    case 'deflate':
      return createInflate(flush)
    case 'br':
      return createBrotliDecompress({ flush: constants.BROTLI_OPERATION_FLUSH, finishFlush: constants.BROTLI_OPERATION_FLUSH })
    default:
      return null
  }
}
