// The run command's entry, copied to build/llmproxy.cjs by scripts/bundle.mjs: runs the bundled server
// (build/llmproxy.bundle.cjs) with V8's code cache for it (build/llmproxy.bundle.cjs.cache), so that a start
// deserializes the compiled code instead of parsing and compiling 4 MB of JavaScript. Without a cache, or with one
// V8 rejects (another Node.js version, other V8 flags), the bundle is compiled as usual.
// LLMPROXY_WRITE_CODE_CACHE=1 writes the cache when the process exits (what the bundle step does after a demo start).
'use strict'
// SIGHUP means "reload" to the gateway, SIGTERM and SIGINT "stop gracefully", but Node's default action for each ends
// the process, and they come as soon as a start returns (reload tools, a stop right after a start; with workers, the
// primary's stop to a worker still starting). The CLI holds them from its first lines (packages/server/src/cli.ts), but
// reading and compiling the bundle come first (20-30 ms): held from here, the CLI takes the hold over
// (LAUNCHER_SIGNAL_HOLD there), and acts on the signals it noted. Under `pnpm start`, scripts/start.mjs holds them
// already.
const LAUNCHER_SIGNAL_HOLD = Symbol.for('llmproxy.launcherSignalHold')
if (globalThis[LAUNCHER_SIGNAL_HOLD] === undefined) {
  const hold = {
    received: [],
    listener: (signal) => {
      hold.received.push(signal)
    },
  }
  for (const signal of ['SIGHUP', 'SIGTERM', 'SIGINT']) process.on(signal, hold.listener)
  globalThis[LAUNCHER_SIGNAL_HOLD] = hold
}
const { readFileSync, writeFileSync } = require('node:fs')
const Module = require('node:module')
const { join } = require('node:path')
const { Script } = require('node:vm')

const bundle = join(__dirname, 'llmproxy.bundle.cjs')
const cacheFile = `${bundle}.cache`
let cachedData
try {
  cachedData = readFileSync(cacheFile)
} catch {
  cachedData = undefined
}
// The bundle is ASCII (esbuild escapes anything else; scripts/bundle.mjs checks it), so latin1 reads it as UTF-8
// would, ~8 ms sooner on a start. It starts with the CLI's `#!` line, which is no JavaScript inside a function:
// made a comment (same lines).
const source = readFileSync(bundle, 'latin1').replace(/^#!/, '//')
const script = new Script(Module.wrap(source), { filename: bundle, cachedData })
if (process.env.LLMPROXY_WRITE_CODE_CACHE === '1') {
  process.once('exit', () => writeFileSync(cacheFile, script.createCachedData()))
}
if (cachedData !== undefined && script.cachedDataRejected === true && process.env.LLMPROXY_WORKER_ID === undefined) {
  // Said once (by the primary, not again by each worker), as the single executable does: a start then compiles the
  // whole bundle (~2× the CPU to the first answer).
  process.stderr.write(
    'llmproxy: V8 rejected the code cache (a V8 flag in NODE_OPTIONS, or another Node.js, than the build); this start compiles the bundle\n',
  )
}
const main = new Module(bundle, module)
main.filename = bundle
script.runInThisContext()(main.exports, Module.createRequire(bundle), main, bundle, __dirname)
