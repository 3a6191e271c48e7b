// The usage tap's cost per chunk: what reading usage beside a stream costs, without the network.
// Run: node --conditions=llmproxy-source --import tsx packages/protocols/bench/tap.ts
// An OpenAI chat stream with include_usage (64 tokens, `"usage":null` on every chunk as OpenAI sends
// it, then the usage chunk), one event per chunk as upstreams write them, fed through UsageExtractor.
import { UsageExtractor } from '@llmproxy/protocols'

const chunks: Buffer[] = []
for (let i = 0; i < 64; i++) {
  chunks.push(
    Buffer.from(
      `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"tok${i} "},"finish_reason":null}],"usage":null}\n\n`,
    ),
  )
}
chunks.push(
  Buffer.from(
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":64,"total_tokens":76,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}\n\n',
  ),
)
chunks.push(Buffer.from('data: [DONE]\n\n'))

function run(streams: number): number {
  let total = 0
  for (let s = 0; s < streams; s++) {
    const extractor = new UsageExtractor('openai')
    for (const chunk of chunks) extractor.write(chunk)
    total += extractor.result()?.totalTokens ?? 0
  }
  return total
}

run(20_000) // warm-up
const streams = 100_000
const started = process.cpuUsage()
const check = run(streams)
const used = process.cpuUsage(started)
const ns = ((used.user + used.system) * 1000) / (streams * chunks.length)
if (check !== streams * 76) throw new Error('wrong usage')
console.log(
  `usage tap: ${ns.toFixed(0)} ns CPU per chunk, ${((ns * chunks.length) / 1000).toFixed(1)} µs per 64-token stream (incl. the JSON.parse of the usage object)`,
)
