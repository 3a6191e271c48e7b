import { createHmac, timingSafeEqual } from 'node:crypto'

function hmacHex(secret: string, t: number, body: string | Buffer): string {
  return createHmac('sha256', secret).update(`${t}.`).update(body).digest('hex')
}

/**
 * The `x-llmproxy-signature` header value for `body`:
 * `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
 */
export function signPayload(secret: string, body: string | Buffer, t: number = Math.floor(Date.now() / 1000)): string {
  return `t=${t},v1=${hmacHex(secret, t, body)}`
}

/**
 * Checks an `x-llmproxy-signature` header against the raw request body (the exact bytes received,
 * before any JSON parsing). False when the header is missing or malformed, when its timestamp is more
 * than `toleranceSec` away from now (replay protection), or when no `v1` signature matches.
 * The comparison is timing-safe.
 */
export function verifySignature(
  secret: string,
  header: string | string[] | null | undefined,
  rawBody: string | Buffer,
  toleranceSec = 300,
): boolean {
  if (typeof header !== 'string') return false
  let t = Number.NaN
  const candidates: string[] = []
  for (const part of header.split(',')) {
    const eq = part.indexOf('=')
    if (eq === -1) continue
    const key = part.slice(0, eq).trim()
    const value = part.slice(eq + 1).trim()
    if (key === 't' && /^\d{1,12}$/.test(value)) t = Number(value)
    else if (key === 'v1') candidates.push(value)
  }
  if (Number.isNaN(t) || candidates.length === 0) return false
  if (Math.abs(Date.now() / 1000 - t) > toleranceSec) return false
  const expected = Buffer.from(hmacHex(secret, t, rawBody))
  let ok = false
  for (const candidate of candidates) {
    const given = Buffer.from(candidate)
    if (given.length === expected.length && timingSafeEqual(given, expected)) ok = true
  }
  return ok
}
