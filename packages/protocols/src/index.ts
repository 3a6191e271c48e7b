export { ANTHROPIC_COUNT_TOKENS, ANTHROPIC_MESSAGES, ANTHROPIC_VERSION, anthropic } from './anthropic.js'
export { convertRequest, withAssistantPrefill } from './convert/request.js'
export { convertResponse, streamResponse } from './convert/response.js'
export { MAX_EVENT_CHARS } from './convert/sse.js'
export { createDecoder, createEncoder } from './convert/stream.js'
export {
  type ApiFamily,
  ConversionError,
  type EncoderOptions,
  type EncoderResume,
  type FinishReason,
  InvalidFieldError,
  MalformedStreamError,
  type NeutralUsage,
  type RequestConversion,
  type StreamDecoder,
  type StreamEncoder,
  type StreamEvent,
  splitToolCallId,
  toolCallIdWithSignature,
} from './convert/types.js'
export { type ClientError, convertUpstreamError, statusOfUpstreamError, upstreamErrorMessage } from './convert/upstream-error.js'
export { fromRecordUsage } from './convert/usage.js'
export { clientApiOf, defaultHealthCheckPath, pathOf, sendError, setUpstreamCredential, wireOf, wireOfProtocol } from './formats.js'
export { GEMINI_ACTIONS, GEMINI_COUNT_TOKENS, GEMINI_GENERATE, GEMINI_V1_GENERATE_PATH, gemini } from './gemini.js'
export { OPENAI_CHAT, OPENAI_ENDPOINTS, OPENAI_RESPONSES, openai } from './openai.js'
export { UsageExtractor } from './usage-extract.js'
export { type Endpoint, familyOf, type OutputCap, type WireFormat } from './wire.js'
