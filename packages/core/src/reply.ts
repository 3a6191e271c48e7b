import type { FastifyReply } from 'fastify'
import { type LlmProxyError, toLlmProxyError } from './errors.js'

/** Answers with an error in the OpenAI shape, whatever error handler the host app has. */
export function sendError(reply: FastifyReply, error: LlmProxyError | unknown): FastifyReply {
  const err = toLlmProxyError(error)
  if (err.headers !== undefined) reply.headers(err.headers)
  return reply.code(err.statusCode).type('application/json; charset=utf-8').send(err.toJSON())
}
