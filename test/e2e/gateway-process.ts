// The real CLI (from source) as a child process: started, waited for, and stopped with any signal.
import { type ChildProcess, spawn } from 'node:child_process'
import { pollUntil, sleep } from './http-helpers.js'
import { REPO_ROOT } from './multi-instance-helpers.js'

/** The JSON log lines a gateway process wrote so far (with workers: the primary's and every worker's). */
export function logLines(gateway: GatewayChild): Record<string, unknown>[] {
  return gateway
    .output()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
}

/**
 * Resolves once the primary says all `workers` listen (at once for one process): its SIGTERM handler is on from then
 * on (a SIGTERM before it ends the primary by Node's default action).
 */
export async function workersReady(gateway: GatewayChild, workers: number, timeoutMs?: number): Promise<void> {
  await pollUntil(
    async () => gateway.output(),
    (output) => workers === 1 || output.includes(`with ${workers} workers`),
    'the primary to report its workers listening',
    timeoutMs,
  )
}

/** The pid of the current process of worker `id` (its last "Server listening" line). */
export function workerPid(gateway: GatewayChild, id: number): number {
  const pid = logLines(gateway).findLast((l) => l.worker === id && String(l.msg).startsWith('Server listening'))?.pid
  if (typeof pid !== 'number') throw new Error(`no listening line of worker ${id}`)
  return pid
}

export interface GatewayChild {
  readonly url: string
  readonly child: ChildProcess
  /** Everything the process wrote so far (stdout, then stderr). */
  output(): string
  /** Sends `signal` and resolves once the process has exited (SIGKILL after `graceMs` if it has not). Idempotent. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>
}

function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null
}

function exitWithin(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (hasExited(child)) return Promise.resolve(true)
  return new Promise((resolve) => {
    const onExit = (): void => {
      clearTimeout(timer)
      resolve(true)
    }
    const timer = setTimeout(() => {
      child.off('exit', onExit)
      resolve(false)
    }, timeoutMs)
    child.once('exit', onExit)
  })
}

/**
 * Starts `cli.ts --config FILE --port PORT` from source and resolves once it listens and `/healthz`
 * answers 200. `onSpawn` gets a stopper at once, so the caller can register it for cleanup before
 * anything can fail. The config must log at `info` (the listening line gives the URL).
 */
export async function spawnGateway(
  configFile: string,
  onSpawn: (stop: () => Promise<void>) => void,
  port = 0,
  startTimeoutMs = 60_000,
  extraEnv: NodeJS.ProcessEnv = {},
): Promise<GatewayChild> {
  const env = { ...process.env, ...extraEnv }
  delete env.NODE_TEST_CONTEXT // the child is a server, not a test runner child
  const child = spawn(
    process.execPath,
    ['--conditions=llmproxy-source', '--import', 'tsx', 'packages/server/src/cli.ts', '--config', configFile, '--port', String(port)],
    { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let stdout = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8').on('data', (s: string) => {
    stdout += s
  })
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    stderr += s
  })
  const output = (): string => `${stdout}${stderr === '' ? '' : `\n[stderr]\n${stderr}`}`
  const stop = async (signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<void> => {
    if (hasExited(child)) return
    child.kill(signal)
    if (await exitWithin(child, graceMs)) return
    child.kill('SIGKILL')
    await exitWithin(child, 10_000)
  }
  onSpawn(() => stop())

  try {
    const deadline = Date.now() + startTimeoutMs
    let url: string | null = null
    while (url === null) {
      const found = /Server listening at (http:\/\/[^"\s]+)/.exec(stdout)
      if (found?.[1] !== undefined) url = found[1]
      else {
        if (hasExited(child)) throw new Error(`the gateway exited before listening (code ${child.exitCode}):\n${output()}`)
        if (Date.now() > deadline) throw new Error(`the gateway did not listen within ${startTimeoutMs} ms:\n${output()}`)
        await sleep(50)
      }
    }
    for (;;) {
      const ok = await fetch(`${url}/healthz`).then(
        (res) => res.arrayBuffer().then(() => res.status === 200),
        () => false,
      )
      if (ok) break
      if (hasExited(child)) throw new Error(`the gateway exited (code ${child.exitCode}):\n${output()}`)
      if (Date.now() > deadline) throw new Error(`/healthz did not answer 200 within ${startTimeoutMs} ms:\n${output()}`)
      await sleep(100)
    }
    return { url, child, output, stop }
  } catch (err) {
    await stop('SIGKILL', 1000)
    throw err
  }
}
