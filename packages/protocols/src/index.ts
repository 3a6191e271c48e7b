export { convertResponse } from './convert/response.js'
export { createDecoder, createEncoder, type EncoderResume } from './convert/stream.js'
export {
  type ApiFamily,
  ConversionError,
  type EncoderOptions,
  type FinishReason,
  MalformedStreamError,
  type NeutralUsage,
  type RequestConversion,
  type StreamDecoder,
  type StreamEncoder,
  type StreamEvent,
  splitToolCallId,
  toolCallIdWithSignature,
} from './convert/types.js'
export { type ClientError, convertUpstreamError } from './convert/upstream-error.js'
export { toRecordUsage } from './convert/usage.js'
