// Imported first by the process that runs the unit tests (scripts/run-tests.mjs): what makes a unit test is
// checked, not trusted. Listening, connecting or starting a process throws.
import childProcess, { ChildProcess } from 'node:child_process'
import { syncBuiltinESMExports } from 'node:module'
import { Server, Socket } from 'node:net'

const refuse = (what) => () => {
  throw new Error(`a unit test ${what}: take it out of UNIT in scripts/run-tests.mjs`)
}
Server.prototype.listen = refuse('listens on a socket')
Socket.prototype.connect = refuse('opens a connection')
ChildProcess.prototype.spawn = refuse('starts a process')
for (const name of ['spawnSync', 'execFileSync', 'execSync']) childProcess[name] = refuse('starts a process')
syncBuiltinESMExports()
