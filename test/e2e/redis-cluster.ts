// Real Redis topologies for tests, from Debian's redis-server package (redis-server, redis-cli; Sentinel is
// `redis-server --sentinel`): a single node, a three-master Redis Cluster (optionally with a replica each), and a
// Sentinel setup (one master, one replica, one Sentinel or more). Each runs on free ports
// (LLMPROXY_TEST_REDIS_PORTS=7101 counts up from a base instead) in its own temp dir, and is stopped by its stop() —
// and, should a test forget or crash, by SIGKILL when the test process exits.
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { sleep } from './http-helpers.js'
import { type RespValue, redis } from './multi-instance-helpers.js'

const HOST = '127.0.0.1'

/** Whether `redis-server` and `redis-cli` are installed (tests skip, or fail in CI, without them). */
export const hasRedisBinaries = spawnSync('redis-server', ['--version']).status === 0 && spawnSync('redis-cli', ['--version']).status === 0

/** redis-server's major version (0 when absent): `cluster-port` exists from 7 on. */
const serverMajor = Number(/v=(\d+)\./.exec(spawnSync('redis-server', ['--version']).stdout?.toString() ?? '')?.[1] ?? 0)

const running = new Set<ChildProcess>()
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

let nextPort = Number(process.env.LLMPROXY_TEST_REDIS_PORTS ?? 0)

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(port, HOST, () => server.close(() => resolve(true)))
  })
}

/** A port nothing listens on: the next free one from LLMPROXY_TEST_REDIS_PORTS, or one the OS picks. */
export async function freePort(): Promise<number> {
  if (nextPort > 0) {
    while (!(await portFree(nextPort))) nextPort++
    return nextPort++
  }
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve))
  const address = server.address()
  await new Promise((resolve) => server.close(resolve))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

export interface RedisNodeAddress {
  host: string
  port: number
}

export interface RedisProcess extends RedisNodeAddress {
  /** redis://127.0.0.1:<port> (with the password, if any). */
  readonly url: string
  readonly child: ChildProcess
  /** SIGSTOP: the process stays, its sockets stay open, nothing is answered (a stalled Redis). */
  pause(): void
  /** SIGCONT: it runs again, and answers what was sent meanwhile. */
  resume(): void
  /** SIGKILL (after SIGCONT) and wait for the exit. Idempotent. */
  stop(): Promise<void>
  /** What the process printed (its log), for failure messages. */
  output(): string
}

export interface RedisServerOptions {
  port?: number
  /** Extra redis-server arguments (`--name value` pairs), or a config file first. */
  args?: readonly string[]
  /** Where it runs (default: a new temp dir, removed on stop). */
  dir?: string
  /** requirepass (and the password in `url`). */
  password?: string
  /** Run as a Sentinel (`--sentinel`; `args` then starts with its config file). */
  sentinel?: boolean
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null
}

/** Starts one redis-server (no persistence) and resolves once it answers PING. */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisProcess> {
  const port = options.port ?? (await freePort())
  const ownDir = options.dir === undefined
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'llmproxy-redis-'))
  const args = [
    ...(options.args ?? []),
    '--port',
    String(port),
    '--bind',
    HOST,
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    'no',
    ...(options.password === undefined ? [] : ['--requirepass', options.password]),
    ...(options.sentinel === true ? ['--sentinel'] : []),
  ]
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(child)
  let log = ''
  const append = (chunk: Buffer): void => {
    log = (log + chunk.toString('utf8')).slice(-20_000)
  }
  child.stdout?.on('data', append)
  child.stderr?.on('data', append)
  child.once('exit', () => running.delete(child))
  const auth = options.password === undefined ? '' : `:${encodeURIComponent(options.password)}@`
  const url = `redis://${auth}${HOST}:${port}`
  const stop = async (): Promise<void> => {
    if (!exited(child)) {
      const gone = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGCONT')
      child.kill('SIGKILL')
      await gone
    }
    if (ownDir) rmSync(dir, { recursive: true, force: true })
  }
  const server: RedisProcess = {
    host: HOST,
    port,
    url,
    child,
    pause: () => child.kill('SIGSTOP'),
    resume: () => child.kill('SIGCONT'),
    stop,
    output: () => log,
  }
  try {
    const deadline = Date.now() + 10_000
    while (!(await answers(url))) {
      if (exited(child)) throw new Error(`redis-server exited (code ${child.exitCode}):\n${log}`)
      if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING within 10 s:\n${log}`)
      await sleep(25)
    }
    return server
  } catch (err) {
    await stop()
    throw err
  }
}

/** Whether the Redis at `url` answers PING within 500 ms. */
function answers(url: string): Promise<boolean> {
  return redis([['PING']], url, 500).then(
    (reply) => reply === 'PONG',
    () => false,
  )
}

/** The first of `servers` that answers (another may be stalled, or gone). */
async function firstAnswering(servers: readonly RedisProcess[]): Promise<RedisProcess> {
  for (const server of servers) if (await answers(server.url)) return server
  throw new Error('no Redis node answers')
}

/** Runs `fn` until it returns true (polling), or throws `what` after `timeoutMs`. */
async function until(fn: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await fn().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

/** Stops every process of a topology, whatever state each is in, then removes the dir. */
async function stopAll(servers: readonly RedisProcess[], dir: string): Promise<void> {
  await Promise.allSettled(servers.map((s) => s.stop()))
  rmSync(dir, { recursive: true, force: true })
}

export interface RedisCluster {
  /** One address per node (the masters first), for the gateway's `redis.cluster`. */
  readonly nodes: readonly RedisNodeAddress[]
  readonly servers: readonly RedisProcess[]
  /** Runs one command on every node and returns their replies (e.g. KEYS: a cluster node only knows its own keys). */
  onEveryNode(command: readonly string[]): Promise<RespValue[]>
  /** The master that serves `key`'s slot now (changes when a replica is promoted). */
  masterOf(key: string): Promise<RedisProcess>
  stop(): Promise<void>
}

/**
 * A Redis Cluster of `masters` nodes (`--cluster-enabled yes`), each with `replicas` replicas (default none),
 * created with `redis-cli --cluster create … --cluster-replicas <replicas> --cluster-yes`; resolves once every node
 * reports `cluster_state:ok`. Each node gets a free port for clients and one for the cluster bus (`cluster-port`).
 * With `cluster-node-timeout 2000` a replica takes over a master that is silent for ~3–4 s.
 */
export async function startRedisCluster(options: { masters?: number; replicas?: number } = {}): Promise<RedisCluster> {
  const replicas = options.replicas ?? 0
  const count = (options.masters ?? 3) * (1 + replicas)
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-redis-cluster-'))
  const servers: RedisProcess[] = []
  try {
    for (let i = 0; i < count; i++) {
      let port = await freePort()
      // Redis 7 takes the cluster bus port as a setting; before, it is always port + 10000.
      const bus = serverMajor >= 7 ? ['--cluster-port', String(await freePort())] : []
      while (serverMajor < 7 && (port + 10_000 > 65_535 || !(await portFree(port + 10_000)))) port = await freePort()
      const args = ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '2000', ...bus]
      servers.push(await startRedisServer({ port, dir, args }))
    }
    const addresses = servers.map((s) => `${s.host}:${s.port}`)
    await promisify(execFile)('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', String(replicas), '--cluster-yes'], {
      timeout: 30_000,
    })
    await until(async () => {
      const infos = await Promise.all(servers.map((s) => redis([['CLUSTER', 'INFO']], s.url)))
      return infos.every(
        (info) => typeof info === 'string' && info.includes('cluster_state:ok') && info.includes(`cluster_known_nodes:${count}`),
      )
    }, 'the Redis Cluster to report cluster_state:ok on every node')
    // A replica that never synced would not take over its master.
    await until(async () => {
      const infos = await Promise.all(servers.map((s) => redis([['INFO', 'replication']], s.url)))
      return infos.every((info) => String(info).includes('role:master') || String(info).includes('master_link_status:up'))
    }, 'every replica to sync with its master')
  } catch (err) {
    await stopAll(servers, dir)
    throw err
  }
  return {
    nodes: servers.map((s) => ({ host: s.host, port: s.port })),
    servers,
    onEveryNode: (command) => Promise.all(servers.map((s) => redis([command], s.url))),
    masterOf: async (key) => {
      // Asked of a node that answers (`servers` may hold a stalled one): CLUSTER SHARDS is not in Redis 6.
      const asker = await firstAnswering(servers)
      const slot = Number(await redis([['CLUSTER', 'KEYSLOT', key]], asker.url))
      const ranges = (await redis([['CLUSTER', 'SLOTS']], asker.url)) as [number, number, [string, number, ...unknown[]]][]
      const owner = ranges.find(([from, to]) => from <= slot && slot <= to)?.[2]
      const server = servers.find((s) => s.port === Number(owner?.[1]))
      if (server === undefined) throw new Error(`no master serves slot ${slot}: ${JSON.stringify(ranges)}`)
      return server
    },
    stop: () => stopAll(servers, dir),
  }
}

export interface RedisSentinelSetup {
  /** The master group name Sentinel monitors. */
  readonly name: string
  /** For the gateway's `redis.sentinels`. */
  readonly sentinels: readonly RedisNodeAddress[]
  readonly master: RedisProcess
  readonly replica: RedisProcess
  /** The Sentinels, in the order of `sentinels`. */
  readonly sentinelServers: readonly RedisProcess[]
  /** The master the Sentinels name now (changes after a failover; asked of the first one that answers). */
  currentMaster(): Promise<RedisNodeAddress>
  stop(): Promise<void>
}

export interface RedisSentinelOptions {
  name?: string
  /** Password of the master and the replica (requirepass, masterauth, Sentinel's auth-pass). */
  password?: string
  /** Password of the Sentinel itself (its requirepass). */
  sentinelPassword?: string
  /** Sentinel's down-after-milliseconds: how long the master must be silent before it is failed over. */
  downAfterMs?: number
  /** How many Sentinels (default 1). They must find each other (hello messages, every 2 s) before a failover. */
  sentinels?: number
}

/**
 * One master, one replica (replicaof the master) and one Sentinel or more (`redis-server sentinel.conf --sentinel`,
 * quorum 1) that monitor them; resolves once the replica is in sync and every Sentinel knows it and the other
 * Sentinels, so that killing the master fails over to the replica (a majority of the Sentinels must elect the one
 * that fails over).
 */
export async function startRedisSentinel(options: RedisSentinelOptions = {}): Promise<RedisSentinelSetup> {
  const name = options.name ?? 'llmproxy'
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-redis-sentinel-'))
  const password = options.password
  const auth = password === undefined ? [] : ['--masterauth', password]
  const servers: RedisProcess[] = []
  try {
    // Full syncs start at once (not after the default 5 s wait for more replicas).
    const master = await startRedisServer({ dir, password, args: [...auth, '--repl-diskless-sync-delay', '0'] })
    servers.push(master)
    const replicaDir = join(dir, 'replica')
    const replica = await startRedisServer({
      dir: mkdtempSync(replicaDir),
      password,
      args: [...auth, '--replicaof', master.host, String(master.port)],
    })
    servers.push(replica)
    await until(
      async () => String(await redis([['INFO', 'replication']], replica.url)).includes('master_link_status:up'),
      'the replica to sync with the master',
    )
    const sentinels: RedisProcess[] = []
    for (let i = 0; i < (options.sentinels ?? 1); i++) {
      // Each Sentinel rewrites its own config file (what it learns).
      const conf = join(dir, `sentinel-${i}.conf`)
      writeFileSync(
        conf,
        [
          `sentinel monitor ${name} ${master.host} ${master.port} 1`,
          `sentinel down-after-milliseconds ${name} ${options.downAfterMs ?? 1000}`,
          // Also how long Sentinels wait before they try again when a vote was split (twice this): a few seconds.
          `sentinel failover-timeout ${name} 2000`,
          `sentinel parallel-syncs ${name} 1`,
          ...(password === undefined ? [] : [`sentinel auth-pass ${name} ${password}`]),
          '',
        ].join('\n'),
      )
      const sentinel = await startRedisServer({
        dir,
        args: [conf],
        sentinel: true,
        ...(options.sentinelPassword === undefined ? {} : { password: options.sentinelPassword }),
      })
      servers.push(sentinel)
      sentinels.push(sentinel)
    }
    for (const sentinel of sentinels) {
      await until(async () => {
        const replicas = await redis([['SENTINEL', 'REPLICAS', name]], sentinel.url)
        const others = await redis([['SENTINEL', 'SENTINELS', name]], sentinel.url)
        return (
          Array.isArray(replicas) &&
          replicas.some((r) => Array.isArray(r) && r.includes('slave') && !String(r).includes('s_down')) &&
          Array.isArray(others) &&
          others.length === sentinels.length - 1
        )
      }, 'each Sentinel to discover the replica and the other Sentinels')
    }
    return {
      name,
      sentinels: sentinels.map((s) => ({ host: s.host, port: s.port })),
      master,
      replica,
      sentinelServers: sentinels,
      currentMaster: async () => {
        const reply = await redis([['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name]], (await firstAnswering(sentinels)).url)
        if (!Array.isArray(reply)) throw new Error(`unexpected reply ${JSON.stringify(reply)}`)
        return { host: String(reply[0]), port: Number(reply[1]) }
      },
      stop: () => stopAll(servers, dir),
    }
  } catch (err) {
    await stopAll(servers, dir)
    throw err
  }
}
