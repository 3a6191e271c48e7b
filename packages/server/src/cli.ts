#!/usr/bin/env node
import cluster from 'node:cluster'
import { writeSync } from 'node:fs'
import { parseArgs } from 'node:util'
import type { ConfigProblem } from '@llmproxy/core'
import type { GatewayOptions } from './app.js'
import type { Config } from './config.js'
import { WORKER_ID_ENV } from './workers/ops.js'

// Signals whose default action in Node ends the process, and which come while the gateway starts: SIGHUP means
// "reload" here, and reload tools send it as soon as a start returns (systemctl reload, a config-reloader sidecar);
// SIGTERM and SIGINT mean "stop gracefully", and come whenever a stop is asked for (a `systemctl stop` or a Ctrl-C
// right after a start; with workers, the primary's stop reaching a worker that still starts). So they are caught
// before anything else runs (the gateway's modules are imported in main(), after this; they take a second to load on
// a busy machine). A SIGHUP that comes before the gateway serves is replayed as one reload once it does: the file may
// have changed after it was read. A SIGTERM or SIGINT ends the start where it can (with workers, the workers not yet
// listening are not waited for) and stops what started as a stop after the start does, with the same exit code.
let sighupWhileStarting = false
const holdSighup = (): void => {
  sighupWhileStarting = true
}
/** Aborted by the first SIGTERM or SIGINT that comes while starting; its reason is the stop's, as logged. */
const stopWhileStarting = new AbortController()
const holdStop = (signal: NodeJS.Signals): void => {
  if (!stopWhileStarting.signal.aborted) stopWhileStarting.abort(`${signal} (received while starting)`)
}
const STOP_SIGNALS = ['SIGTERM', 'SIGINT'] as const
process.on('SIGHUP', holdSighup)
for (const signal of STOP_SIGNALS) process.on(signal, holdStop)
// Run from the bundle, its launcher (scripts/launcher.cjs, or first scripts/start.mjs under `pnpm start`) held these
// signals while it read and compiled it (and built it): this hold takes over, and a signal that one noted counts as
// one received while starting.
const LAUNCHER_SIGNAL_HOLD = Symbol.for('llmproxy.launcherSignalHold')
interface LauncherHold {
  received: NodeJS.Signals[]
  listener: (signal: NodeJS.Signals) => void
}
const launcherHold = (globalThis as Record<symbol, LauncherHold | undefined>)[LAUNCHER_SIGNAL_HOLD]
if (launcherHold !== undefined) {
  for (const signal of ['SIGHUP', ...STOP_SIGNALS] as const) process.off(signal, launcherHold.listener)
  for (const signal of launcherHold.received) {
    if (signal === 'SIGHUP') holdSighup()
    else holdStop(signal)
  }
}

/**
 * Replaces the holding SIGHUP handler with `reload`, and calls it now if a SIGHUP came while starting (unless a stop
 * came too).
 */
function reloadOnSighup(reload: (signal: string) => void): void {
  // The new listener first: with none left for a moment, Node would stop watching the signal and drop one it has
  // caught but not yet handed to a listener (a SIGHUP during the synchronous end of the start).
  process.on('SIGHUP', () => reload('SIGHUP'))
  process.off('SIGHUP', holdSighup)
  if (sighupWhileStarting && !stopWhileStarting.signal.aborted) reload('SIGHUP (received while starting)')
}

/**
 * Replaces the holding SIGTERM and SIGINT handlers with `stop` (called once), and calls it now if one came while
 * starting; returns whether it did. Every later SIGTERM or SIGINT is caught too: a second one (a Ctrl-C pressed
 * twice; a signal to the whole process group, which reaches a worker from the service manager and from the primary)
 * must not end a stopping gateway by Node's default action.
 */
function stopOnSignals(stop: (reason: string) => void): boolean {
  let stopping = false
  const stopOnce = (reason: string): void => {
    if (stopping) return
    stopping = true
    stop(reason)
  }
  for (const signal of STOP_SIGNALS) {
    process.on(signal, stopOnce)
    process.off(signal, holdStop)
  }
  if (stopWhileStarting.signal.aborted) stopOnce(String(stopWhileStarting.signal.reason))
  return stopping
}

/**
 * The log lines gateway loggers wrote to stdout in this process, written or dropped within a bound (see written in
 * app.ts); set once the gateway's modules are loaded. An exit that is not a stop waits for it.
 */
let stdoutWritten: (() => Promise<void>) | null = null

function parseCommandLine(args: string[]) {
  return parseArgs({
    args,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      port: { type: 'string', short: 'p' },
      workers: { type: 'string', short: 'w' },
      help: { type: 'boolean', short: 'h' },
    },
  })
}

const USAGE = `Usage:
  llmproxy [--config FILE]      start the gateway (FILE or $LLMPROXY_CONFIG; neither = the built-in demo);
                                SIGHUP reloads FILE
  llmproxy check --config FILE  validate a config file and exit
  llmproxy schema               print the config's JSON Schema
Options:
  -c, --config FILE      YAML or JSON config file
  -p, --port N           override server.port
  -w, --workers N|auto   override server.workers (processes serving the port; auto = one per CPU core)
  -h, --help             this help`

/** `--workers`: a positive integer or `auto` (undefined, and a problem, otherwise). */
function workersFlag(text: string, problems: ConfigProblem[]): Config['server']['workers'] | undefined {
  if (text === 'auto') return 'auto'
  const n = Number(text)
  if (!/^\d+$/.test(text) || n < 1 || n > 1024) {
    problems.push({ path: '--workers', message: `must be an integer from 1 to 1024, or auto (got "${text}")` })
    return undefined
  }
  return n
}

/** `--port`: a TCP port, 0 for any free one (undefined, and a problem, otherwise). */
function portFlag(text: string, problems: ConfigProblem[]): number | undefined {
  const n = Number(text)
  if (!/^\d+$/.test(text) || n > 65535) {
    problems.push({ path: '--port', message: `must be an integer from 0 to 65535 (got "${text}")` })
    return undefined
  }
  return n
}

async function main(): Promise<number> {
  // A worker of `server.workers`: the primary forked it with the same command line, and sends it the config.
  if (cluster.isWorker && process.env[WORKER_ID_ENV] !== undefined) {
    const { runWorker } = await import('./workers/worker.js')
    ;({ stdoutWritten } = await import('./app.js'))
    // A worker ignores SIGHUP (the primary reloads them all): runWorker says so before it first waits.
    process.off('SIGHUP', holdSighup)
    await runWorker(stopOnSignals)
    return -1
  }
  // `pnpm start -- --config x` passes the `--` on: it is not a command.
  const args = process.argv.slice(2)
  if (args[0] === '--') args.shift()
  let parsed: ReturnType<typeof parseCommandLine>
  try {
    parsed = parseCommandLine(args)
  } catch (err) {
    // An unknown option, or one without its value: what the user typed wrong (Node's first sentence), and the usage.
    process.stderr.write(`${(err as Error).message.split('. ')[0]}.\n${USAGE}\n`)
    return 2
  }
  const { values, positionals } = parsed
  const command = positionals[0] ?? 'start'
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  if (command === 'schema') {
    const { configJsonSchema } = await import('./schema.js')
    process.stdout.write(`${JSON.stringify(configJsonSchema(), null, 2)}\n`)
    return 0
  }
  const file = values.config ?? process.env.LLMPROXY_CONFIG
  const { loadConfigFile, workerCount } = await import('./config.js')
  if (command === 'check') {
    if (file === undefined) {
      process.stderr.write(`check needs --config FILE (or LLMPROXY_CONFIG).\n${USAGE}\n`)
      return 2
    }
    loadConfigFile(file)
    process.stdout.write(`${file}: valid\n`)
    return 0
  }
  if (command !== 'start') {
    process.stderr.write(`Unknown command "${command}".\n${USAGE}\n`)
    return 2
  }
  let config: Config
  let stopDemo: (() => Promise<void>) | null = null
  const options: GatewayOptions = {}
  const flagProblems: ConfigProblem[] = []
  const workers = values.workers === undefined ? undefined : workersFlag(values.workers, flagProblems)
  const port = values.port === undefined ? undefined : portFlag(values.port, flagProblems)
  if (flagProblems.length > 0) {
    const { ConfigError } = await import('@llmproxy/core')
    throw new ConfigError('command line', flagProblems)
  }
  if (file === undefined) {
    const { startDemo } = await import('./demo.js')
    const demo = await startDemo(port ?? 8080, '127.0.0.1')
    config = demo.config
    if (workers !== undefined) config.server.workers = workers
    stopDemo = () => demo.mock.close()
  } else {
    config = loadConfigFile(file)
    // --port and --workers win over the file, at start and at every reload.
    const adjustConfig = (c: Config) => {
      if (port !== undefined) c.server.port = port
      if (workers !== undefined) c.server.workers = workers
    }
    adjustConfig(config)
    options.configFile = file
    options.adjustConfig = adjustConfig
  }
  ;({ stdoutWritten } = await import('./app.js'))
  const count = workerCount(config.server.workers)
  if (count > 1) {
    const { startPrimary } = await import('./workers/primary.js')
    const primary = await startPrimary({
      config,
      workers: count,
      configFile: options.configFile ?? null,
      adjustConfig: options.adjustConfig,
      stopWhileStarting: stopWhileStarting.signal,
    }).catch(async (err: unknown) => {
      await stopDemo?.()
      throw err
    })
    const stop = (reason: string) => {
      primary
        .shutdown(reason)
        .then(() => stopDemo?.())
        .then(
          () => process.exit(0),
          () => process.exit(1),
        )
    }
    // The primary logs the reload's outcome.
    reloadOnSighup(() => {
      primary.reload().catch(() => undefined)
    })
    stopOnSignals(stop)
    return -1
  }
  const { startGateway } = await import('./main.js')
  const gateway = await startGateway(config, options)
  if (stopDemo !== null) {
    gateway.app.log.info(
      { url: gateway.url },
      `demo mode (no config): try  curl -N ${gateway.url}/v1/chat/completions -H 'content-type: application/json' -d '{"model":"demo","stream":true,"messages":[{"role":"user","content":"Hello"}]}'`,
    )
  }
  const stop = (reason: string) => {
    gateway
      .shutdown(reason)
      .then(() => stopDemo?.())
      .then(
        () => process.exit(0),
        () => process.exit(1),
      )
  }
  // SIGHUP: reload the config file (the reload logs its outcome; an invalid file changes nothing).
  reloadOnSighup((signal) => {
    gateway.app.log.info(`${signal}: reloading the config`)
    gateway.app.llmConfig.reload().catch(() => undefined)
  })
  stopOnSignals(stop)
  return -1
}

main().then(
  (code) => {
    if (code >= 0) process.exitCode = code
  },
  (err: unknown) => {
    // Config problems, and a worker's own start error, are the user's to fix: print them plainly, no stack trace.
    // By name: @llmproxy/core may not be loaded (a failed import).
    const plain = err instanceof Error && (err.name === 'ConfigError' || err.name === 'WorkerStartError')
    const message = plain ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)
    try {
      writeSync(2, `llmproxy: ${message}\n`)
    } catch {
      // stderr without a reader (EPIPE): the exit code says it.
    }
    // What the gateway logged before it failed, written first: pino's exit hook would retry it for ever on a stdout
    // without a reader.
    void (stdoutWritten?.() ?? Promise.resolve()).then(() => process.exit(1))
  },
)
