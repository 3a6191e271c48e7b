import type { FastifyInstance } from 'fastify'

/**
 * One structured line per request (`reqId` comes from the request's child logger). Routed LLM requests
 * are logged when their usage record is final (it knows the model, upstream, TTFT and tokens); everything
 * else when the response finishes. (Not registered at all below `info`: nothing to build then.)
 */
export function requestLogging(app: FastifyInstance): void {
  app.llm.addHook('onUsage', (record, request) => {
    request.log.info(
      {
        method: request.method,
        url: request.url,
        status: record.status,
        keyId: record.keyId,
        model: record.model,
        upstream: record.upstream,
        upstreamModel: record.upstreamModel,
        stream: record.stream,
        attempts: record.attempts,
        resumed: record.resumed,
        ttftMs: record.ttftMs,
        durationMs: record.durationMs,
        promptTokens: record.promptTokens,
        completionTokens: record.completionTokens,
        estimated: record.estimated,
        clientAborted: record.clientAborted,
        ...(record.error ? { error: record.error.code } : {}),
      },
      'request',
    )
  })
  app.addHook('onResponse', (request, reply, done) => {
    if ((request.llm?.model ?? null) === null) {
      request.log.info(
        {
          method: request.method,
          url: request.url,
          status: reply.statusCode,
          keyId: request.llm?.keyId ?? null,
          durationMs: Math.round(reply.elapsedTime),
        },
        'request',
      )
    }
    done()
  })
}
