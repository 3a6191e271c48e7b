import pino from 'pino'
import type { Config } from './config.js'

export const REDACTED = '[redacted]'

/** Query parameter names whose values are credentials (`key`, `api_key`, `token`, `access_token`, `X-Amz-Signature`, …). */
const CREDENTIAL_PARAM = /key|token|secret|passw|pwd|auth|sig|credential|session|^code$/i
const QUERY_PARAM = /([?&])([^=&#\s]*)=([^&#\s"'<>]*)/g

function isCredential(name: string): boolean {
  let decoded: string
  try {
    decoded = decodeURIComponent(name.replaceAll('+', ' '))
  } catch {
    return true // undecodable: it could be anything
  }
  return CREDENTIAL_PARAM.test(decoded)
}

/**
 * A URL, or a text holding URLs (an error message, a stack), with the values of credential query parameters
 * replaced (`?key=sk-…` → `?key=[redacted]`); other parameters (`alt=sse`) are kept. Names are compared decoded,
 * as the auth plugin reads them (`%6Bey=` is `key=`).
 */
export function redactQueryCredentials(text: string): string {
  if (!text.includes('?')) return text
  return text.replace(QUERY_PARAM, (match, sep: string, name: string) => (isCredential(name) ? `${sep}${name}=${REDACTED}` : match))
}

const errorSerializer = pino.stdSerializers.err

/**
 * pino serializers of the gateway's logger: every `url` and every message, error message and stack pass through
 * redactQueryCredentials, whoever logs them (request lines, error logs, the admin API, Fastify itself).
 */
export const logSerializers = {
  url: (url: unknown): unknown => (typeof url === 'string' ? redactQueryCredentials(url) : url),
  msg: (msg: unknown): unknown => (typeof msg === 'string' ? redactQueryCredentials(msg) : msg),
  err: (err: Error): unknown => {
    const out = errorSerializer(err)
    if (typeof out.message === 'string') out.message = redactQueryCredentials(out.message)
    if (typeof out.stack === 'string') out.stack = redactQueryCredentials(out.stack)
    return out
  },
}

/** Property names whose string values are secrets, wherever they are in the config. */
const SECRET_PROPERTY = /^(apiKey|key|secret|token|password|sentinelPassword)$/i
/** Free-form maps: every value is redacted, whatever its name (only the names are shown). */
const OPAQUE_MAPS = new Set(['headers', 'metadata'])
const USERINFO = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)@/i
const QUERY_VALUE = /([?&][^=&#]*)=[^&#]*/g

/**
 * A URL of the config as shown: the password of its user info (or the user info, when it is a token alone) and
 * every query parameter value redacted; the rest (scheme, host, path, parameter names) shown.
 */
export function redactConfigUrl(url: string): string {
  return url
    .replace(USERINFO, (_match, scheme: string, userinfo: string) => {
      const colon = userinfo.indexOf(':')
      return `${scheme}${colon === -1 ? REDACTED : `${userinfo.slice(0, colon)}:${REDACTED}`}@`
    })
    .replace(QUERY_VALUE, `$1=${REDACTED}`)
}

function redact(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redact)
  if (value === null || typeof value !== 'object') return value
  const out: Record<string, unknown> = {}
  for (const [key, item] of Object.entries(value)) {
    if (OPAQUE_MAPS.has(key) && item !== null && typeof item === 'object') {
      out[key] = Object.fromEntries(Object.keys(item).map((name) => [name, REDACTED]))
    } else if (typeof item === 'string') {
      if (SECRET_PROPERTY.test(key)) out[key] = REDACTED
      else if (key === 'url' || key === 'path') out[key] = redactConfigUrl(item)
      else out[key] = item
    } else {
      out[key] = redact(item)
    }
  }
  return out
}

/**
 * The config as the admin API shows it. What is shown is what is known to be safe: every value of a free-form map
 * (upstream and webhook `headers`, key `metadata`) is redacted whatever its name, as are apiKeys, auth keys, the
 * webhook secret, the admin token, and in URLs the password and every query parameter value.
 */
export function redactConfig(config: Config): Config {
  return redact(config) as Config
}
