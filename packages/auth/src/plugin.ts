import {
  ConfigError,
  type ConfigProblem,
  checkSchema,
  ensureCore,
  errors,
  type LlmProxyError,
  type Rejection,
  validateOptions,
} from '@llmproxy/core'
import { sendError } from '@llmproxy/protocols'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import fp from 'fastify-plugin'
import { KeyCache } from './cache.js'
import { compileIpList, IpRules } from './ip.js'
import { compileEntry, compileKeys, isKeyIdentity, type KeyEntry, presentedKey, sha256Hex } from './keys.js'
import { AuthOptionsSchema, type AuthPluginOptions, type KeyConfig, type KeyIdentity, KeysSchema, type ResolveKey } from './options.js'

/** `fastify.llmAuth`: the configured keys, for an admin API. Never exposes keys or their hashes. */
export interface AuthDecorator {
  /** Ids of the configured keys (not those found by resolveKey). */
  keyIds(): string[]
  /** The identity of a configured key. */
  identity(id: string): KeyIdentity | undefined
  /** Hot reload: validates `keys`, then swaps the whole key table at once (throws a ConfigError, keeping the old table, when invalid). */
  update(keys: KeyConfig[]): void
  /** Forgets every cached resolveKey result (e.g. after revoking a key in your store). */
  clearCache(): void
}

declare module 'fastify' {
  interface FastifyInstance {
    llmAuth: AuthDecorator
  }
  interface FastifyRequest {
    /** The identity of the key this request presented; null when not authenticated (route opted out, skipped). */
    llmKey: KeyIdentity | null
  }
  interface FastifyContextConfig {
    /** `false`: this route is not checked by @llmproxy/auth (neither IP nor key). */
    auth?: boolean
  }
}

export const AUTH_PLUGIN_NAME = '@llmproxy/auth'

const authPlugin: FastifyPluginAsync<AuthPluginOptions> = async (fastify, opts) => {
  await ensureCore(fastify)
  const { resolveKey, skip, ...data } = opts
  const problems: ConfigProblem[] = []
  if (resolveKey !== undefined && typeof resolveKey !== 'function') problems.push({ path: '/resolveKey', message: 'must be a function' })
  if (skip !== undefined && typeof skip !== 'function') problems.push({ path: '/skip', message: 'must be a function' })
  if (problems.length > 0) throw new ConfigError(`${AUTH_PLUGIN_NAME} options`, problems)

  const options = validateOptions(AuthOptionsSchema, data, `${AUTH_PLUGIN_NAME} options`)
  let table = compileKeys(options.keys ?? [], '/keys', problems)
  const allow = options.ipAllowlist === undefined ? null : compileIpList(options.ipAllowlist, '/ipAllowlist', problems)
  const deny = options.ipDenylist === undefined ? null : compileIpList(options.ipDenylist, '/ipDenylist', problems)
  if (problems.length > 0) throw new ConfigError(`${AUTH_PLUGIN_NAME} options`, problems)

  const ipRules = allow === null && deny === null ? null : new IpRules(allow, deny)
  const cache = resolveKey === undefined ? null : new KeyCache(options.cache)
  const hooks = fastify.llm
  // The rejections never change: built once, not per request.
  const missingKey = errors.missingApiKey()
  const invalidKey = errors.invalidApiKey()
  const ipDenied = errors.ipDenied()
  const keyInQuery = options.keyInQuery

  fastify.decorateRequest('llmKey', null)
  fastify.decorate('llmAuth', {
    keyIds: () => [...table.byId.keys()],
    identity: (id: string) => table.byId.get(id)?.identity,
    update(keys: KeyConfig[]) {
      const found = checkSchema(KeysSchema, keys, '/keys')
      const next = found.length === 0 ? compileKeys(keys, '/keys', found) : null
      if (next === null || found.length > 0) throw new ConfigError(`${AUTH_PLUGIN_NAME} keys`, found)
      table = next
      fastify.log.info({ keys: next.byId.size }, 'auth keys updated')
    },
    clearCache() {
      cache?.clear()
    },
  } satisfies AuthDecorator)

  function reject(request: FastifyRequest, reply: FastifyReply, error: LlmProxyError, reason: Rejection['reason']): void {
    if (hooks.hasListeners('onReject')) hooks.emitReject({ reason, keyId: null, statusCode: error.statusCode }, request)
    sendError(reply, error)
  }

  function unknownKey(request: FastifyRequest, reply: FastifyReply, hash: string): void {
    request.log.debug({ keyHash: hash.slice(0, 8) }, 'unknown API key')
    reject(request, reply, invalidKey, 'auth')
  }

  fastify.addHook('onRequest', function authenticate(request, reply, done) {
    if (request.routeOptions.config.auth === false || skip?.(request) === true) return done()
    if (ipRules !== null && !ipRules.allows(request.ip)) {
      request.log.debug({ ip: request.ip }, 'address refused')
      return reject(request, reply, ipDenied, 'ip')
    }
    const key = presentedKey(request.headers, request.url, keyInQuery)
    if (key === undefined) return reject(request, reply, missingKey, 'auth')
    // Looked up by the key's digest, never by the key: the lookup's timing tells nothing about a configured key.
    const hash = sha256Hex(key)
    const configured = table.byHash.get(hash)
    if (configured !== undefined) {
      accept(request, configured)
      return done()
    }
    if (cache === null || resolveKey === undefined) return unknownKey(request, reply, hash)
    const cached = cache.get(hash)
    if (cached === null) return unknownKey(request, reply, hash)
    if (cached !== undefined) {
      accept(request, cached)
      return done()
    }
    lookup(cache, resolveKey, request, reply, done, key, hash)
  })

  function lookup(
    cache: KeyCache,
    resolve: ResolveKey,
    request: FastifyRequest,
    reply: FastifyReply,
    done: HookHandlerDoneFunction,
    key: string,
    hash: string,
  ): void {
    cache
      .resolve(hash, () => load(resolve, request, key))
      .then(
        (entry) => {
          if (entry === null) return unknownKey(request, reply, hash)
          accept(request, entry)
          done()
        },
        (err: unknown) => {
          request.log.error({ err: redact(err, key), keyHash: hash.slice(0, 8) }, 'resolveKey failed')
          sendError(reply, errors.internal())
        },
      )
  }
}

async function load(resolve: ResolveKey, request: FastifyRequest, key: string): Promise<KeyEntry | null> {
  const identity: unknown = await resolve(request, key)
  if (identity === null || identity === undefined) return null
  if (!isKeyIdentity(identity)) throw new TypeError('resolveKey must return null or an object with a non-empty string "id"')
  return compileEntry(identity)
}

function accept(request: FastifyRequest, entry: KeyEntry): void {
  const llm = request.llm
  llm.keyId = entry.identity.id
  llm.allowedModels = entry.allowedModels
  llm.keyLimits = entry.limits
  request.llmKey = entry.identity
}

/** What of a resolveKey error may be logged: its type, message and stack, with the key cut out. */
function redact(err: unknown, key: string): { type: string; message: string; stack?: string } {
  if (!(err instanceof Error)) return { type: typeof err, message: 'non-error thrown' }
  const out: { type: string; message: string; stack?: string } = { type: err.name, message: err.message.replaceAll(key, '[redacted]') }
  if (err.stack !== undefined) out.stack = err.stack.replaceAll(key, '[redacted]')
  return out
}

/**
 * API keys and IP allow/deny lists, as an `onRequest` hook. Sets `request.llm.keyId`,
 * `request.llm.allowedModels`, `request.llm.keyLimits` and `request.llmKey`.
 */
export const auth = fp(authPlugin, { name: AUTH_PLUGIN_NAME, fastify: '5.x' })

/**
 * True when the request's key may use a model under any of `names` (e.g. the name asked for and the
 * route it resolves to). The router checks this itself; call it when you use auth without the router.
 */
export function isModelAllowed(request: FastifyRequest, ...names: string[]): boolean {
  const allowed = request.llm.allowedModels
  if (allowed === null) return true
  for (let i = 0; i < names.length; i++) if (allowed.has(names[i] as string)) return true
  return false
}
