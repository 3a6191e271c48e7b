#!/usr/bin/env node
import { writeSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { ConfigError } from '@llmproxy/core'
import type { GatewayOptions } from './app.js'
import { type Config, loadConfigFile } from './config.js'
import { startDemo } from './demo.js'
import { startGateway } from './main.js'
import { configJsonSchema } from './schema.js'

const USAGE = `Usage:
  llmproxy [--config FILE]      start the gateway (FILE or $LLMPROXY_CONFIG; neither = the built-in demo);
                                SIGHUP reloads FILE
  llmproxy check --config FILE  validate a config file and exit
  llmproxy schema               print the config's JSON Schema
Options:
  -c, --config FILE   YAML or JSON config file
  -p, --port N        override server.port
  -h, --help          this help`

async function main(): Promise<number> {
  // `pnpm start -- --config x` passes the `--` on: it is not a command.
  const args = process.argv.slice(2)
  if (args[0] === '--') args.shift()
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      port: { type: 'string', short: 'p' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  const command = positionals[0] ?? 'start'
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  if (command === 'schema') {
    process.stdout.write(`${JSON.stringify(configJsonSchema(), null, 2)}\n`)
    return 0
  }
  const file = values.config ?? process.env.LLMPROXY_CONFIG
  if (command === 'check') {
    if (file === undefined) throw new Error('check needs --config FILE')
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
  if (file === undefined) {
    const port = values.port === undefined ? 8080 : Number(values.port)
    const demo = await startDemo(port, '127.0.0.1')
    config = demo.config
    stopDemo = () => demo.mock.close()
  } else {
    config = loadConfigFile(file)
    const port = values.port
    // --port wins over the file, at start and at every reload.
    const adjustConfig = (c: Config) => {
      if (port !== undefined) c.server.port = Number(port)
    }
    adjustConfig(config)
    options.configFile = file
    options.adjustConfig = adjustConfig
  }
  const gateway = await startGateway(config, options)
  if (stopDemo !== null) {
    gateway.app.log.info(
      { url: gateway.url },
      `demo mode (no config): try  curl -N ${gateway.url}/v1/chat/completions -H 'content-type: application/json' -d '{"model":"demo","stream":true,"messages":[{"role":"user","content":"Hello"}]}'`,
    )
  }
  const stop = (signal: string) => {
    gateway
      .shutdown(signal)
      .then(() => stopDemo?.())
      .then(
        () => process.exit(0),
        () => process.exit(1),
      )
  }
  // SIGHUP: reload the config file (the reload logs its outcome; an invalid file changes nothing).
  process.on('SIGHUP', () => {
    gateway.app.log.info('SIGHUP: reloading the config')
    gateway.app.llmConfig.reload().catch(() => undefined)
  })
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
  return -1
}

main().then(
  (code) => {
    if (code >= 0) process.exitCode = code
  },
  (err: unknown) => {
    // Config problems are the user's to fix: print them plainly, no stack trace.
    const message = err instanceof ConfigError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)
    writeSync(2, `llmproxy: ${message}\n`)
    process.exit(1)
  },
)
