import type { LlmContext } from '@llmproxy/core'
import type { FastifyInstance } from 'fastify'

/**
 * One structured line per request (`reqId` comes from the request's child logger). Proxied LLM requests
 * are logged when their usage record is final (it knows the model, upstream, TTFT and tokens); everything
 * else (refused, answered by the gateway) when the response finishes, with the error's code when it was one;
 * a request whose client left before it was read whole (never routed, never answered) when it is aborted.
 * (Not registered at all below `info`: nothing to build then.)
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
    // No context when core's onRequest hook did not run (an app's earlier hook answered, or the client left there).
    const llm = request.llm as LlmContext | null
    // endedAt is set when a usage record is built: that request has had its line.
    if (llm === null || llm.endedAt === 0) {
      request.log.info(
        {
          method: request.method,
          url: request.url,
          status: reply.statusCode,
          keyId: llm?.keyId ?? null,
          ...(llm?.model ? { model: llm.model } : {}),
          durationMs: Math.round(reply.elapsedTime),
          ...(llm?.refusedWith ? { error: llm.refusedWith } : {}),
        },
        'request',
      )
    }
    done()
  })
  // Fastify runs this only for a request not read whole (a routed one was): no other line comes for it.
  app.addHook('onRequestAbort', (request, done) => {
    const llm = request.llm as LlmContext | null
    request.log.info(
      {
        method: request.method,
        url: request.url,
        status: 0,
        keyId: llm?.keyId ?? null,
        ...(llm !== null ? { durationMs: Math.round(performance.now() - llm.startedAt) } : {}),
        clientAborted: true,
      },
      'request',
    )
    done()
  })
}
