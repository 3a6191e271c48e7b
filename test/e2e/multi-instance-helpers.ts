// Helpers for the cross-process e2e tests: the repository root and a tiny Redis client
// (RESP over a socket: the test workspace does not depend on ioredis).
import { connect } from 'node:net'
import { fileURLToPath } from 'node:url'

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url))
export const REDIS_URL = process.env.LLMPROXY_TEST_REDIS_URL ?? 'redis://127.0.0.1:6390'

// ---------------------------------------------------------------------------------------------------------------
// Redis (RESP2), one connection per call: enough for set-up checks, polling counters and cleaning up.

export type RespValue = string | number | null | RespValue[]

class RespError extends Error {}

/** Parses one RESP value at `at`; undefined when the buffer does not hold all of it yet. */
function parseResp(buf: Buffer, at: number): { value: RespValue | RespError; end: number } | undefined {
  const lineEnd = buf.indexOf('\r\n', at)
  if (lineEnd < 0) return undefined
  const type = String.fromCharCode(buf[at] ?? 0)
  const line = buf.toString('utf8', at + 1, lineEnd)
  const next = lineEnd + 2
  switch (type) {
    case '+':
      return { value: line, end: next }
    case '-':
      return { value: new RespError(line), end: next }
    case ':':
      return { value: Number(line), end: next }
    case '$': {
      const length = Number(line)
      if (length < 0) return { value: null, end: next }
      if (buf.length < next + length + 2) return undefined
      return { value: buf.toString('utf8', next, next + length), end: next + length + 2 }
    }
    case '*': {
      const count = Number(line)
      if (count < 0) return { value: null, end: next }
      const items: RespValue[] = []
      let end = next
      for (let i = 0; i < count; i++) {
        const item = parseResp(buf, end)
        if (item === undefined) return undefined
        if (item.value instanceof RespError) return { value: item.value, end: item.end }
        items.push(item.value)
        end = item.end
      }
      return { value: items, end }
    }
    default:
      return { value: new RespError(`unexpected RESP type ${JSON.stringify(type)}`), end: buf.length }
  }
}

function encode(args: readonly string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`
}

/** Runs commands on one connection (after AUTH / SELECT from the URL) and resolves with the last reply. */
export function redis(commands: readonly (readonly string[])[], url = REDIS_URL, timeoutMs = 3000): Promise<RespValue> {
  const parsed = new URL(url)
  const all: string[][] = []
  if (parsed.password !== '') {
    const password = decodeURIComponent(parsed.password)
    all.push(parsed.username === '' ? ['AUTH', password] : ['AUTH', decodeURIComponent(parsed.username), password])
  }
  const db = parsed.pathname.replace(/^\//, '')
  if (db !== '') all.push(['SELECT', db])
  all.push(...commands.map((c) => [...c]))
  return new Promise((resolve, reject) => {
    const socket = connect(Number(parsed.port || 6379), parsed.hostname)
    let buf = Buffer.alloc(0)
    let replies = 0
    let last: RespValue = null
    const timer = setTimeout(() => finish(new Error(`redis: no answer within ${timeoutMs} ms`)), timeoutMs)
    const finish = (err: Error | null): void => {
      clearTimeout(timer)
      socket.destroy()
      if (err === null) resolve(last)
      else reject(err)
    }
    socket.once('error', (err) => finish(err))
    socket.once('connect', () => socket.write(all.map(encode).join('')))
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      for (;;) {
        const item = parseResp(buf, 0)
        if (item === undefined) return
        buf = buf.subarray(item.end)
        if (item.value instanceof RespError) return finish(new Error(`redis: ${item.value.message}`))
        last = item.value
        if (++replies === all.length) return finish(null)
      }
    })
  })
}

export async function redisReachable(url = REDIS_URL): Promise<boolean> {
  try {
    return (await redis([['PING']], url, 1500)) === 'PONG'
  } catch {
    return false
  }
}

/** Keys matching a glob pattern (KEYS: fine for a test database). */
export async function redisKeys(pattern: string, url = REDIS_URL): Promise<string[]> {
  const reply = await redis([['KEYS', pattern]], url)
  return Array.isArray(reply) ? reply.filter((k): k is string => typeof k === 'string') : []
}

/** The sum of the integer values of the keys matching a pattern (0 when none). */
export async function redisSum(pattern: string, url = REDIS_URL): Promise<number> {
  const keys = await redisKeys(pattern, url)
  if (keys.length === 0) return 0
  const values = await redis([['MGET', ...keys]], url)
  if (!Array.isArray(values)) return 0
  return values.reduce<number>((sum, v) => sum + (typeof v === 'string' ? Number(v) : 0), 0)
}

export async function redisDeletePrefix(prefix: string, url = REDIS_URL): Promise<void> {
  const keys = await redisKeys(`${prefix}*`, url)
  if (keys.length > 0) await redis([['DEL', ...keys]], url)
}

// ---------------------------------------------------------------------------------------------------------------
// Windows

/**
 * Runs a windowed scenario with the first key; if it fails and the window (UTC minute or day) changed
 * meanwhile, the counters were split between two windows: it runs again once with a fresh key.
 */
export async function inOneWindow(windowMs: number, ids: readonly string[], run: (index: number) => Promise<void>): Promise<void> {
  for (let i = 0; i < ids.length; i++) {
    const window = Math.floor(Date.now() / windowMs)
    try {
      await run(i)
      return
    } catch (err) {
      if (i === ids.length - 1 || Math.floor(Date.now() / windowMs) === window) throw err
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Gateway processes
