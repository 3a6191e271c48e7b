// deploy/kubernetes and deploy/grafana, checked against the gateway they deploy: the manifests against each
// other and the Dockerfile, the ConfigMap's config against the server's own validation, and the probes, the
// scrape route and the dashboard's queries against the real CLI started from that config, with the Secret's
// variables as its environment.
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer as createHttpServer, type Server } from 'node:http'
import { connect, createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { ConfigError } from '@llmproxy/core'
import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { verifySignature } from '@llmproxy/usage'
import { parseAllDocuments, parseDocument } from 'yaml'
import { type Config, parseConfig } from '../src/index.js'

const REPO = fileURLToPath(new URL('../../../', import.meta.url))
const KUBERNETES = join(REPO, 'deploy/kubernetes')
const DASHBOARD = join(REPO, 'deploy/grafana/llmproxy-dashboard.json')

// ---- the manifests, as Kubernetes reads them (only the fields these tests look at)

interface Metadata {
  name: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
}
interface Manifest {
  apiVersion: string
  kind: string
  metadata: Metadata
  spec?: unknown
  data?: Record<string, string>
  stringData?: Record<string, string>
}
interface HttpProbe {
  httpGet?: { path: string; port: string | number }
}
interface Container {
  name: string
  image: string
  command?: string[]
  args?: string[]
  ports?: { name?: string; containerPort: number }[]
  env?: { name: string; value?: string }[]
  envFrom?: { secretRef?: { name: string } }[]
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[]
  readinessProbe?: HttpProbe
  livenessProbe?: HttpProbe
  lifecycle?: { preStop?: { exec?: { command: string[] }; sleep?: { seconds: number } } }
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> }
  securityContext?: { readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean; runAsNonRoot?: boolean }
}
interface PodSpec {
  containers: Container[]
  volumes?: { name: string; configMap?: { name: string; items?: { key: string; path: string }[] } }[]
  terminationGracePeriodSeconds?: number
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; runAsGroup?: number; fsGroup?: number }
}
interface StatefulSetSpec {
  replicas?: number
  serviceName: string
  selector: { matchLabels: Record<string, string> }
  template: { metadata: Metadata; spec: PodSpec }
  volumeClaimTemplates?: { metadata: { name: string }; spec: { accessModes: string[]; resources: { requests: { storage: string } } } }[]
}
interface ServiceSpec {
  clusterIP?: string
  selector: Record<string, string>
  ports: { name?: string; port: number; targetPort: string | number }[]
}
interface PdbSpec {
  selector: { matchLabels: Record<string, string> }
  maxUnavailable?: number | string
  minAvailable?: number | string
}
interface HpaSpec {
  scaleTargetRef: { apiVersion: string; kind: string; name: string }
  minReplicas: number
  maxReplicas: number
  metrics: { type: string; resource?: { name: string; target: { type: string; averageUtilization?: number } } }[]
}

function loadManifests(): Map<string, Manifest[]> {
  const byFile = new Map<string, Manifest[]>()
  for (const file of readdirSync(KUBERNETES).filter((f) => f.endsWith('.yaml'))) {
    const docs = parseAllDocuments(readFileSync(join(KUBERNETES, file), 'utf8'))
    const manifests: Manifest[] = []
    for (const doc of docs) {
      assert.deepEqual(doc.errors, [], `${file} parses`)
      manifests.push(doc.toJS() as Manifest)
    }
    byFile.set(file, manifests)
  }
  return byFile
}

const manifests = loadManifests()
const all = [...manifests.entries()].filter(([file]) => file !== 'kustomization.yaml').flatMap(([, docs]) => docs)

function one(kind: string, name?: string): Manifest {
  const found = all.filter((m) => m.kind === kind && (name === undefined || m.metadata.name === name))
  assert.equal(found.length, 1, `one ${kind}${name === undefined ? '' : ` named ${name}`}`)
  return found[0] as Manifest
}

const statefulSet = one('StatefulSet')
const sts = statefulSet.spec as StatefulSetSpec
const pod = sts.template.spec
const container = pod.containers[0] as Container
const configMap = one('ConfigMap')
const secret = one('Secret')
const configText = Object.values(configMap.data ?? {})[0] ?? ''

/** The Dockerfile's runtime stage (after the last FROM): what the image really runs. */
const dockerfile = (() => {
  const text = readFileSync(join(REPO, 'Dockerfile'), 'utf8')
  const runtime = text.slice(text.lastIndexOf('\nFROM '))
  const user = /^USER (\d+):(\d+)$/m.exec(runtime)
  const expose = /^EXPOSE (\d+)$/m.exec(runtime)
  const configPath = /LLMPROXY_CONFIG=(\S+)/.exec(runtime)
  const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(runtime)
  assert.ok(user && expose && configPath && entrypoint, 'the Dockerfile names a numeric user, a port, $LLMPROXY_CONFIG and an entrypoint')
  return {
    uid: Number(user[1]),
    gid: Number(user[2]),
    port: Number(expose[1]),
    configPath: configPath[1] as string,
    entrypoint: JSON.parse(entrypoint[1] as string) as string[],
    writableDir: /mkdir -p .*?(\/var\/lib\/\S+)/.exec(runtime)?.[1],
  }
})()

/** The `${VAR}`s the config file reads from the environment. */
const configVariables = [...configText.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}/g)].map((m) => m[1] as string)

/** Test values for the Secret's keys (what an operator fills in), and the container's own `env` values. */
function podEnvironment(secretValue: (key: string) => string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const key of Object.keys(secret.stringData ?? {})) env[key] = secretValue(key)
  for (const { name, value } of container.env ?? []) if (value !== undefined) env[name] = value
  return env
}
const TEST_SECRETS = {
  OPENAI_API_KEY: 'sk-test-openai-upstream-key',
  TEAM_A_KEY: 'sk-test-team-a-0123456789',
  TEAM_B_KEY: 'sk-test-team-b-0123456789',
  WEBHOOK_SECRET: 'whsec-test-0123456789',
  ADMIN_TOKEN: 'admin-test-token-0123456789',
  REDIS_URL: 'redis://127.0.0.1:6379',
}
const testEnvironment = () =>
  podEnvironment((key) => Object.entries(TEST_SECRETS).find(([name]) => name === key)?.[1] ?? `test-value-of-${key}`)

function containerPort(port: string | number): number {
  if (typeof port === 'number') return port
  const found = container.ports?.find((p) => p.name === port)
  assert.ok(found, `port ${port} is a named port of the container`)
  return found.containerPort
}

function includesLabels(labels: Record<string, string> | undefined, selector: Record<string, string>, what: string): void {
  assert.ok(Object.keys(selector).length > 0, `${what}: a non-empty selector`)
  for (const [key, value] of Object.entries(selector)) assert.equal(labels?.[key], value, `${what} selects the pod template's ${key}`)
}

/** "1Gi", "512Mi", "500M" in bytes. */
function quantityBytes(quantity: string): number {
  const match = /^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(quantity)
  assert.ok(match, `a storage quantity: ${quantity}`)
  const units: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 }
  return Number(match[1]) * (match[2] === undefined ? 1 : (units[match[2]] as number))
}

function isUnder(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith('/') ? dir : `${dir}/`)
}

describe('deploy/kubernetes', () => {
  test('every manifest parses, has apiVersion, kind and name; the kustomization lists all but the Secret', () => {
    assert.ok(all.length >= 7)
    for (const m of all) {
      assert.match(m.apiVersion, /^[a-z./0-9]+$/)
      assert.match(m.kind, /^[A-Z][A-Za-z]+$/)
      assert.match(m.metadata.name, /^[a-z0-9-]+$/)
    }
    const kustomization = (manifests.get('kustomization.yaml') ?? [])[0] as unknown as { kind: string; resources: string[] }
    assert.equal(kustomization.kind, 'Kustomization')
    const files = [...manifests.keys()].filter((f) => f !== 'kustomization.yaml')
    // The Secret is applied by itself, once filled in: `kubectl apply -k` must never overwrite it with the template.
    assert.deepEqual([...kustomization.resources].sort(), files.filter((f) => f !== 'secret.yaml').sort())
    assert.ok(manifests.get('secret.yaml')?.every((m) => m.kind === 'Secret'))
  })

  test('selectors match the pod labels: StatefulSet, Services, PodDisruptionBudget; the HPA scales the StatefulSet', () => {
    const labels = sts.template.metadata.labels
    includesLabels(labels, sts.selector.matchLabels, 'the StatefulSet')
    const services = all.filter((m) => m.kind === 'Service')
    for (const service of services) {
      const spec = service.spec as ServiceSpec
      includesLabels(labels, spec.selector, `Service ${service.metadata.name}`)
      for (const port of spec.ports)
        assert.equal(containerPort(port.targetPort), dockerfile.port, `${service.metadata.name} targets the gateway`)
    }
    const governing = services.find((s) => s.metadata.name === sts.serviceName)
    assert.equal((governing?.spec as ServiceSpec | undefined)?.clusterIP, 'None', 'serviceName is a headless Service')
    assert.ok(
      services.some((s) => (s.spec as ServiceSpec).clusterIP !== 'None'),
      'a Service with a cluster IP for the clients',
    )

    const pdb = one('PodDisruptionBudget').spec as PdbSpec
    includesLabels(labels, pdb.selector.matchLabels, 'the PodDisruptionBudget')
    assert.ok(pdb.maxUnavailable !== undefined || pdb.minAvailable !== undefined)

    const hpa = one('HorizontalPodAutoscaler')
    assert.equal(hpa.apiVersion, 'autoscaling/v2')
    const spec = hpa.spec as HpaSpec
    assert.deepEqual(spec.scaleTargetRef, { apiVersion: statefulSet.apiVersion, kind: 'StatefulSet', name: statefulSet.metadata.name })
    const cpu = spec.metrics.find((m) => m.type === 'Resource' && m.resource?.name === 'cpu')
    assert.equal(cpu?.resource?.target.type, 'Utilization')
    assert.ok(container.resources?.requests?.cpu, 'CPU utilization is relative to the CPU request')
    assert.ok(spec.minReplicas >= 2, 'two replicas at least, so that the PodDisruptionBudget lets a node drain')
    assert.ok(spec.maxReplicas >= spec.minReplicas)
    assert.equal(sts.replicas, undefined, 'the HPA owns replicas: a value in the manifest would reset it on each apply')
  })

  test('the container runs the image as built: entrypoint, user, port, config path', () => {
    assert.equal(container.command, undefined, `the image's entrypoint (${dockerfile.entrypoint.join(' ')}) starts the gateway`)
    assert.equal(container.args, undefined, 'the config path comes from $LLMPROXY_CONFIG')
    assert.deepEqual(
      dockerfile.entrypoint,
      ['node', '/app/llmproxy.cjs'],
      'the image runs the bundle of the server CLI (scripts/bundle.mjs)',
    )
    assert.deepEqual(
      container.ports?.map((p) => p.containerPort),
      [dockerfile.port],
    )
    assert.equal(pod.securityContext?.runAsUser, dockerfile.uid)
    assert.equal(pod.securityContext?.runAsGroup, dockerfile.gid)
    assert.equal(pod.securityContext?.fsGroup, dockerfile.gid, 'the volume is writable by the image user')

    const configMount = container.volumeMounts?.find((m) => isUnder(dockerfile.configPath, m.mountPath))
    assert.ok(configMount, `a volume is mounted where $LLMPROXY_CONFIG (${dockerfile.configPath}) points`)
    assert.equal(configMount.readOnly, true)
    const volume = pod.volumes?.find((v) => v.name === configMount.name)
    assert.equal(volume?.configMap?.name, configMap.metadata.name)
    const item = volume?.configMap?.items?.find((i) => join(configMount.mountPath, i.path) === dockerfile.configPath)
    assert.ok(item, 'the ConfigMap key is mounted at the config path')
    assert.equal(typeof configMap.data?.[item.key], 'string')
    assert.deepEqual(
      container.envFrom?.map((e) => e.secretRef?.name),
      [secret.metadata.name],
    )
  })

  test('volume mounts match volumes; the spool is on a per-pod persistent volume, the only writable place', () => {
    const claims = sts.volumeClaimTemplates ?? []
    const volumeNames = [...(pod.volumes ?? []).map((v) => v.name), ...claims.map((c) => c.metadata.name)]
    const mounts = container.volumeMounts ?? []
    for (const mount of mounts) assert.ok(volumeNames.includes(mount.name), `volume ${mount.name} exists`)
    for (const name of volumeNames)
      assert.ok(
        mounts.some((m) => m.name === name),
        `volume ${name} is mounted`,
      )

    assert.equal(container.securityContext?.readOnlyRootFilesystem, true)
    assert.equal(container.securityContext?.allowPrivilegeEscalation, false)
    assert.equal(pod.securityContext?.runAsNonRoot, true)

    const config = parseConfig(configText, 'configmap', testEnvironment())
    const written = [config.usage?.spoolDir, config.rateLimit?.quotaStateFile].filter((p): p is string => p !== undefined)
    assert.ok(config.usage?.spoolDir?.startsWith('/'), 'an absolute spool path (the working directory is read-only)')
    for (const path of written) {
      const mount = mounts.find((m) => isUnder(path, m.mountPath))
      assert.ok(mount && mount.readOnly !== true, `${path} is on a writable volume`)
      const claim = claims.find((c) => c.metadata.name === mount.name)
      assert.ok(claim, `${path} is on the pod's own persistent volume (volumeClaimTemplates)`)
      assert.deepEqual(claim.spec.accessModes, ['ReadWriteOnce'])
      assert.ok(quantityBytes(claim.spec.resources.requests.storage) > (config.usage?.spool.maxBytes ?? 0), 'the volume holds a full spool')
      assert.ok(dockerfile.writableDir !== undefined && isUnder(mount.mountPath, dockerfile.writableDir))
    }
  })

  test('probes, ports and the scrape annotations match the config: /readyz, /healthz, /metrics on server.port', () => {
    const config = parseConfig(configText, 'configmap', testEnvironment())
    assert.equal(config.server.port, dockerfile.port)
    assert.equal(config.server.host, '0.0.0.0', 'the kubelet and the Service reach the pod IP')
    assert.deepEqual(container.readinessProbe?.httpGet?.path, '/readyz')
    assert.deepEqual(container.livenessProbe?.httpGet?.path, '/healthz')
    for (const probe of [container.readinessProbe, container.livenessProbe]) {
      assert.equal(containerPort(probe?.httpGet?.port ?? -1), config.server.port)
    }
    const annotations = sts.template.metadata.annotations ?? {}
    assert.equal(annotations['prometheus.io/scrape'], 'true')
    assert.equal(Number(annotations['prometheus.io/port']), config.server.port)
    assert.equal(annotations['prometheus.io/path'], config.metrics === false ? undefined : config.metrics.path)
    // Resources: requests for scheduling and the HPA, limits to contain a runaway process.
    for (const kind of ['requests', 'limits'] as const) {
      assert.ok(container.resources?.[kind]?.cpu && container.resources[kind].memory, `${kind}: cpu and memory`)
    }
  })

  test('termination grace: preStop sleep + server.shutdownGraceMs + usage.shutdownFlushMs < terminationGracePeriodSeconds', () => {
    const config = parseConfig(configText, 'configmap', testEnvironment())
    const preStop = container.lifecycle?.preStop
    const command = preStop?.exec?.command
    const sleepSeconds = preStop?.sleep?.seconds ?? (command?.[0] === 'sleep' ? Number(command[1]) : Number.NaN)
    assert.ok(sleepSeconds > 0, 'preStop sleeps while the endpoints are updated')
    const drainMs = config.server.shutdownGraceMs + (config.usage?.shutdownFlushMs ?? 0)
    assert.ok(drainMs > 0)
    const grace = pod.terminationGracePeriodSeconds ?? 30
    assert.ok(sleepSeconds * 1000 + drainMs < grace * 1000, `${sleepSeconds} s + ${drainMs} ms < ${grace} s`)
  })

  test('the ConfigMap passes the gateway config validation with the Secret as environment, and only with it', () => {
    const keys = Object.keys(secret.stringData ?? {}).sort()
    assert.deepEqual([...new Set(configVariables)].sort(), keys, 'the Secret holds exactly the variables the config reads')
    const config: Config = parseConfig(configText, 'configmap', testEnvironment())
    assert.equal(config.rateLimit?.store, 'redis', 'replicas share limits through Redis')
    assert.equal(config.redis?.url, TEST_SECRETS.REDIS_URL)
    assert.equal(config.usage?.webhook?.secret, TEST_SECRETS.WEBHOOK_SECRET)
    assert.equal(config.admin?.token, TEST_SECRETS.ADMIN_TOKEN)

    // The template as shipped (values empty): the gateway refuses to start and names the settings.
    const shipped = podEnvironment((key) => secret.stringData?.[key] ?? '')
    assert.throws(
      () => parseConfig(configText, 'configmap', shipped),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError)
        const paths = err.problems.map((p) => p.path)
        for (const path of ['/auth/keys/0/key', '/redis/url', '/usage/webhook/secret', '/admin/token'])
          assert.ok(paths.includes(path), path)
        return true
      },
    )
  })
})

// ---- the Grafana dashboard

interface GrafanaDatasource {
  type: string
  uid: string
}
interface GrafanaPanel {
  id: number
  type: string
  title: string
  gridPos: { h: number; w: number; x: number; y: number }
  datasource?: GrafanaDatasource
  targets?: { expr: string; refId: string; datasource?: GrafanaDatasource }[]
  panels?: GrafanaPanel[]
}
interface GrafanaVariable {
  name: string
  type: string
  query: string
  datasource?: GrafanaDatasource
}
interface GrafanaDashboard {
  uid: string
  title: string
  panels: GrafanaPanel[]
  templating: { list: GrafanaVariable[] }
}

const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as GrafanaDashboard
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])])
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, in a plain string on purpose
const DATASOURCE = { type: 'prometheus', uid: '${datasource}' }
/** Labels Prometheus adds to every scraped sample (the target's), not the gateway. */
const TARGET_LABELS = new Set(['job', 'instance'])

/** Every PromQL expression of the dashboard: panel targets and `label_values(…)` of the variables. */
function dashboardQueries(): { where: string; expr: string }[] {
  const queries: { where: string; expr: string }[] = []
  for (const panel of panels) {
    for (const target of panel.targets ?? []) queries.push({ where: `panel "${panel.title}" ${target.refId}`, expr: target.expr })
  }
  for (const variable of dashboard.templating.list.filter((v) => v.type === 'query')) {
    const match = /^label_values\((.+),\s*(\w+)\)$/.exec(variable.query)
    assert.ok(match, `variable ${variable.name}: label_values(metric, label)`)
    queries.push({ where: `variable ${variable.name}`, expr: `sum by (${match[2]}) (${match[1]})` })
  }
  return queries
}

const PROMQL_KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset'])

/** The metric names and label names a PromQL expression uses (Grafana's `$variables` included). */
function promqlNames(expr: string): { metrics: string[]; labels: string[] } {
  const labels: string[] = []
  const rest = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{([^}]*)\}/g, (_match, matchers: string) => {
      for (const [, label] of matchers.matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)/g)) labels.push(label as string)
      return ' '
    })
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_match, list: string) => {
      labels.push(
        ...list
          .split(',')
          .map((l) => l.trim())
          .filter((l) => l !== ''),
      )
      return ' '
    })
    .replace(/\[[^\]]*\]/g, ' ')
  const metrics = [...rest.matchAll(/(?<![\w:.$])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()/g)]
    .map((m) => m[0])
    .filter((w) => !PROMQL_KEYWORDS.has(w))
  return { metrics: [...new Set(metrics)], labels: [...new Set(labels)] }
}

describe('deploy/grafana', () => {
  test('the dashboard has a Prometheus datasource variable that every panel and query variable uses', () => {
    assert.match(dashboard.uid, /^[\w-]{1,40}$/)
    assert.ok(dashboard.title.length > 0)
    const variables = dashboard.templating.list
    assert.deepEqual(
      variables.filter((v) => v.type === 'datasource').map((v) => [v.name, v.query]),
      [['datasource', 'prometheus']],
    )
    for (const v of variables.filter((v) => v.type === 'query')) assert.deepEqual(v.datasource, DATASOURCE, `variable ${v.name}`)
    const queryPanels = panels.filter((p) => p.type !== 'row')
    assert.ok(queryPanels.length >= 20)
    for (const panel of queryPanels) {
      assert.deepEqual(panel.datasource, DATASOURCE, `panel "${panel.title}"`)
      assert.ok((panel.targets ?? []).length > 0, `panel "${panel.title}" has queries`)
      const refIds = (panel.targets ?? []).map((t) => t.refId)
      assert.equal(new Set(refIds).size, refIds.length, `panel "${panel.title}": distinct refIds`)
      for (const target of panel.targets ?? []) assert.deepEqual(target.datasource, DATASOURCE)
    }
  })

  test('panels have distinct ids and do not overlap on the 24-column grid', () => {
    assert.equal(new Set(panels.map((p) => p.id)).size, panels.length)
    for (const [i, a] of panels.entries()) {
      assert.ok(a.gridPos.x >= 0 && a.gridPos.w > 0 && a.gridPos.x + a.gridPos.w <= 24, `panel "${a.title}" fits`)
      for (const b of panels.slice(i + 1)) {
        const apart =
          a.gridPos.x + a.gridPos.w <= b.gridPos.x ||
          b.gridPos.x + b.gridPos.w <= a.gridPos.x ||
          a.gridPos.y + a.gridPos.h <= b.gridPos.y ||
          b.gridPos.y + b.gridPos.h <= a.gridPos.y
        assert.ok(apart, `panels "${a.title}" and "${b.title}" do not overlap`)
      }
    }
  })

  test('promqlNames reads metric and label names, not functions, keywords, strings, ranges or variables', () => {
    assert.deepEqual(
      promqlNames(
        'histogram_quantile(0.95, sum by (le, model) (rate(a_bucket{job=~"$job", status!~"2.."}[$__rate_interval]))) / on (model) b or vector(0)',
      ),
      { metrics: ['a_bucket', 'b'], labels: ['job', 'status', 'le', 'model'] },
    )
  })
})

// ---- the gateway from the ConfigMap, run as the pod runs it

/** A port nothing listens on right now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createNetServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => (address !== null && typeof address === 'object' ? resolve(address.port) : reject(new Error('no port'))))
    })
  })
}

async function until(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** PING, after AUTH: what a client with the Secret's REDIS_URL can do. */
function redisAnswersPing(port: number, password: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let answer = ''
    socket.setTimeout(1000, () => socket.destroy())
    socket.once('connect', () => socket.write(`AUTH ${password}\r\nPING\r\n`))
    socket.on('data', (data: Buffer) => {
      answer += data.toString()
      if (answer.includes('+PONG') || answer.startsWith('-')) socket.destroy()
    })
    socket.once('error', () => resolve(false))
    socket.once('close', () => resolve(answer === '+OK\r\n+PONG\r\n'))
  })
}

function stopChild(child: ChildProcess, signal: NodeJS.Signals): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode)
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code))
    child.kill(signal)
  })
}

interface Receiver {
  url: string
  records: { id: string; requestId: string }[]
  badSignatures: number
  server: Server
}

/** The billing webhook: checks each delivery's signature with the Secret's WEBHOOK_SECRET. */
function startReceiver(secretValue: string): Promise<Receiver> {
  const receiver: Receiver = { url: '', records: [], badSignatures: 0, server: createHttpServer() }
  receiver.server.on('request', (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      if (!verifySignature(secretValue, req.headers['x-llmproxy-signature'], body)) {
        receiver.badSignatures++
        res.writeHead(401).end()
        return
      }
      receiver.records.push(...(JSON.parse(body.toString()) as { records: Receiver['records'] }).records)
      res.writeHead(204).end()
    })
  })
  return new Promise((resolve) => {
    receiver.server.listen(0, '127.0.0.1', () => {
      const address = receiver.server.address()
      receiver.url = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}/llmproxy/usage`
      resolve(receiver)
    })
  })
}

describe('the gateway started from the ConfigMap, as the pod runs it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-deploy-'))
  const REDIS_PASSWORD = 'redis-test-password-0123456789'
  let mock: MockUpstream
  let receiver: Receiver
  let redis: ChildProcess
  let gateway: ChildProcess
  let output = ''
  let base = ''
  let adminBase = ''

  before(async () => {
    mock = await startMockUpstream({ defaults: { tokens: 6 } })
    programMock()
    receiver = await startReceiver(TEST_SECRETS.WEBHOOK_SECRET)
    const redisPort = await freePort()
    const redisArgs = [
      '--port',
      String(redisPort),
      '--bind',
      '127.0.0.1',
      '--requirepass',
      REDIS_PASSWORD,
      '--save',
      '',
      '--appendonly',
      'no',
    ]
    redis = spawn('redis-server', redisArgs, { stdio: 'ignore' })
    let redisError: Error | null = null
    redis.once('error', (err) => {
      redisError = err
    })
    await until(async () => {
      if (redisError !== null) throw new Error(`redis-server could not start: ${redisError.message}`)
      return redisAnswersPing(redisPort, REDIS_PASSWORD)
    }, 'redis-server to answer PING')

    // The ConfigMap's file, with only the addresses of this machine put in: upstreams → the mock, the webhook →
    // the receiver, the spool → a temporary directory, free ports instead of 8080 and 9090.
    const port = await freePort()
    const adminPort = await freePort()
    const doc = parseDocument(configText)
    const upstreams = (doc.toJS() as { upstreams: unknown[] }).upstreams
    for (let i = 0; i < upstreams.length; i++) doc.setIn(['upstreams', i, 'url'], mock.url)
    doc.setIn(['usage', 'webhook', 'url'], receiver.url)
    doc.setIn(['usage', 'spoolDir'], join(dir, 'usage'))
    doc.setIn(['server', 'port'], port)
    doc.setIn(['admin', 'port'], adminPort)
    const file = join(dir, 'config.yaml')
    writeFileSync(file, String(doc))

    // The container's environment: the Secret (envFrom), the container's env, $LLMPROXY_CONFIG from the image.
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      ...testEnvironment(),
      REDIS_URL: `redis://:${REDIS_PASSWORD}@127.0.0.1:${redisPort}`,
      LLMPROXY_CONFIG: file,
    }
    delete env.NODE_TEST_CONTEXT // the child is a server, not a test runner child
    // The image's entrypoint (the bundle of this CLI, `node /app/llmproxy.cjs`), from source, no arguments.
    gateway = spawn(process.execPath, ['--conditions=llmproxy-source', '--import', 'tsx', 'packages/server/src/cli.ts'], {
      cwd: REPO,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    gateway.stdout?.setEncoding('utf8').on('data', (s: string) => {
      output += s
    })
    gateway.stderr?.setEncoding('utf8').on('data', (s: string) => {
      output += s
    })
    base = `http://127.0.0.1:${port}`
    adminBase = `http://127.0.0.1:${adminPort}`
    await until(
      async () => {
        if (gateway.exitCode !== null) throw new Error(`the gateway exited (${gateway.exitCode}):\n${output}`)
        return (await fetch(`${base}/healthz`).catch(() => null))?.status === 200
      },
      'the gateway to listen',
      60_000,
    )
  })

  after(async () => {
    if (gateway !== undefined) await stopChild(gateway, 'SIGKILL')
    if (redis !== undefined) await stopChild(redis, 'SIGKILL')
    await mock?.close()
    if (receiver !== undefined) await new Promise((resolve) => receiver.server.close(resolve))
    rmSync(dir, { recursive: true, force: true })
  })

  test('the probes answer on the probe port and paths without a key; so do the scrape route and, with the Secret token, the admin API', async () => {
    for (const probe of [container.livenessProbe, container.readinessProbe]) {
      const res = await fetch(`${base}${probe?.httpGet?.path}`)
      assert.equal(res.status, 200, `${probe?.httpGet?.path} answers 200`)
      await res.arrayBuffer()
    }
    const scrape = await fetch(`${base}${sts.template.metadata.annotations?.['prometheus.io/path']}`)
    assert.equal(scrape.status, 200)
    assert.match(await scrape.text(), /^llmproxy_ratelimit_redis_up 1$/m, 'connected to the Redis of $REDIS_URL')

    const refused = await fetch(`${adminBase}/admin/upstreams`)
    assert.equal(refused.status, 401)
    await refused.arrayBuffer()
    const admin = await fetch(`${adminBase}/admin/upstreams`, { headers: { authorization: `Bearer ${TEST_SECRETS.ADMIN_TOKEN}` } })
    assert.equal(admin.status, 200)
    assert.deepEqual(((await admin.json()) as { name: string }[]).map((u) => u.name).sort(), ['openai', 'vllm-a', 'vllm-b'])
  })

  test('every metric a dashboard query names is one the gateway exports, and has the labels the query uses', async () => {
    await traffic()
    const exposition = await (await fetch(`${base}/metrics`)).text()
    const declared = new Set<string>()
    for (const [, name, type] of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      declared.add(name as string)
      if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) declared.add(`${name}${suffix}`)
    }
    const labelsOf = new Map<string, Set<string>>()
    for (const [, name, labels = ''] of exposition.matchAll(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? \S+$/gm)) {
      const set = labelsOf.get(name as string) ?? new Set<string>()
      for (const [, label] of labels.matchAll(/([a-zA-Z_]\w*)="/g)) set.add(label as string)
      labelsOf.set(name as string, set)
    }

    const queries = dashboardQueries()
    for (const { where, expr } of queries) {
      const { metrics, labels } = promqlNames(expr)
      assert.ok(metrics.length > 0, `${where}: names a metric`)
      for (const metric of metrics) {
        assert.ok(declared.has(metric), `${where}: ${metric} is exported by the gateway`)
        assert.ok(labelsOf.has(metric), `${where}: ${metric} has samples after the test traffic`)
      }
      for (const label of labels) {
        if (TARGET_LABELS.has(label)) continue
        assert.ok(
          metrics.some((m) => labelsOf.get(m)?.has(label)),
          `${where}: label ${label} is on ${metrics.join(' or ')}`,
        )
      }
    }
    // What the dashboard is for: traffic and errors, TTFT and tokens, upstream health, limits, the usage
    // webhook and its spool, Redis.
    const used = new Set(queries.flatMap(({ expr }) => promqlNames(expr).metrics))
    for (const metric of [
      'llmproxy_requests_total',
      'llmproxy_upstream_attempts_total',
      'llmproxy_time_to_first_token_seconds_bucket',
      'llmproxy_completion_tokens_total',
      'llmproxy_prompt_tokens_total',
      'llmproxy_upstream_up',
      'llmproxy_rejections_total',
      'llmproxy_usage_queue_depth',
      'llmproxy_usage_spool_bytes',
      'llmproxy_usage_dropped_total',
      'llmproxy_ratelimit_redis_up',
    ]) {
      assert.ok(used.has(metric), `the dashboard shows ${metric}`)
    }
  })

  test('SIGTERM: an in-flight stream finishes, its usage record is delivered, the gateway exits 0; no secret reached its logs', async () => {
    const inFlight = await chat('drain', { requestId: 'deploy-test-drain' })
    const reader = inFlight.body?.getReader()
    assert.ok(reader)
    await reader.read()
    const exited = stopChild(gateway, 'SIGTERM')
    let rest = ''
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) rest += Buffer.from(chunk.value).toString()
    assert.ok(rest.endsWith('data: [DONE]\n\n'), 'the stream in flight at SIGTERM completes')
    assert.equal(await exited, 0)
    assert.match(output, /"msg":"stopped"/)
    assert.ok(
      receiver.records.some((r) => r.requestId === 'deploy-test-drain'),
      'its usage record was delivered before the exit',
    )
    assert.equal(receiver.badSignatures, 0)
    for (const [key, value] of Object.entries({ ...TEST_SECRETS, REDIS_PASSWORD })) {
      assert.ok(!output.includes(value), `${key} is not logged`)
    }
  })

  function chat(
    content: string,
    options: { key?: string; model?: string; signal?: AbortSignal; requestId?: string } = {},
  ): Promise<Response> {
    return fetch(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${options.key ?? TEST_SECRETS.TEAM_A_KEY}`,
        ...(options.requestId === undefined ? {} : { 'x-request-id': options.requestId }),
      },
      body: JSON.stringify({ model: options.model ?? 'qwen-7b', stream: true, messages: [{ role: 'user', content }] }),
      signal: options.signal,
    })
  }

  /** The mock's answers, by prompt: one failure before a failover, a slow stream, an answer without usage. */
  function programMock(): void {
    let failed = false
    mock.program((req) => {
      const content = JSON.stringify(req.body)
      if (content.includes('fail once') && !failed) {
        failed = true
        return { status: 503 }
      }
      if (content.includes('slow')) return { gapMs: 100, tokens: 100 }
      if (content.includes('drain')) return { gapMs: 50, tokens: 10 }
      if (content.includes('no usage')) return { usage: false }
      return undefined
    })
  }

  /** Requests that make the gateway export every kind of sample the dashboard reads. */
  async function traffic(): Promise<void> {
    const before = receiver.records.length
    const streamed = await chat('hello')
    assert.equal(streamed.status, 200)
    assert.ok((await streamed.text()).endsWith('data: [DONE]\n\n'))
    const failover = await chat('fail once')
    assert.equal(failover.status, 200, 'another attempt answers')
    await failover.text()
    const noUsage = await chat('no usage')
    assert.equal(noUsage.status, 200)
    await noUsage.text()
    const abort = new AbortController()
    const slow = await chat('slow', { signal: abort.signal })
    await slow.body?.getReader().read()
    abort.abort()
    await until(() => mock.requests.some((r) => r.aborted), 'the upstream request to be aborted')
    const unknownKey = await chat('hello', { key: 'sk-not-a-key' })
    assert.equal(unknownKey.status, 401)
    await unknownKey.text()
    const forbiddenModel = await chat('hello', { key: TEST_SECRETS.TEAM_B_KEY, model: 'gpt-4o' })
    assert.equal(forbiddenModel.status, 403)
    await forbiddenModel.text()
    await until(() => receiver.records.length >= before + 4, 'the usage webhook to receive the four records')
  }
})
