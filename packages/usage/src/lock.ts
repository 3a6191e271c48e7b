import * as fs from 'node:fs'
import * as path from 'node:path'
import { ConfigError } from '@llmproxy/core'

const LOCK_FILE = 'lock'
/** Spool directories open in this process (another app on the same directory would corrupt it). */
const openDirs = new Set<string>()

/**
 * One writer per spool: refuses a directory held by this process or by another live process (see LockHolder).
 * A lock left by a process that is gone (crash, kill -9), even when its pid now names another process, is taken
 * over.
 */
export function lockSpoolDir(dir: string): void {
  if (openDirs.has(dir)) throw inUse(`${dir} is already open in this process`)
  const file = path.join(dir, LOCK_FILE)
  const holder = readLockHolder(file)
  if (holder !== null && holder.pid !== process.pid && stillHolds(holder)) {
    throw inUse(`${dir} is in use by process ${holder.pid}`)
  }
  fs.writeFileSync(file, JSON.stringify(ownLockHolder()))
  openDirs.add(dir)
}

/** The spool is closed: its directory is free for the next writer. */
export function unlockSpoolDir(dir: string): void {
  fs.rmSync(path.join(dir, LOCK_FILE), { force: true })
  openDirs.delete(dir)
}

/**
 * The process a spool's `lock` names. A pid alone outlives its process: a killed gateway's pid is a zombie until
 * reaped, and later (after a reboot, or in a restarted container) another process's. So on Linux the lock also
 * records the process's start time and the boot: a lock whose holder is gone, a zombie, or not the same process is
 * stale. Without /proc it holds the pid only (and an earlier version's lock is the bare pid).
 */
interface LockHolder {
  pid: number
  /** Start time of the process, in clock ticks after boot (/proc/<pid>/stat, field 22). */
  start?: number
  /** /proc/sys/kernel/random/boot_id */
  boot?: string
}

/** This process, as its lock names it. */
function ownLockHolder(): LockHolder {
  return { pid: process.pid, start: processStat(process.pid)?.start, boot: bootId() }
}

function readLockHolder(file: string): LockHolder | null {
  let value: unknown
  try {
    value = JSON.parse(fs.readFileSync(file, 'utf8'))
  } catch {
    return null
  }
  // A bare number is the lock of an earlier version: the pid only.
  const { pid, start, boot } = (typeof value === 'number' ? { pid: value } : (value ?? {})) as Record<string, unknown>
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) return null
  return { pid, start: typeof start === 'number' ? start : undefined, boot: typeof boot === 'string' ? boot : undefined }
}

/** Whether the process that wrote the lock is still running. */
function stillHolds(holder: LockHolder): boolean {
  const boot = bootId()
  if (holder.boot !== undefined && boot !== undefined && holder.boot !== boot) return false
  const stat = processStat(holder.pid)
  // No /proc (not Linux), or no such process (or one /proc hides): the kernel tells whether the pid exists.
  if (stat === null) return processAlive(holder.pid)
  if (stat.state === 'Z' || stat.state === 'X') return false
  return holder.start === undefined || holder.start === stat.start
}

/** State and start time of a process, from /proc/<pid>/stat (Linux); null when unreadable. */
function processStat(pid: number): { state: string; start: number } | null {
  let text: string
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  // The fields after the command name (field 2, in parentheses; it may contain spaces and parentheses itself).
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return { state: fields[0] as string, start: Number(fields[19]) }
}

function bootId(): string | undefined {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
  } catch {
    return undefined
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** A spool directory another writer holds: the config's to fix (one gateway process per spool directory). */
function inUse(why: string): ConfigError {
  return new ConfigError('@llmproxy/usage options', [{ path: '/spoolDir', message: `${why}: give each gateway process its own` }])
}
