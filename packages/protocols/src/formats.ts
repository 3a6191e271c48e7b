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

/** The OpenAI routes the gateway serves: OpenAI's errors there, whatever SDK headers a client also sends. */
const OPENAI_PATHS = openai.endpoints.map((endpoint) => endpoint.path)

/**
 * The API a client request speaks, from its URL: what errors answered before routing (auth, limits, unknown routes)
 * are shaped by. Anthropic's paths are `/v1/messages` and all under it (batches too); Gemini's all under `/v1beta/` and
 * `/upload/v1beta/` but Google's OpenAI-compatible `/v1beta/openai/…`, and `/v1/models/{m}:generateContent` (its stable
 * version). The rest of `/v1/` is OpenAI's, and shared with the others where the gateway serves no OpenAI route (the
 * model lists; Anthropic's and Gemini's files, batches, caches, which it does not serve): there the SDK's own header
 * tells (`headers`, when known), `anthropic-version` Anthropic's, `x-goog-api-key` Google's (not `x-goog-api-client`
 * alone: Google's libraries add it to other clients' requests too).
 * The routes may be mounted under a prefix (`/llm/v1/messages`): the prefix is not looked at.
 */
export function clientApiOf(url: string, headers?: IncomingHttpHeaders): ApiFamily {
  const path = pathOf(url)
  if (path.includes('/v1beta/')) return path.includes('/v1beta/openai/') ? 'openai' : 'gemini'
  if (GEMINI_V1_ACTION.test(path)) return 'gemini'
  if (path.endsWith('/v1/messages') || path.includes('/v1/messages/')) return 'anthropic'
  if (headers === undefined) return 'openai'
  const sdk: ApiFamily =
    headers['anthropic-version'] !== undefined ? 'anthropic' : headers['x-goog-api-key'] !== undefined ? 'gemini' : 'openai'
  return sdk === 'openai' || OPENAI_PATHS.some((served) => path.endsWith(served)) ? 'openai' : sdk
}

/** A request URL without its query string. */
export function pathOf(url: string): string {
  const query = url.indexOf('?')
  return query === -1 ? url : url.slice(0, query)
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
