export type { MockBehavior, MockFault } from './behavior.js'
export { expectedContent, promptTokensFor, WORDS } from './content.js'
export type { MockUpstreamEvents, RecordedRequest } from './job.js'
export { type MockProgram, type MockUpstream, type MockUpstreamOptions, startMockUpstream } from './server.js'
