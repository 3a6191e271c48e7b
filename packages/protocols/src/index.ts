export { convertRequest, withAssistantPrefill } from './convert/request.js'
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
