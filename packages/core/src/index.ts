export { ByteNeedle, flatText, keptTail, keptText } from './bytes.js'
export { type Attempt, type KeyLimits, LlmContext, type Outcome, type Rejection } from './context.js'
export { egressProxyAgent } from './egress.js'
export {
  CATALOGUE,
  type CatalogueEntry,
  coded,
  type ErrorBody,
  type ErrorCode,
  type ErrorType,
  echoed,
  errors,
  LlmProxyError,
  MAX_ECHOED_CHARS,
  toLlmProxyError,
  WWW_AUTHENTICATE,
} from './errors.js'
export { estimateTokensFromBytes } from './estimate.js'
export { makeDirectory } from './fs.js'
export { type LlmHookName, LlmHookRegistry, type LlmHooks } from './hooks.js'
export { JsonKeyScanner } from './json-scan.js'
export {
  ConfigError,
  type ConfigProblem,
  checkSchema,
  headerProblems,
  headerValueProblem,
  MAX_TIMER_MS,
  validateOptions,
} from './options.js'
export { CORE_PLUGIN_NAME, ensureCore, llmCore } from './plugin.js'
export { buildUsageRecord } from './usage-build.js'
export { ClientApi, Protocol, type Usage, type UsageRecord, UsageRecordSchema } from './usage-record.js'
