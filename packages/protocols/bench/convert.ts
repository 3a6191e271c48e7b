// What converting a stream costs per upstream event, for each client/upstream pair, without the network.
// Run: node --conditions=llmproxy-source --import tsx packages/protocols/bench/convert.ts
// Each upstream streams a 64-token text answer as its server writes it (one event per chunk, usage at the end),
// fed through createDecoder → createEncoder as the router will: decode a chunk, encode its events, join them.
// The baseline is the same-format (passthrough) path's own per-chunk work: the usage tap reading the bytes.
import type { Protocol } from '@llmproxy/core'
import { type ApiFamily, createDecoder, createEncoder, type StreamEvent, UsageExtractor } from '../src/index.js'

const TOKENS = 64

function openAiStream(): Buffer[] {
  const head = '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":'
  const chunks = [`data: ${head}[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}\n\n`]
  for (let i = 0; i < TOKENS; i++)
    chunks.push(`data: ${head}[{"index":0,"delta":{"content":"tok${i} "},"finish_reason":null}],"usage":null}\n\n`)
  chunks.push(`data: ${head}[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\n\n`)
  chunks.push(
    `data: ${head}[],"usage":{"prompt_tokens":12,"completion_tokens":64,"total_tokens":76,"prompt_tokens_details":{"cached_tokens":0}}}\n\n`,
  )
  chunks.push('data: [DONE]\n\n')
  return chunks.map((chunk) => Buffer.from(chunk))
}

function anthropicStream(): Buffer[] {
  const chunks = [
    'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}\n\n',
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n',
  ]
  for (let i = 0; i < TOKENS; i++) {
    chunks.push(
      `event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"tok${i} "}}\n\n`,
    )
  }
  chunks.push('event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n')
  chunks.push(
    'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":64}}\n\n',
  )
  chunks.push('event: message_stop\ndata: {"type":"message_stop"}\n\n')
  return chunks.map((chunk) => Buffer.from(chunk))
}

function geminiStream(): Buffer[] {
  const tail = '"modelVersion":"m","responseId":"r1"}\r\n\r\n'
  const chunks: string[] = []
  for (let i = 0; i < TOKENS; i++) {
    const last = i === TOKENS - 1
    const finish = last ? ',"finishReason":"STOP"' : ''
    const usage = last
      ? '{"promptTokenCount":12,"candidatesTokenCount":64,"totalTokenCount":76}'
      : `{"promptTokenCount":12,"candidatesTokenCount":${i + 1},"totalTokenCount":${13 + i}}`
    chunks.push(
      `data: {"candidates":[{"content":{"parts":[{"text":"tok${i} "}],"role":"model"}${finish},"index":0}],"usageMetadata":${usage},${tail}`,
    )
  }
  return chunks.map((chunk) => Buffer.from(chunk))
}

const STREAMS: Record<ApiFamily, Buffer[]> = { openai: openAiStream(), anthropic: anthropicStream(), gemini: geminiStream() }

/** Converts `streams` streams; returns the bytes written (so the work cannot be optimised away). */
function convert(upstream: ApiFamily, client: ApiFamily, streams: number): number {
  const chunks = STREAMS[upstream]
  const events: StreamEvent[] = []
  let bytes = 0
  for (let s = 0; s < streams; s++) {
    const decoder = createDecoder(upstream)
    const encoder = createEncoder(client, { model: 'client-model', includeUsage: true })
    for (const chunk of chunks) {
      events.length = 0
      decoder.push(chunk, events)
      let out = ''
      for (let i = 0; i < events.length; i++) out += encoder.encode(events[i] as StreamEvent)
      bytes += out.length
    }
    events.length = 0
    decoder.end(events)
    bytes += encoder.finish().length
  }
  return bytes
}

function tap(upstream: ApiFamily, streams: number): number {
  const chunks = STREAMS[upstream]
  let total = 0
  for (let s = 0; s < streams; s++) {
    const extractor = new UsageExtractor(upstream satisfies Protocol)
    for (const chunk of chunks) extractor.write(chunk)
    total += extractor.result()?.totalTokens ?? 0
  }
  return total
}

/** CPU µs per upstream event of `run(streams)`. */
function measure(upstream: ApiFamily, run: (streams: number) => number): number {
  run(2_000) // warm-up
  const streams = 10_000
  const started = process.cpuUsage()
  if (run(streams) <= 0) throw new Error('nothing done')
  const used = process.cpuUsage(started)
  return (used.user + used.system) / (streams * STREAMS[upstream].length)
}

const FAMILIES: ApiFamily[] = ['openai', 'anthropic', 'gemini']
console.log(`${TOKENS}-token text streams, CPU µs per upstream event (one event per chunk)`)
console.log('upstream   client     convert  same-format tap')
for (const upstream of FAMILIES) {
  const baseline = measure(upstream, (streams) => tap(upstream, streams))
  for (const client of FAMILIES) {
    if (client === upstream) continue
    const cost = measure(upstream, (streams) => convert(upstream, client, streams))
    console.log(`${upstream.padEnd(10)} ${client.padEnd(10)} ${cost.toFixed(2).padStart(7)}  ${baseline.toFixed(2).padStart(7)}`)
  }
}
