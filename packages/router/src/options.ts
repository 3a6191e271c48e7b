import { MAX_TIMER_MS } from '@llmproxy/core'
import { type Static, Type } from '@llmproxy/core/typebox'

export const ModelRouteSchema = Type.Object(
  {
    name: Type.String({ minLength: 1, description: 'The model name clients send.' }),
    aliases: Type.Optional(
      Type.Array(Type.String({ minLength: 1 }), {
        description:
          'Other names clients may send for this model. One with `*` matches any characters there (`claude-*`): tried after every exact name and alias, in config order, and not listed in GET /v1/models.',
      }),
    ),
    upstreams: Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'The pool: names of upstreams serving this model.' }),
    upstreamModel: Type.Optional(Type.String({ minLength: 1, description: 'The model name sent upstream (default: name).' })),
    strategy: Type.Optional(Type.String({ description: 'Balancing strategy of the pool (default round-robin).' })),
    fallbacks: Type.Optional(
      Type.Array(Type.String({ minLength: 1 }), {
        description: "Other models tried in order when the pool cannot answer (whatever a key's models list allows).",
      }),
    ),
    resume: Type.Optional(
      Type.Boolean({
        default: true,
        description:
          'Finish a stream cut after its first byte on another upstream, spliced into the same client stream (chat routes only: chat completions, Messages, Gemini generate).',
      }),
    ),
  },
  { additionalProperties: false },
)
export type ModelRoute = Static<typeof ModelRouteSchema>

export const TimeoutsSchema = Type.Object(
  {
    connectMs: Type.Integer({
      minimum: 1,
      maximum: MAX_TIMER_MS,
      default: 5000,
      description:
        'TCP/TLS connect timeout per attempt, lowered to firstTokenMs or responseMs when longer (a first byte needs its connection); a config file that sets it longer is refused.',
    }),
    firstTokenMs: Type.Integer({
      minimum: 1,
      maximum: MAX_TIMER_MS,
      default: 300000,
      description:
        "Streamed requests: the answer's first event must arrive within this time of the attempt start (an upstream's comments before it, such as TGI's keep-alives, reach the client but do not count; nor does the gateway's own heartbeat). Reasoning models and long prompts on a busy server send nothing for minutes before it; lower it for fast models only, to fail over sooner.",
    }),
    idleMs: Type.Integer({
      minimum: 1,
      maximum: MAX_TIMER_MS,
      default: 300000,
      description:
        'Longest silence of the upstream between two chunks of an answer: a stream once its first event reached the client, a JSON body once it started. Reasoning pauses last minutes and Anthropic pings come every ~30 s: lower it to find a hang sooner, not below those.',
    }),
    heartbeatMs: Type.Integer({
      minimum: 0,
      maximum: MAX_TIMER_MS,
      default: 5000,
      description:
        "Streamed requests: how long a client waiting on the gateway gets nothing before its API's heartbeat (an SSE comment, Anthropic's ping), so that a proxy or load balancer in front (nginx: 60 s idle) does not cut it: before the first token once an upstream has answered with its headers (the client's SSE stream starts then, and an error after that reaches it in band, not as a status; retries and failover go on as before), while a cut stream is continued, and while a converted upstream streams what the client does not see. An upstream silent mid-answer gets none (a same-format client gets the upstream's own bytes). 0: never.",
    }),
    responseMs: Type.Integer({
      minimum: 1,
      maximum: MAX_TIMER_MS,
      default: 600000,
      description: 'Non-streamed requests: the answer must start within this time (generation happens before the first byte).',
    }),
    clientStallMs: Type.Integer({
      minimum: 1,
      maximum: MAX_TIMER_MS,
      default: 60000,
      description:
        'A client that reads nothing of its answer for this long is disconnected and its upstream request aborted (as nginx send_timeout).',
    }),
  },
  { additionalProperties: false, default: {} },
)

export const RetryOnSchema = Type.Union([
  Type.Literal('connect'),
  Type.Literal('timeout'),
  Type.Literal('stall'),
  Type.Literal(429),
  Type.Literal(500),
  Type.Literal(502),
  Type.Literal(503),
  Type.Literal(504),
  // Anthropic's "overloaded": a temporary state, like a 503.
  Type.Literal(529),
])

export const RetrySchema = Type.Object(
  {
    attempts: Type.Integer({ minimum: 1, default: 3, description: 'Attempts per request, across the pool and fallbacks.' }),
    on: Type.Array(RetryOnSchema, {
      default: ['connect', 'timeout', 'stall', 429, 500, 502, 503, 504, 529],
      description: 'Failures that move the request to another attempt (before the first byte reaches the client).',
    }),
    budgetMs: Type.Integer({
      minimum: 1,
      maximum: MAX_TIMER_MS,
      default: 60000,
      description: 'No new attempt starts after this much time (one started before gets its whole firstTokenMs or responseMs).',
    }),
    backoffMs: Type.Integer({
      minimum: 0,
      maximum: MAX_TIMER_MS,
      default: 100,
      description: 'Base backoff before retrying an upstream already tried (jittered, doubling).',
    }),
    maxRetryAfterMs: Type.Integer({
      minimum: 0,
      maximum: MAX_TIMER_MS,
      default: 5000,
      description: 'Longest upstream Retry-After the gateway waits out itself; longer ones go back to the client.',
    }),
  },
  { additionalProperties: false, default: {} },
)

export const RouterOptionsSchema = Type.Object(
  {
    models: Type.Array(ModelRouteSchema, { description: 'Model routes.' }),
    timeouts: TimeoutsSchema,
    retry: RetrySchema,
    bodyLimit: Type.Integer({ minimum: 1, default: 8 * 1024 * 1024, description: 'Largest request body accepted, in bytes.' }),
    defaultMaxTokens: Type.Integer({
      minimum: 1,
      default: 4096,
      description: 'The output cap sent to an Anthropic upstream (which requires one) when a client of another API set none.',
    }),
    includeUsage: Type.Boolean({
      default: true,
      description:
        'Ask OpenAI-style upstreams for usage on streams (stream_options.include_usage) and hide the extra chunk from clients that did not ask.',
    }),
  },
  { additionalProperties: false },
)
export type RetryOn = Static<typeof RetryOnSchema>
export type Timeouts = Static<typeof TimeoutsSchema>
export type Retry = Static<typeof RetrySchema>
type RouterSettings = Static<typeof RouterOptionsSchema>
/** Options as given: only `models` is required; every other option, and each timeouts and retry field, has a default. */
export type RouterOptions = Pick<RouterSettings, 'models'> &
  Partial<Omit<RouterSettings, 'models' | 'timeouts' | 'retry'>> & {
    timeouts?: Partial<Timeouts>
    retry?: Partial<Retry>
  }
