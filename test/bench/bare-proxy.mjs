// The baseline the benchmark compares against: a bare Fastify + @fastify/reply-from proxy, nothing else.
// Plain JavaScript, like the built gateway it is compared with.
import replyFrom from '@fastify/reply-from'
import Fastify from 'fastify'

const upstream = process.env.BENCH_UPSTREAM ?? 'http://127.0.0.1:9000'
const port = Number(process.env.BENCH_PORT ?? 0)
const app = Fastify({ logger: false })
// No cap on upstream connections, like the gateway's agent (reply-from's default is 128): the many-streams
// scenario keeps thousands open at once.
await app.register(replyFrom, { base: upstream, undici: { connections: null } })
app.post('/v1/chat/completions', (_request, reply) => reply.from('/v1/chat/completions'))
// The gateway's accept queue (server.backlog, 4096), so that the many-streams ramp compares the proxies, not their queues.
const url = await app.listen({ port, host: '127.0.0.1', backlog: 4096 })
process.stdout.write(`listening ${url}\n`)
process.once('SIGTERM', () => app.close().then(() => process.exit(0)))
