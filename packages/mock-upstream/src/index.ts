export type { MockBehavior, MockDialect, MockFault, MockFinish, MockToolCall } from './behavior.js'
export {
  expectedContent,
  expectedReasoning,
  promptTokensFor,
  REASONING_WORDS,
  REDACTED_THINKING_DATA,
  signatureFor,
  WORDS,
} from './content.js'
export type { MockUpstreamEvents, RecordedRequest } from './job.js'
export { type MockProgram, type MockUpstream, type MockUpstreamOptions, startMockUpstream } from './server.js'
export { eventually, parseSse, rawExchange, type SseEvent } from './testing.js'
