import type { IncomingHttpHeaders } from 'node:http'
import { type Protocol, toLlmProxyError } from '@llmproxy/core'
import type { FastifyReply } from 'fastify'
import { anthropic } from './anthropic.js'
import type { ApiFamily } from './convert/types.js'
import { GEMINI_V1_ACTION, gemini } from './gemini.js'
import { openai, openaiHealthPath } from './openai.js'
import { familyOf, type WireFormat } from './wire.js'

const FORMATS: Record<ApiFamily, WireFormat> = { openai, anthropic, gemini }

/** The wire format of an API family. */
export function wireOf(family: ApiFamily): WireFormat {
  return FORMATS[family]
}

/** The wire format an upstream of this protocol speaks. */
export function wireOfProtocol(protocol: Protocol): WireFormat {
  return FORMATS[familyOf(protocol)]
}

/**
 * The API a client request speaks, from its URL: what errors answered before routing (auth, limits) are shaped by.
 * Anthropic clients call /v1/messages (and /v1/messages/count_tokens), Gemini clients /v1beta/models…; /v1/models
 * is OpenAI's, Anthropic's and (`apiVersion: 'v1'`) Gemini's, whose SDKs tell themselves by a header (`headers`, when
 * known): `anthropic-version`, and Google's `x-goog-api-key` or `x-goog-api-client`; everything else is OpenAI-shaped
 * (Google's OpenAI-compatible /v1beta/openai/… too). The routes may be mounted under a prefix (`/llm/v1/messages`):
 * Anthropic's paths are matched at the path's end, Gemini's wherever `/v1beta/models` is.
 */
export function clientApiOf(url: string, headers?: IncomingHttpHeaders): ApiFamily {
  const query = url.indexOf('?')
  const path = query === -1 ? url : url.slice(0, query)
  if (path.includes('/v1beta/models') || GEMINI_V1_ACTION.test(path)) return 'gemini'
  if (path.endsWith('/v1/messages') || path.endsWith('/v1/messages/count_tokens')) return 'anthropic'
  if (headers === undefined || !(path.endsWith('/v1/models') || path.includes('/v1/models/'))) return 'openai'
  if (headers['anthropic-version'] !== undefined) return 'anthropic'
  return headers['x-goog-api-key'] !== undefined || headers['x-goog-api-client'] !== undefined ? 'gemini' : 'openai'
}

/** Active-check path when the upstream names none; null for the hosted APIs (Anthropic, Gemini: passive health only). */
export function defaultHealthCheckPath(protocol: Protocol): string | null {
  return familyOf(protocol) === 'openai' ? openaiHealthPath(protocol) : null
}

/** Sets an upstream's credential and the headers its API requires (unless already set) on an outgoing request. */
export function setUpstreamCredential(
  headers: Record<string, string | string[] | undefined>,
  protocol: Protocol,
  apiKey: string | undefined,
): void {
  const wire = wireOfProtocol(protocol)
  if (apiKey !== undefined && apiKey !== '') wire.setCredential(headers, apiKey)
  for (const name in wire.requiredHeaders) headers[name] ??= wire.requiredHeaders[name]
}

/**
 * Answers with a gateway error in the shape of the API the client speaks (from its URL), whatever error handler
 * the host app has: how every plugin refuses a request. The answer carries the request's id (unless the app set
 * one), and `request.llm.refusedWith` the error's code (for the request's log line).
 */
export function sendError(reply: FastifyReply, error: unknown): FastifyReply {
  const err = toLlmProxyError(error)
  const request = reply.request
  const llm = request.llm
  if (llm !== undefined) llm.refusedWith = err.code
  if (!reply.hasHeader('x-request-id')) reply.header('x-request-id', request.id)
  if (err.headers !== undefined) reply.headers(err.headers)
  return reply
    .code(err.statusCode)
    .type('application/json; charset=utf-8')
    .send(wireOf(clientApiOf(request.url, request.headers)).errorBody(err))
}
