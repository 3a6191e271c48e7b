// The first module `pnpm start` (scripts/start.mjs) runs: SIGHUP held from here, as scripts/launcher.cjs holds it from
// its first line, since the check and the build before the launcher take 40 ms to seconds (esbuild's import alone
// 40 ms) and a SIGHUP's default action ends the process. The build is asynchronous, so a SIGHUP can reach this
// listener: it is noted, and the CLI, taking the hold over, replays it as one reload once the gateway serves.
const hold = {
  received: false,
  listener: () => {
    hold.received = true
  },
}
process.on('SIGHUP', hold.listener)
globalThis[Symbol.for('llmproxy.launcherSighupHold')] = hold
