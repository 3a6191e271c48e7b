import assert from 'node:assert/strict'
import { test } from 'node:test'
import Fastify from 'fastify'
import { ensureCore, llmCore, type UsageRecord } from '../src/index.js'

test('llmCore may be registered again (by another plugin first, or in a child context): one registry, one context', async (t) => {
  const app = Fastify({ logger: false })
  t.after(() => app.close())
  await ensureCore(app) // what every other plugin does when core is missing
  await app.register(llmCore)
  let childRegistry: unknown = null
  await app.register(async (child) => {
    await child.register(llmCore)
    childRegistry = child.llm
  })
  await app.ready()
  assert.equal(childRegistry, app.llm)
})

test('core registered in a child context first, then at the root: one registry, so root listeners hear the child routes', async (t) => {
  const app = Fastify({ logger: false })
  t.after(() => app.close())
  // The gateway's plugins in their own context (they register core there), the app's usage listener at the root after.
  await app.register(async (child) => {
    await ensureCore(child)
    child.get('/chat', (request, reply) => {
      child.llm.emitReject({ reason: 'auth', keyId: null, statusCode: 401 }, request)
      return reply.code(401).send()
    })
  })
  await ensureCore(app)
  const heard: string[] = []
  app.llm.addHook('onReject', (rejection) => heard.push(rejection.reason))
  assert.equal((await app.inject('/chat')).statusCode, 401)
  assert.deepEqual(heard, ['auth'])
})

test('core registered in a child context first, then at the root: the child listeners hear the root routes', async (t) => {
  const app = Fastify({ logger: false })
  t.after(() => app.close())
  // A usage or metrics plugin in the app's own context (it registers core there), the gateway at the root after.
  const heard: string[] = []
  let keptAtRoot = false
  await app.register(async (internal) => {
    await ensureCore(internal)
    internal.llm.addHook('onReject', (rejection) => heard.push(rejection.reason))
    internal.llm.recordsKeptAtTurnEnd = true // a usage spool here keeps the records of the root's requests too
  })
  await ensureCore(app)
  app.get('/chat', (request, reply) => {
    keptAtRoot = app.llm.recordsKeptAtTurnEnd
    if (app.llm.hasListeners('onReject')) app.llm.emitReject({ reason: 'auth', keyId: null, statusCode: 401 }, request)
    return reply.code(401).send()
  })
  assert.equal((await app.inject('/chat')).statusCode, 401)
  assert.deepEqual(heard, ['auth'])
  assert.equal(keptAtRoot, true)
})

test('sibling contexts that register core stay apart; listeners of a context around them hear both', async (t) => {
  const app = Fastify({ logger: false })
  t.after(() => app.close())
  const heard: Record<string, string[]> = { a: [], b: [], root: [] }
  for (const name of ['a', 'b']) {
    await app.register(
      async (tenant) => {
        await ensureCore(tenant)
        tenant.llm.addHook('onReject', (rejection) => heard[name]?.push(`${name} heard ${rejection.reason}`))
        tenant.get('/go', (request, reply) => {
          tenant.llm.emitReject({ reason: name === 'a' ? 'auth' : 'ip', keyId: null, statusCode: 401 }, request)
          return reply.code(401).send()
        })
      },
      { prefix: `/${name}` },
    )
  }
  // The app's own listener at the root, registered after both (as a usage or metrics plugin at the root would be).
  await ensureCore(app)
  app.llm.addHook('onReject', (rejection) => heard.root?.push(rejection.reason))
  let kept = false
  await app.register(async (tenant) => {
    await ensureCore(tenant)
    tenant.get('/kept', () => {
      kept = tenant.llm.recordsKeptAtTurnEnd
      return 'ok'
    })
  })
  app.llm.recordsKeptAtTurnEnd = true // a usage spool at the root keeps the records of every context's requests
  await app.inject('/a/go')
  await app.inject('/b/go')
  await app.inject('/kept')
  assert.deepEqual(heard, { a: ['a heard auth'], b: ['b heard ip'], root: ['auth', 'ip'] })
  assert.equal(kept, true)
})

test('llmCore takes no options', async () => {
  const bad = Fastify({ logger: false })
  await assert.rejects(async () => {
    await bad.register(llmCore, { foo: 1 } as never)
    await bad.ready()
  }, /\/foo: unknown key/)
  await bad.close()
})

test('listeners may return anything; a promise that rejects is logged, never thrown; a refusal sets the outcome', async (t) => {
  const logged: string[] = []
  const app = Fastify({
    logger: { level: 'error', stream: { write: (line: string) => logged.push(line) } },
  })
  t.after(() => app.close())
  await app.register(llmCore)
  const seen: UsageRecord[] = []
  // A listener returning a number (Array#push) type-checks: what it returns is not used.
  app.llm.addHook('onUsage', (record) => seen.push(record))
  app.llm.addHook('onReject', async () => {
    throw new Error('listener failed')
  })
  let outcome: string | null = null
  app.get('/refuse', (request, reply) => {
    app.llm.emitReject({ reason: 'auth', keyId: null, statusCode: 401 }, request)
    outcome = request.llm.outcome
    return reply.code(401).send()
  })
  assert.equal((await app.inject('/refuse')).statusCode, 401)
  assert.equal(outcome, 'rejected')
  await new Promise((resolve) => setImmediate(resolve))
  assert.ok(logged.some((line) => line.includes('llm hook listener failed')))
})
