#!/usr/bin/env node
// `pnpm start [-- ARGS]`: runs the gateway from its bundle (build/llmproxy.cjs, see scripts/bundle.mjs), built first
// when it is missing or older than the sources, in this process. `pnpm dev` runs the TypeScript sources instead.
import cluster from 'node:cluster'
import { readdirSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

// SIGHUP held from here, as scripts/launcher.cjs holds it (and SIGTERM, SIGINT) from its first line: the check and the
// build before the launcher take 40 ms to seconds, and a SIGHUP's default action ends the process. The build is
// asynchronous, so a SIGHUP can reach this listener: it is noted, and the CLI, taking the hold over, replays it as one
// reload once the gateway serves. (bundle.mjs is imported after it: a static import, esbuild's with it, would load
// before any of this module runs.)
const hold = {
  received: [],
  listener: (signal) => {
    hold.received.push(signal)
  },
}
process.on('SIGHUP', hold.listener)
globalThis[Symbol.for('llmproxy.launcherSignalHold')] = hold
const { BUNDLE, bundleServer, ENTRY } = await import('./bundle.mjs')

const root = fileURLToPath(new URL('..', import.meta.url))

/** The newest modification time of what goes into the bundle (sources, manifests, the lockfile, the launcher). */
function newestSource() {
  let newest = Math.max(statSync(join(root, 'pnpm-lock.yaml')).mtimeMs, statSync(join(root, 'scripts/launcher.cjs')).mtimeMs)
  const visit = (path) => {
    const stat = statSync(path)
    if (!stat.isDirectory()) newest = Math.max(newest, stat.mtimeMs)
    else for (const name of readdirSync(path)) visit(join(path, name))
  }
  for (const name of readdirSync(join(root, 'packages'))) {
    visit(join(root, 'packages', name, 'src'))
    visit(join(root, 'packages', name, 'package.json'))
  }
  return newest
}

function builtAt() {
  try {
    return Math.min(statSync(ENTRY).mtimeMs, statSync(BUNDLE).mtimeMs)
  } catch {
    return Number.NEGATIVE_INFINITY
  }
}

if (builtAt() < newestSource()) {
  console.error('llmproxy: building build/llmproxy.cjs (pnpm bundle) …')
  await bundleServer()
}
// SIGTERM and SIGINT held from here on, not during the build: a Ctrl-C (the process group's SIGINT) ends esbuild too,
// and held, the failed build would end this process with an error instead of as quietly as the signal does.
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, hold.listener)
// The workers of `server.workers` run the bundle this process checked, not this script (node:cluster forks
// process.argv[1] by default): a worker that checked again, a replacement after a `git pull` say, would rebuild from
// the sources then on disk and serve another version beside the others, or, the tree broken, fail in a loop.
cluster.setupPrimary({ exec: ENTRY })
// The CLI reads process.argv from index 2 on: here, the arguments given to this script.
createRequire(import.meta.url)(ENTRY)
