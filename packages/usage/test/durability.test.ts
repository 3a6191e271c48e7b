import { strict as assert } from 'node:assert'
import { type ChildProcess, spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import {
  buildApp,
  captureLogs,
  closedPort,
  emit,
  endOfTurn,
  segmentFiles,
  spoolDirs,
  startReceiver,
  usageRecord,
  waitFor,
} from './helpers.js'

const spoolDir = spoolDirs()

test('restart: records left undelivered at close are delivered by the next app on the same spool', async (t) => {
  const dir = spoolDir()
  const receiver = await startReceiver()
  t.after(() => receiver.close())
  receiver.respond = () => 503
  const first = await buildApp({
    webhook: { url: receiver.url },
    spoolDir: dir,
    batch: { maxRecords: 10, maxWaitMs: 10 },
    retry: { baseMs: 10, maxMs: 50 },
    shutdownFlushMs: 200,
  })
  const records = Array.from({ length: 25 }, () => usageRecord())
  for (const r of records) emit(first, r)
  await waitFor(() => receiver.deliveries.length >= 2, 15_000, 'failed attempts')
  await first.close()
  assert.equal(receiver.ids.size, 0)
  assert.ok(segmentFiles(dir).length >= 1, 'records stay spooled')

  receiver.respond = () => 200
  const second = await buildApp({ webhook: { url: receiver.url }, spoolDir: dir, batch: { maxRecords: 10, maxWaitMs: 60_000 } })
  t.after(() => second.close())
  assert.equal(second.usage.stats().queueDepth, 25, 'replayed from disk')
  // Replayed records are overdue: they go without waiting for maxWaitMs.
  await waitFor(() => receiver.ids.size === 25, 15_000, 'replay')
  assert.deepEqual(
    [...receiver.ids],
    records.map((r) => r.id),
  )
  await waitFor(() => second.usage.stats().queueDepth === 0)
  // The cursor is rewritten in place at each acknowledgement: one padded line of JSON, past everything delivered.
  const text = fs.readFileSync(path.join(dir, 'cursor.json'), 'utf8')
  assert.equal(text.length, 128)
  assert.ok(text.endsWith(' \n'))
  const cursor = JSON.parse(text) as { segment: number; offset: number }
  // Nothing on disk at or after the cursor: a restart would replay nothing.
  let undelivered = 0
  for (const name of segmentFiles(dir)) {
    const seq = Number(name.slice(0, 16))
    const size = fs.statSync(path.join(dir, name)).size
    if (seq > cursor.segment) undelivered += size
    else if (seq === cursor.segment) undelivered += size - cursor.offset
  }
  assert.equal(undelivered, 0)
})

test('graceful close delivers what is pending within shutdownFlushMs', async (t) => {
  const dir = spoolDir()
  const receiver = await startReceiver()
  t.after(() => receiver.close())
  const app = await buildApp({ webhook: { url: receiver.url }, spoolDir: dir, batch: { maxRecords: 100, maxWaitMs: 60_000 } })
  for (let i = 0; i < 7; i++) emit(app, usageRecord())
  assert.equal(receiver.deliveries.length, 0)
  await app.close()
  assert.equal(receiver.ids.size, 7)
  assert.deepEqual(segmentFiles(dir).length <= 1, true)
  const again = await buildApp({ webhook: { url: receiver.url }, spoolDir: dir })
  t.after(() => again.close())
  assert.equal(again.usage.stats().queueDepth, 0, 'nothing left to replay')
})

test('fully delivered segments are deleted; the cursor moves across rotated segments', async (t) => {
  const dir = spoolDir()
  const receiver = await startReceiver()
  receiver.respond = () => 503
  t.after(() => receiver.close())
  const app = await buildApp({
    webhook: { url: receiver.url },
    spoolDir: dir,
    batch: { maxRecords: 7, maxWaitMs: 10 },
    retry: { baseMs: 10, maxMs: 30 },
    spool: { segmentBytes: 2000 },
  })
  t.after(() => app.close())
  const line = Buffer.byteLength(`${JSON.stringify(usageRecord())}\n`)
  for (let i = 0; i < 20; i++) emit(app, usageRecord())
  await endOfTurn()
  const files = segmentFiles(dir)
  assert.ok(files.length >= 3, `rotated at segmentBytes (${files.length} segments)`)
  for (const f of files) assert.ok(fs.statSync(path.join(dir, f)).size <= Math.max(2000, line))
  const onDisk = files.reduce((sum, f) => sum + fs.statSync(path.join(dir, f)).size, 0)
  assert.equal(app.usage.stats().spoolBytes, onDisk)
  assert.ok(onDisk >= 20 * (line - 5))
  receiver.respond = () => 200
  await waitFor(() => receiver.ids.size === 20)
  await waitFor(() => app.usage.stats().queueDepth === 0)
  // Delivered segments are deleted (on the thread pool, shortly after); only the active one may remain.
  await waitFor(() => segmentFiles(dir).length <= 1, 15_000, 'delivered segments deleted')
  assert.ok(app.usage.stats().spoolBytes < 2000 + line)
})

test('records this process appended are delivered from memory, across rotations; a restart reads them from disk', async (t) => {
  const dir = spoolDir()
  const receiver = await startReceiver()
  t.after(() => receiver.close())
  receiver.respond = () => 503
  const options = {
    webhook: { url: receiver.url },
    spoolDir: dir,
    batch: { maxRecords: 5, maxWaitMs: 10 },
    retry: { baseMs: 10, maxMs: 30 },
    spool: { segmentBytes: 2000 },
    shutdownFlushMs: 0,
  }
  const first = await buildApp(options)
  const records = Array.from({ length: 20 }, () => usageRecord())
  for (const r of records.slice(0, 10)) emit(first, r)
  await endOfTurn()
  // The files hold the records; overwritten on disk, they are still delivered as they were emitted.
  const files = segmentFiles(dir)
  assert.ok(files.length >= 2, `rotated (${files.length} segments)`)
  for (const f of files) fs.writeFileSync(path.join(dir, f), Buffer.alloc(fs.statSync(path.join(dir, f)).size, 0x20))
  receiver.respond = () => 200
  await waitFor(() => receiver.ids.size === 10, 15_000, 'the first ten')
  assert.deepEqual(
    [...receiver.ids],
    records.slice(0, 10).map((r) => r.id),
  )
  // The next ten wait on disk for a new process (the receiver refuses them), which reads them from the files.
  receiver.respond = () => 503
  for (const r of records.slice(10)) emit(first, r)
  await waitFor(() => receiver.deliveries.length > 2, 15_000, 'a refused delivery')
  await first.close()
  receiver.respond = () => 200
  const second = await buildApp(options)
  t.after(() => second.close())
  await waitFor(() => receiver.ids.size === 20, 15_000, 'the replayed ten')
  assert.deepEqual(
    [...receiver.ids],
    records.map((r) => r.id),
  )
})

test('a torn last line (crash mid-write) and a corrupt line are skipped; the rest is delivered', async (t) => {
  const dir = spoolDir()
  const good = Array.from({ length: 3 }, () => usageRecord())
  const torn = JSON.stringify(usageRecord()).slice(0, 40)
  const content = `${JSON.stringify(good[0])}\n{"not":"a record"}\n${JSON.stringify(good[1])}\n${JSON.stringify(good[2])}\n${torn}`
  fs.writeFileSync(path.join(dir, '0000000000000001.jsonl'), content)
  const receiver = await startReceiver()
  t.after(() => receiver.close())
  const logs = captureLogs()
  const app = await buildApp({ webhook: { url: receiver.url }, spoolDir: dir, batch: { maxRecords: 10, maxWaitMs: 10 } }, logs)
  t.after(() => app.close())
  assert.equal(app.usage.stats().queueDepth, 4, 'complete lines only')
  const fresh = usageRecord()
  emit(app, fresh)
  await waitFor(() => receiver.ids.size === 4, 15_000, 'good records')
  assert.deepEqual([...receiver.ids], [...good.map((r) => r.id), fresh.id])
  for (const d of receiver.deliveries) JSON.parse(d.raw)
  await waitFor(() => app.usage.stats().queueDepth === 0)
  assert.ok(logs.lines.some((l) => l.msg.includes('torn last line')))
  assert.ok(logs.lines.some((l) => l.msg.includes('corrupt line')))
  assert.equal(app.usage.stats().delivered, 4)
  await waitFor(() => !fs.existsSync(path.join(dir, '0000000000000001.jsonl')), 15_000, 'the old segment deleted once passed')
})

test('replay starts at the persisted cursor', async (t) => {
  const dir = spoolDir()
  const records = Array.from({ length: 4 }, () => usageRecord())
  const lines = records.map((r) => `${JSON.stringify(r)}\n`)
  fs.writeFileSync(path.join(dir, '0000000000000005.jsonl'), lines.join(''))
  fs.writeFileSync(path.join(dir, '0000000000000004.jsonl'), lines.join(''))
  const offset = Buffer.byteLength(lines[0] ?? '') + Buffer.byteLength(lines[1] ?? '')
  fs.writeFileSync(path.join(dir, 'cursor.json'), JSON.stringify({ segment: 5, offset }))
  const receiver = await startReceiver()
  t.after(() => receiver.close())
  const app = await buildApp({ webhook: { url: receiver.url }, spoolDir: dir })
  t.after(() => app.close())
  assert.equal(app.usage.stats().queueDepth, 2)
  assert.ok(!fs.existsSync(path.join(dir, '0000000000000004.jsonl')), 'segments before the cursor are deleted')
  await waitFor(() => receiver.ids.size === 2)
  assert.deepEqual(
    [...receiver.ids],
    records.slice(2).map((r) => r.id),
  )
})

test('a torn cursor (a power failure mid-write: new offset bytes, old check) replays from the oldest segment: duplicates, never loss', async (t) => {
  const dir = spoolDir()
  const records = Array.from({ length: 4 }, () => usageRecord())
  fs.writeFileSync(
    path.join(dir, '0000000000000004.jsonl'),
    records
      .slice(0, 2)
      .map((r) => `${JSON.stringify(r)}\n`)
      .join(''),
  )
  fs.writeFileSync(
    path.join(dir, '0000000000000005.jsonl'),
    records
      .slice(2)
      .map((r) => `${JSON.stringify(r)}\n`)
      .join(''),
  )
  // Valid JSON pointing past segment 5's first record: without the check, that record would be skipped for good.
  const first = Buffer.byteLength(`${JSON.stringify(records[2])}\n`)
  fs.writeFileSync(path.join(dir, 'cursor.json'), JSON.stringify({ segment: 5, offset: first, check: '4:0' }).padEnd(127))
  const receiver = await startReceiver()
  t.after(() => receiver.close())
  const logs = captureLogs()
  const app = await buildApp({ webhook: { url: receiver.url }, spoolDir: dir }, logs)
  t.after(() => app.close())
  assert.equal(app.usage.stats().queueDepth, 4)
  assert.ok(logs.lines.some((l) => l.msg.includes('unreadable cursor')))
  await waitFor(() => receiver.ids.size === 4)
  assert.deepEqual(
    [...receiver.ids],
    records.map((r) => r.id),
  )
})

/** The command line of the emitter fixture (a process with its own app on the spool). */
function emitterCommand(mode: 'emit' | 'deliver', dir: string, url: string): string[] {
  const fixture = fileURLToPath(new URL('./fixtures/emitter.ts', import.meta.url))
  return [process.execPath, '--conditions=llmproxy-source', '--import', 'tsx', fixture, mode, dir, url]
}

function spawnCommand([command, ...args]: string[]): ChildProcess {
  return spawn(command as string, args, { cwd: fileURLToPath(new URL('../../..', import.meta.url)), stdio: ['ignore', 'pipe', 'inherit'] })
}

function spawnEmitter(mode: 'emit' | 'deliver', dir: string, url: string): ChildProcess {
  return spawnCommand(emitterCommand(mode, dir, url))
}

/** Resolves with the first stdout line of `child` that matches `pattern`. */
function outputLine(child: ChildProcess, pattern: RegExp): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let buffered = ''
    const onData = (chunk: Buffer): void => {
      buffered += chunk.toString()
      const match = pattern.exec(buffered)
      if (match === null) return
      child.stdout?.off('data', onData)
      resolve(match)
    }
    child.stdout?.on('data', onData)
    child.once('exit', () => reject(new Error(`exited before printing ${pattern}`)))
  })
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => child.once('exit', () => resolve()))
}

test('kill -9 while emitting loses no accepted record: a new process on the same spool delivers them all', async (t) => {
  const dir = spoolDir()
  const port = await closedPort()
  const emitter = spawnEmitter('emit', dir, `http://127.0.0.1:${port}/usage`)
  t.after(() => {
    emitter.kill('SIGKILL')
  })
  let accepted = 0
  let buffered = ''
  emitter.stdout?.on('data', (chunk: Buffer) => {
    buffered += chunk.toString()
    const lines = buffered.split('\n')
    buffered = lines.pop() ?? ''
    for (const l of lines) if (l.startsWith('accepted ')) accepted = Number(l.slice(9))
  })
  await waitFor(() => accepted >= 2000, 30_000, 'the emitter to accept 2,000 records')
  emitter.kill('SIGKILL')
  await exited(emitter)
  assert.equal(emitter.signalCode, 'SIGKILL')
  const acknowledged = accepted

  const receiver = await startReceiver()
  t.after(() => receiver.close())
  const deliverer = spawnEmitter('deliver', dir, receiver.url)
  t.after(() => {
    deliverer.kill('SIGKILL')
  })
  await waitFor(
    () => {
      for (let i = 0; i < acknowledged; i++) if (!receiver.ids.has(`kill-${i}`)) return false
      return true
    },
    30_000,
    'every accepted record after the restart',
  )
  deliverer.kill('SIGTERM')
  await exited(deliverer)
  for (const id of receiver.ids) assert.match(id, /^kill-\d+$/)
  assert.ok(receiver.ids.size >= acknowledged)
})

test('one writer per spool: a second app on the same directory is refused until the first closes', async () => {
  const dir = spoolDir()
  const port = await closedPort()
  const options = { webhook: { url: `http://127.0.0.1:${port}/usage` }, spoolDir: dir }
  const first = await buildApp(options)
  await assert.rejects(buildApp(options), /already open in this process/)
  fs.writeFileSync(path.join(dir, 'lock'), String(process.ppid))
  await first.close()
  assert.ok(!fs.existsSync(path.join(dir, 'lock')), 'released on close')
  fs.writeFileSync(path.join(dir, 'lock'), String(process.ppid))
  // A config problem (printed plainly by the CLI, no stack trace), naming the setting.
  await assert.rejects(buildApp(options), {
    name: 'ConfigError',
    message: /\/spoolDir: .* is in use by process \d+: give each gateway process its own/,
  })
  fs.writeFileSync(path.join(dir, 'lock'), '2147483646')
  const second = await buildApp(options)
  await second.close()
})

test("a killed gateway's lock is taken over, while its pid is a zombie and once it is another process's; a live one's is refused", async (t) => {
  if (!fs.existsSync('/proc/self/stat')) {
    t.skip('needs /proc (Linux): elsewhere the lock holds a pid only, and a zombie or a reused pid still counts as its holder')
    return
  }
  const dir = spoolDir()
  const url = `http://127.0.0.1:${await closedPort()}/usage`
  const options = { webhook: { url }, spoolDir: dir }
  // A gateway in a process whose parent never waits for it (the shell execs into a sleep): killed, it stays a zombie.
  const parent = spawnCommand(['sh', '-c', '"$@" & echo "holder $!"; exec sleep 60', 'sh', ...emitterCommand('deliver', dir, url)])
  const [holderLine, ready] = [outputLine(parent, /holder (\d+)\n/), outputLine(parent, /^ready$/m)]
  const holder = Number((await holderLine)[1])
  let sleeper: ChildProcess | null = null
  t.after(() => {
    try {
      process.kill(holder, 'SIGKILL')
    } catch {
      // already gone
    }
    for (const child of [parent, sleeper]) child?.kill('SIGKILL')
  })
  await ready
  await assert.rejects(buildApp(options), new RegExp(`is in use by process ${holder}:`))

  process.kill(holder, 'SIGKILL')
  await waitFor(() => /^State:\s+Z/m.test(fs.readFileSync(`/proc/${holder}/status`, 'utf8')), 15_000, 'the killed holder to be a zombie')
  process.kill(holder, 0) // the pid still exists
  const left = fs.readFileSync(path.join(dir, 'lock'), 'utf8')
  const first = await buildApp(options)
  await first.close()

  // The same lock once its pid is another, live process's (after a reboot, in a restarted container). That process
  // started later: start times are in clock ticks (10 ms), so not in the holder's tick.
  sleeper = spawn('sleep', ['60'], { stdio: 'ignore' })
  fs.writeFileSync(path.join(dir, 'lock'), JSON.stringify({ ...JSON.parse(left), pid: sleeper.pid }))
  const second = await buildApp(options)
  await second.close()
})

test("every fsync policy ('always', 'interval', 'never') spools, rotates and replays", async (t) => {
  const receiver = await startReceiver()
  t.after(() => receiver.close())
  for (const fsync of ['always', 'interval', 'never'] as const) {
    const dir = spoolDir()
    const port = await closedPort()
    const spool = { fsync, fsyncIntervalMs: 5, segmentBytes: 1500 }
    const down = await buildApp({ webhook: { url: `http://127.0.0.1:${port}/usage` }, spoolDir: dir, spool, shutdownFlushMs: 0 })
    const records = Array.from({ length: 12 }, () => usageRecord())
    for (const r of records) emit(down, r)
    await new Promise((resolve) => setTimeout(resolve, 30))
    await down.close()
    assert.ok(segmentFiles(dir).length >= 2, `${fsync}: rotated`)
    const up = await buildApp({ webhook: { url: receiver.url }, spoolDir: dir, spool })
    await waitFor(() => records.every((r) => receiver.ids.has(r.id)), 15_000, `${fsync}: replay`)
    await up.close()
  }
})
