export { compileIpList } from './ip.js'
export { compileKeys, presentedKey, unsendableSecretProblem } from './keys.js'
export {
  type AuthCallbacks,
  type AuthOptions,
  AuthOptionsSchema,
  type AuthPluginOptions,
  type KeyConfig,
  KeyConfigSchema,
  type KeyIdentity,
  KeyQuotaSchema,
  KeyRateLimitSchema,
  KeysSchema,
  type ResolveKey,
} from './options.js'
export { AUTH_PLUGIN_NAME, type AuthDecorator, auth, isModelAllowed } from './plugin.js'
