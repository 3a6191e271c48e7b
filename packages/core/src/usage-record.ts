import { type Static, Type } from './typebox.js'

/** Wire formats the gateway speaks to upstreams (and meters). */
export const Protocol = Type.Union([
  Type.Literal('openai'),
  Type.Literal('vllm'),
  Type.Literal('tgi'),
  Type.Literal('anthropic'),
  Type.Literal('gemini'),
])
export type Protocol = Static<typeof Protocol>

/** The APIs clients speak to the gateway (and upstreams answer in): OpenAI-compatible, Anthropic Messages, Gemini. */
export const ClientApi = Type.Union([Type.Literal('openai'), Type.Literal('anthropic'), Type.Literal('gemini')])
export type ClientApi = Static<typeof ClientApi>

/** Contract (docs/api.md#usage-records): one record per request that reached routing. */
export const UsageRecordSchema = Type.Object(
  {
    id: Type.String({ description: 'Stable unique id of this record; receivers dedupe by it.' }),
    timestamp: Type.String({ description: 'ISO 8601 time the request ended.' }),
    requestId: Type.String(),
    keyId: Type.Union([Type.String(), Type.Null()]),
    model: Type.String({ description: 'The model (or alias) the client asked for.' }),
    upstreamModel: Type.Union([Type.String(), Type.Null()], { description: 'The model name sent to the upstream that answered.' }),
    upstream: Type.Union([Type.String(), Type.Null()], { description: 'Name of the upstream that answered.' }),
    protocol: Protocol,
    clientApi: Type.Unsafe<ClientApi>({
      ...ClientApi,
      description: 'The API the client spoke; the answer was converted when it differs from the upstream protocol’s.',
    }),
    stream: Type.Boolean(),
    status: Type.Integer({ description: 'HTTP status the client received (0 when no response was written).' }),
    promptTokens: Type.Integer({ minimum: 0 }),
    completionTokens: Type.Integer({ minimum: 0 }),
    totalTokens: Type.Integer({ minimum: 0 }),
    cachedTokens: Type.Optional(Type.Integer({ minimum: 0 })),
    reasoningTokens: Type.Optional(Type.Integer({ minimum: 0 })),
    estimated: Type.Boolean({ description: 'True when the upstream reported no usage and the counts are estimates.' }),
    ttftMs: Type.Union([Type.Number(), Type.Null()]),
    durationMs: Type.Number(),
    attempts: Type.Integer({ minimum: 0 }),
    resumed: Type.Boolean({ description: 'True when a stream cut after its first byte was finished by another attempt (spliced in).' }),
    clientAborted: Type.Boolean(),
    error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String() })),
    metadata: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  { additionalProperties: false },
)
export type UsageRecord = Static<typeof UsageRecordSchema>

/** Token counts read from the traffic (normalised across wire formats). */
export interface Usage {
  promptTokens: number
  completionTokens: number
  totalTokens: number
  cachedTokens?: number
  reasoningTokens?: number
}
