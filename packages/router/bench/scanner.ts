// The stream scanner's cost per chunk on a Gemini stream: what finding the events, errors and the terminator beside
// the relay costs, without the network or the usage tap.
// Run: node --conditions=llmproxy-source --import tsx packages/router/bench/scanner.ts [whole|split]
// A Gemini alt=sse answer as Google writes it (spaced JSON, CRLF, cumulative usageMetadata on every event): 64 text
// events, then the last with finishReason. `whole`: one event per chunk, as upstreams write them; `split`: each event
// cut in two reads mid-line (a busy connection), so that lines are carried across chunks.
import { GEMINI_GENERATE, UsageExtractor } from '@llmproxy/protocols'
import { StreamScanner } from '../src/scanner.js'

const event = (i: number, last: boolean) =>
  `data: {"candidates": [{"content": {"parts": [{"text": "token ${i} of the answer, "}],"role": "model"}${last ? ',"finishReason": "STOP"' : ''},"index": 0}],"usageMetadata": {"promptTokenCount": 12,"candidatesTokenCount": ${i},"totalTokenCount": ${12 + i},"promptTokensDetails": [{"modality": "TEXT","tokenCount": 12}]},"modelVersion": "gemini-2.5-flash","responseId": "Vw1kaPrYJ5SbsbQP2-idoQk"}\r\n\r\n`
const events: Buffer[] = []
for (let i = 1; i <= 65; i++) events.push(Buffer.from(event(i, i === 65)))
const split = process.argv[2] === 'split'
const chunks = split ? events.flatMap((e) => [e.subarray(0, e.length >> 1), e.subarray(e.length >> 1)]) : events

function run(streams: number): number {
  let ended = 0
  for (let s = 0; s < streams; s++) {
    const scanner = new StreamScanner(GEMINI_GENERATE, new UsageExtractor('gemini'))
    for (const chunk of chunks) {
      scanner.scan(chunk)
      scanner.checkEnd(chunk)
    }
    if (scanner.sawTerminator && scanner.dataEvents === 65) ended++
  }
  return ended
}

run(20_000) // warm-up
const streams = 50_000
const started = process.cpuUsage()
const ended = run(streams)
const used = process.cpuUsage(started)
if (ended !== streams) throw new Error('the terminator was not found')
console.log(((used.user + used.system) * 1000) / (streams * chunks.length))
