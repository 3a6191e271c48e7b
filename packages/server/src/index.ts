export { type AdminApi, type AdminRoutesOptions, adminRoutes } from './admin.js'
export { buildGateway, type GatewayLifecycle, type GatewayOptions, genRequestId, REDACTED_PATHS } from './app.js'
export {
  type AdminSettings,
  AdminSettingsSchema,
  type Config,
  ConfigSchema,
  interpolateEnv,
  loadConfigFile,
  parseConfig,
} from './config.js'
export { startDemo } from './demo.js'
export { type RunningGateway, startGateway } from './main.js'
export { REDACTED, redactConfig, redactConfigUrl, redactQueryCredentials } from './redact.js'
export type { ConfigReloader, ReloadResult } from './reload.js'
export { configJsonSchema, configReference } from './schema.js'
