// The quota state file at shutdown (rateLimit.quotaStateFile, memory store): a final save that fails loses the quota
// use since the last save, which the next start would not count. The real CLI logs it at error and exits 1, in one
// process and with workers (where the primary saves), so that a supervisor sees the stop failed.
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { logLines, spawnGateway, workersReady } from './gateway-process.js'

const KEY = 'sk-e2e-quota-state-0000000000000'
let dir: string
let mock: MockUpstream
const stops: (() => Promise<void>)[] = []
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'llmproxy-quota-state-'))
  mock = await startMockUpstream({ defaults: { tokens: 5 } })
})
after(async () => {
  for (const stop of stops) await stop()
  await mock.close()
  rmSync(dir, { recursive: true, force: true })
})

for (const workers of [1, 2]) {
  test(`workers: ${workers}: a final save of the quota state file that fails is logged at error, and the gateway exits 1`, async () => {
    const stateDir = join(dir, `state-${workers}`)
    const file = join(dir, `gateway-${workers}.yaml`)
    writeFileSync(
      file,
      JSON.stringify({
        server: { host: '127.0.0.1', port: 0, workers },
        upstreams: [{ name: 'mock', url: mock.url, protocol: 'openai' }],
        models: [{ name: 'gpt-test', upstreams: ['mock'] }],
        healthChecks: { enabled: false },
        auth: { keys: [{ id: 'q', key: KEY, quota: { tokens: 1000, per: 'day' } }] },
        rateLimit: { quotaStateFile: join(stateDir, 'quota.json') },
      }),
    )
    const gateway = await spawnGateway(file, (stop) => stops.push(stop))
    await workersReady(gateway, workers)
    // The file's directory replaced by a file once started: every save fails from now on.
    rmSync(stateDir, { recursive: true })
    writeFileSync(stateDir, '')
    const res = await fetch(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'Hello' }] }),
    })
    assert.equal(res.status, 200)
    await res.arrayBuffer()

    const exited = new Promise<number | null>((resolve) => gateway.child.once('exit', (code) => resolve(code)))
    gateway.child.kill('SIGTERM')
    assert.equal(await exited, 1, gateway.output())
    const lost = logLines(gateway).filter(
      (l) => l.msg === 'rate-limit: could not save the quota state file at shutdown; the quota use since the last save is lost',
    )
    assert.equal(lost.length, 1, gateway.output())
    assert.equal(lost[0]?.level, 50)
  })
}
