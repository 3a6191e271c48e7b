import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { describe, test } from 'node:test'
import Fastify from 'fastify'
import pino from 'pino'
import { REDACTED_PATHS } from '../src/app.js'
import { withLazyChildren } from '../src/lazy-logger.js'

function capture(level = 'info') {
  const lines: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)))
      done()
    },
  })
  const logger = pino({ level, redact: { paths: REDACTED_PATHS, censor: '[redacted]' } }, stream)
  // Count the real pino children made, to see which loggers stay lazy.
  let made = 0
  const pinoChild = logger.child
  logger.child = function (this: typeof logger, ...args: Parameters<typeof pinoChild>) {
    made++
    return pinoChild.apply(this, args)
  } as typeof pinoChild
  return { root: withLazyChildren(logger), lines, made: () => made }
}

const flush = () => new Promise((resolve) => setImmediate(resolve))

describe('withLazyChildren', () => {
  test('a child that never logs never becomes a pino child', () => {
    const { root, made } = capture()
    const child = root.child({ reqId: 'r-1' })
    assert.equal(child.level, 'info')
    assert.equal(made(), 0)
  })

  test('a child that logs carries its bindings, once built, and redacts like its parent', async () => {
    const { root, lines, made } = capture()
    const child = root.child({ reqId: 'r-2' })
    child.info({ req: { headers: { authorization: 'Bearer sk-secret' } } }, 'first')
    child.warn('second')
    await flush()
    assert.equal(made(), 1)
    assert.deepEqual(
      lines.map((l) => [l.reqId, l.msg, l.level]),
      [
        ['r-2', 'first', 30],
        ['r-2', 'second', 40],
      ],
    )
    assert.deepEqual(lines[0]?.req, { headers: { authorization: '[redacted]' } })
  })

  test('levels: the parent level filters, a child level given at creation applies, and can be changed', async () => {
    const { root, lines } = capture('warn')
    root.child({ reqId: 'quiet' }).info('dropped')
    const verbose = root.child({ reqId: 'verbose' }, { level: 'debug' })
    assert.equal(verbose.level, 'debug')
    verbose.debug('kept')
    const later = root.child({ reqId: 'later' })
    later.level = 'trace'
    later.trace('kept too')
    await flush()
    assert.deepEqual(
      lines.map((l) => [l.reqId, l.msg]),
      [
        ['verbose', 'kept'],
        ['later', 'kept too'],
      ],
    )
  })

  test('grandchildren are lazy too, and keep every binding when they log', async () => {
    const { root, lines, made } = capture()
    const parent = root.child({ plugin: 'router' })
    parent.child({ reqId: 'quiet' })
    assert.equal(made(), 0)
    parent.child({ reqId: 'r-3' }).error('nested')
    await flush()
    assert.equal(made(), 2)
    assert.equal(lines[0]?.reqId, 'r-3')
    assert.equal(lines[0]?.plugin, 'router')
  })

  test('in Fastify: a request that logs nothing makes no pino child; one that logs gets its reqId', async () => {
    const { root, lines, made } = capture()
    const app = Fastify({ loggerInstance: root, disableRequestLogging: true })
    app.get('/quiet', async () => 'ok')
    app.get('/loud', async (request) => {
      request.log.info('handled')
      return 'ok'
    })
    await app.ready()
    const baseline = made()
    for (let i = 0; i < 3; i++) assert.equal((await app.inject('/quiet')).statusCode, 200)
    assert.equal(made(), baseline)
    await app.inject('/loud')
    await flush()
    const line = lines.find((l) => l.msg === 'handled')
    assert.equal(typeof line?.reqId, 'string')
    await app.close()
  })
})
