export {
  type AdminApi,
  type AdminRoutesOptions,
  type AdminScope,
  type AdminUpstream,
  type AdminUsage,
  adminRoutes,
  localScope,
} from './admin.js'
export { buildGateway, type GatewayLifecycle, type GatewayOptions, genRequestId, REDACTED_PATHS, type WorkerLink } from './app.js'
export {
  type AdminSettings,
  AdminSettingsSchema,
  type Config,
  ConfigSchema,
  interpolateEnv,
  loadConfigFile,
  parseConfig,
  workerCount,
} from './config.js'
export { startDemo } from './demo.js'
export { type RunningGateway, startGateway } from './main.js'
export { REDACTED, redactConfig, redactConfigUrl, redactQueryCredentials } from './redact.js'
export type { ConfigReloader, ReloadHistory, ReloadResult, ReloadStatus } from './reload.js'
export { configJsonSchema, configReference } from './schema.js'
