// Upstream streams as the servers send them, and helpers that run them through the converters.
import { type ApiFamily, createDecoder, createEncoder, type EncoderOptions, type EncoderResume, type StreamEvent } from '../src/index.js'

const OPENAI_HEAD = '{"id":"chatcmpl-up1","object":"chat.completion.chunk","created":1700000000,"model":"Qwen/Qwen3-8B","choices":'

function openAiChunk(delta: string, finish: string | null = null): string {
  return `data: ${OPENAI_HEAD}[{"index":0,"delta":${delta},"logprobs":null,"finish_reason":${finish === null ? 'null' : `"${finish}"`}}]}\n\n`
}

/** vLLM usage chunk: 120 prompt tokens of which 100 cached, 30 completion tokens. */
export const OPENAI_USAGE = `data: ${OPENAI_HEAD}[],"usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,"prompt_tokens_details":{"cached_tokens":100}}}\n\n`

/** An OpenAI-compatible (vLLM) stream: reasoning, text, finish, then the usage chunk and [DONE]; one event a chunk. */
export const OPENAI_TEXT: string[] = [
  openAiChunk('{"role":"assistant","content":""}'),
  openAiChunk('{"reasoning_content":"Let me think"}'),
  openAiChunk('{"reasoning_content":" about it."}'),
  openAiChunk('{"content":"Hello"}'),
  openAiChunk('{"content":", wörld 👋"}'),
  openAiChunk('{}', 'stop'),
  OPENAI_USAGE,
  'data: [DONE]\n\n',
]

/** Two parallel tool calls, streamed one after the other (as OpenAI and vLLM do). */
export const OPENAI_TOOLS: string[] = [
  openAiChunk('{"role":"assistant","content":null}'),
  openAiChunk('{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]}'),
  openAiChunk('{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\":"}}]}'),
  openAiChunk('{"tool_calls":[{"index":0,"function":{"arguments":"\\"Paris\\"}"}}]}'),
  openAiChunk('{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":""}}]}'),
  openAiChunk('{"tool_calls":[{"index":1,"function":{"arguments":"{\\"tz\\":\\"CET\\"}"}}]}'),
  openAiChunk('{}', 'tool_calls'),
  OPENAI_USAGE,
  'data: [DONE]\n\n',
]

/** The same two calls with their argument fragments interleaved by index. */
export const OPENAI_TOOLS_INTERLEAVED: string[] = [
  openAiChunk('{"role":"assistant","content":null}'),
  openAiChunk('{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\\"city\\":"}}]}'),
  openAiChunk('{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{\\"tz\\":"}}]}'),
  openAiChunk('{"tool_calls":[{"index":0,"function":{"arguments":"\\"Paris\\"}"}}]}'),
  openAiChunk('{"tool_calls":[{"index":1,"function":{"arguments":"\\"CET\\"}"}}]}'),
  openAiChunk('{}', 'tool_calls'),
  OPENAI_USAGE,
  'data: [DONE]\n\n',
]

/**
 * The two calls without an index, one after the other (Gemini's OpenAI-compatible API, some proxies): a name starts
 * the next call, a bare fragment continues the latest; the second call has no id.
 */
export const OPENAI_TOOLS_NO_INDEX: string[] = [
  openAiChunk(
    '{"role":"assistant","tool_calls":[{"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\\"city\\":"}}]}',
  ),
  openAiChunk('{"tool_calls":[{"function":{"arguments":"\\"Paris\\"}"}}]}'),
  openAiChunk('{"tool_calls":[{"type":"function","function":{"name":"get_time","arguments":"{\\"tz\\":\\"CET\\"}"}}]}'),
  openAiChunk('{}', 'tool_calls'),
  OPENAI_USAGE,
  'data: [DONE]\n\n',
]

/** The two calls each at index 0, told apart only by their ids (as some proxies stream them); arguments in fragments. */
export const OPENAI_TOOLS_INDEX_ZERO: string[] = [
  openAiChunk('{"role":"assistant","content":null}'),
  openAiChunk('{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\\"city\\":"}}]}'),
  openAiChunk('{"tool_calls":[{"index":0,"function":{"arguments":"\\"Paris\\"}"}}]}'),
  openAiChunk('{"tool_calls":[{"index":0,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{\\"tz\\":"}}]}'),
  openAiChunk('{"tool_calls":[{"index":0,"function":{"arguments":"\\"CET\\"}"}}]}'),
  openAiChunk('{}', 'tool_calls'),
  OPENAI_USAGE,
  'data: [DONE]\n\n',
]

export function anthropicEvent(type: string, body: string): string {
  return `event: ${type}\ndata: {"type":"${type}",${body}}\n\n`
}

/** An Anthropic stream: thinking with its signature, text, a tool call; 20 input, 50 cache writes, 100 cache reads, 42 output. */
export const ANTHROPIC_TOOLS: string[] = [
  anthropicEvent(
    'message_start',
    '"message":{"id":"msg_up1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":20,"cache_creation_input_tokens":50,"cache_read_input_tokens":100,"output_tokens":1}}',
  ),
  'event: ping\ndata: {"type":"ping"}\n\n',
  anthropicEvent('content_block_start', '"index":0,"content_block":{"type":"thinking","thinking":"","signature":""}'),
  anthropicEvent('content_block_delta', '"index":0,"delta":{"type":"thinking_delta","thinking":"Let me think"}'),
  anthropicEvent('content_block_delta', '"index":0,"delta":{"type":"signature_delta","signature":"sig-abc"}'),
  anthropicEvent('content_block_stop', '"index":0'),
  anthropicEvent('content_block_start', '"index":1,"content_block":{"type":"text","text":""}'),
  anthropicEvent('content_block_delta', '"index":1,"delta":{"type":"text_delta","text":"Hello"}'),
  anthropicEvent('content_block_delta', '"index":1,"delta":{"type":"text_delta","text":", wörld 👋"}'),
  anthropicEvent('content_block_stop', '"index":1'),
  anthropicEvent('content_block_start', '"index":2,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}'),
  anthropicEvent('content_block_delta', '"index":2,"delta":{"type":"input_json_delta","partial_json":""}'),
  anthropicEvent('content_block_delta', '"index":2,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\":"}'),
  anthropicEvent('content_block_delta', '"index":2,"delta":{"type":"input_json_delta","partial_json":"\\"Paris\\"}"}'),
  anthropicEvent('content_block_stop', '"index":2'),
  anthropicEvent('message_delta', '"delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":42}'),
  'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]

const GEMINI_TAIL = '"modelVersion":"gemini-2.5-flash","responseId":"resp-up1"}'

function geminiChunk(
  parts: string,
  extra = '',
  usage = '"usageMetadata":{"promptTokenCount":120,"cachedContentTokenCount":100,"totalTokenCount":120},',
): string {
  return `data: {"candidates":[{"content":{"parts":[${parts}],"role":"model"}${extra},"index":0}],${usage}${GEMINI_TAIL}\r\n\r\n`
}

const GEMINI_FINAL_USAGE =
  '"usageMetadata":{"promptTokenCount":120,"cachedContentTokenCount":100,"candidatesTokenCount":12,"thoughtsTokenCount":18,"totalTokenCount":150},'

/** A Gemini alt=sse stream (CRLF, as Google sends it): a thought, text, a function call with its thought signature. */
export const GEMINI_TOOLS: string[] = [
  geminiChunk('{"text":"Let me think","thought":true}'),
  geminiChunk('{"text":"Hello"}'),
  geminiChunk('{"text":", wörld 👋"}'),
  geminiChunk(
    '{"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"gsig-1"}',
    ',"finishReason":"STOP"',
    GEMINI_FINAL_USAGE,
  ),
]

/** A Gemini text answer. */
export const GEMINI_TEXT: string[] = [
  geminiChunk('{"text":"Let me think","thought":true}'),
  geminiChunk('{"text":"Hello"}'),
  geminiChunk('{"text":", wörld 👋"}', ',"finishReason":"STOP"', GEMINI_FINAL_USAGE),
]

/** All events of a whole upstream body, fed in the given pieces. */
export function decodeAll(upstream: ApiFamily, pieces: readonly (string | Buffer)[]): { events: StreamEvent[]; complete: boolean } {
  const decoder = createDecoder(upstream)
  const events: StreamEvent[] = []
  for (const piece of pieces) decoder.push(typeof piece === 'string' ? Buffer.from(piece) : piece, events)
  decoder.end(events)
  return { events, complete: decoder.complete }
}

/** The gateway error a router ends a stream with when the upstream fails inside it. */
export function upstreamFailure(message: string) {
  return { statusCode: 502, type: 'upstream_error', code: 'llmproxy_upstream_error', message }
}

/**
 * What the client receives for an upstream stream, as the router would write it: one string per upstream chunk (the
 * encoder's output for the events it completes; empty writes left out), then `finish()` — or, at an upstream error
 * event, the encoder's in-band error and nothing more.
 */
export function convertStream(
  upstream: ApiFamily,
  client: ApiFamily,
  pieces: readonly string[],
  opts: EncoderOptions = { model: 'client-model' },
  resume?: EncoderResume,
): string[] {
  const decoder = createDecoder(upstream)
  const encoder = createEncoder(client, opts, resume)
  const writes: string[] = []
  const events: StreamEvent[] = []
  const encodeAll = (): string | null => {
    let out = ''
    for (const event of events) {
      if (event.type === 'error') {
        writes.push(out + encoder.error(upstreamFailure(event.message)))
        return null
      }
      out += encoder.encode(event)
    }
    return out
  }
  for (const piece of pieces) {
    events.length = 0
    decoder.push(Buffer.from(piece), events)
    const out = encodeAll()
    if (out === null) return writes
    if (out !== '') writes.push(out)
  }
  events.length = 0
  decoder.end(events)
  const out = encodeAll()
  if (out !== null) writes.push(out + encoder.finish())
  return writes
}

/** The data of each SSE event in a client stream, with its event name. */
export function sseEvents(body: string): { event: string; data: string }[] {
  const events: { event: string; data: string }[] = []
  for (const block of body.split('\n\n')) {
    if (block === '' || block.startsWith(':')) continue
    let event = ''
    const data: string[] = []
    for (const line of block.split('\n')) {
      if (line.startsWith('event: ')) event = line.slice(7)
      else if (line.startsWith('data: ')) data.push(line.slice(6))
    }
    events.push({ event, data: data.join('\n') })
  }
  return events
}

/** A fetch that answers every request with these writes as a streamed body (one network chunk per write). */
export function fetchReturning(writes: readonly string[], status = 200, contentType = 'text/event-stream'): typeof fetch {
  return async () => {
    const encoder = new TextEncoder()
    let next = 0
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (next < writes.length) controller.enqueue(encoder.encode(writes[next++]))
        else controller.close()
      },
    })
    return new Response(body, { status, headers: { 'content-type': contentType } })
  }
}
