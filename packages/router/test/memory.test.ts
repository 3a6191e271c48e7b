// What an open stream keeps in memory (docs/benchmarks.md):
// - its response's header block as one string. Node keeps the block it built for as long as the response lasts, as
//   the tree of concatenations that built it (four nodes per header): with thousands of open streams, ~1 KB each.
// - its upstream request's body in bytes of its own. undici keeps the body until the answer ends; the copy it makes
//   of a string comes from Buffer's shared pool, where a small body held a whole 8 KB slab for the stream's life.
// - no copy of a large request body (UNRETAINED_BODY_BYTES or more): undici gets it as an iterable it empties.
// - no chunk of the upstream's answer between two chunks, and no search tables of its own.
// - of a read that ends inside an event, while the event's rest is awaited, that unfinished tail only: not the read
//   (up to 64 KB) a view or a slice of it would keep alive.
// - converted: the text its encoder puts in every chunk as one string too, and none of the events it decoded from
//   the last chunk.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { getHeapSnapshot } from 'node:v8'
import { startMockUpstream } from '@llmproxy/mock-upstream'
import { type Dispatcher, request } from 'undici'
import { UNRETAINED_BODY_BYTES } from '../src/dispatcher.js'
import { chat, type Harness, startHarness } from './helpers.js'
import { DONE, finish, role, type Script, scripted, sleep, sse, text, upstream } from './scripted.js'

let h: Harness
before(async () => {
  h = await startHarness()
})
after(() => h.close())

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] } }
  nodes: number[]
  edges: number[]
  strings: string[]
}

/** The live objects of the constructors named in a heap snapshot of this process, and the way to read their fields. */
async function heapObjects(names: string | readonly string[]) {
  let json = ''
  for await (const part of getHeapSnapshot()) json += part
  const snap = JSON.parse(json) as Snapshot
  const { node_fields: nf, node_types: nt, edge_fields: ef, edge_types: et } = snap.snapshot.meta
  const [N, E] = [nf.length, ef.length]
  const [TYPE, NAME, SIZE, EDGES] = [nf.indexOf('type'), nf.indexOf('name'), nf.indexOf('self_size'), nf.indexOf('edge_count')]
  const [ETYPE, ENAME, ETO] = [ef.indexOf('type'), ef.indexOf('name_or_index'), ef.indexOf('to_node')]
  const { nodes, edges, strings } = snap
  const firstEdge: number[] = []
  for (let i = 0, e = 0; i < nodes.length; i += N) {
    firstEdge[i / N] = e
    e += (nodes[i + EDGES] as number) * E
  }
  /** What an array's elements point to. */
  const elements = (node: number): number[] => {
    const from = firstEdge[node / N] as number
    const found: number[] = []
    for (let k = 0; k < (nodes[node + EDGES] as number); k++) {
      const j = from + k * E
      if (et[0][edges[j + ETYPE] as number] === 'element') found.push(edges[j + ETO] as number)
    }
    return found
  }
  const edgeTo = (node: number, field: string): number | null => {
    const from = firstEdge[node / N] as number
    for (let k = 0; k < (nodes[node + EDGES] as number); k++) {
      const j = from + k * E
      const type = et[0][edges[j + ETYPE] as number]
      if ((type === 'property' || type === 'internal') && strings[edges[j + ENAME] as number] === field) return edges[j + ETO] as number
    }
    return null
  }
  const typeOf = (node: number) => nt[0][nodes[node + TYPE] as number]
  const text = (node: number) => strings[nodes[node + NAME] as number] as string
  const size = (node: number) => nodes[node + SIZE] as number
  // A flat string; or a tree V8 flattened in place, until the GC replaces it: its first part the whole text, the
  // second empty.
  const isFlat = (node: number): boolean => {
    if (typeOf(node) === 'string') return true
    if (typeOf(node) !== 'concatenated string') return false
    const [first, second] = [edgeTo(node, 'first'), edgeTo(node, 'second')]
    return first !== null && second !== null && typeOf(first) === 'string' && text(second) === ''
  }
  const found: number[] = []
  const wanted = new Set(typeof names === 'string' ? [names] : names)
  for (let i = 0; i < nodes.length; i += N) if (typeOf(i) === 'object' && wanted.has(text(i))) found.push(i)
  return { found, edgeTo, elements, typeOf, text, size, isFlat }
}

/** The header blocks (`_header`) of the live ServerResponses: the text of each, and whether it is kept as one string. */
async function headerBlocks(): Promise<{ text: string; flat: boolean }[]> {
  const { found, edgeTo, typeOf, text, isFlat } = await heapObjects('ServerResponse')
  const treeText = (node: number | null): string =>
    node === null
      ? ''
      : typeOf(node) === 'concatenated string'
        ? treeText(edgeTo(node, 'first')) + treeText(edgeTo(node, 'second'))
        : text(node)
  const blocks: { text: string; flat: boolean }[] = []
  for (const response of found) {
    const header = edgeTo(response, '_header')
    if (header === null || typeOf(header).endsWith('string') === false) continue
    blocks.push({ text: treeText(header), flat: isFlat(header) })
  }
  return blocks
}

/** The byte sizes of the memory behind the bodies of undici's live requests to `origin`. */
async function upstreamBodyStores(origin: string): Promise<number[]> {
  const { found, edgeTo, text, size, typeOf } = await heapObjects('Request')
  const stores: number[] = []
  // The text of a string, or of a tree of concatenations (the origin undici keeps may be one).
  const value = (node: number | null): string | null => {
    if (node === null) return null
    if (typeOf(node) === 'string') return text(node)
    if (typeOf(node) !== 'concatenated string') return null
    const [first, second] = [value(edgeTo(node, 'first')), value(edgeTo(node, 'second'))]
    return first === null || second === null ? null : first + second
  }
  for (const request of found) {
    const body = edgeTo(request, 'body')
    if (body === null || value(edgeTo(request, 'origin')) !== origin) continue
    // The bytes themselves, or those an iterable still holds.
    const buffer = edgeTo(edgeTo(body, 'bytes') ?? body, 'buffer')
    const store = buffer === null ? null : edgeTo(buffer, 'backing_store')
    stores.push(store === null ? -1 : size(store))
  }
  return stores
}

/** Opens `count` streams through the gateway, each committed and waiting for its next token. */
function openStreams(count: number, body = chat({ stream: true, mock: { tokens: 3, gapMs: 5000 } })) {
  return Promise.all(
    Array.from({ length: count }, async () => {
      const res = await request(`${h.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      })
      const chunks = res.body[Symbol.asyncIterator]()
      await chunks.next() // the stream is open and committed
      return res
    }),
  )
}

test('an open stream keeps its header block as one string, not the tree of concatenations that built it', async () => {
  const OPEN = 20
  const streams = await openStreams(OPEN)
  try {
    // The gateway's own responses (the mock's are in this process too): only the gateway sends x-accel-buffering.
    const streams = (await headerBlocks()).filter(({ text }) => text.includes('x-accel-buffering: no'))
    const flat = streams.filter((block) => block.flat && block.text.startsWith('HTTP/1.1 200'))
    assert.equal(flat.length, OPEN, `open streams whose header block is one string: ${flat.length} of ${streams.length}`)
  } finally {
    for (const res of streams) res.body.destroy()
  }
})

test('a Gemini stream answered as one JSON array keeps its header block as one string too', async () => {
  const OPEN = 5
  // Its first element, then nothing yet: the array stays open, as a slow answer's does.
  const g = await scripted(
    [
      upstream('g', 'gemini', (res) => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write('[{"candidates":[{"content":{"parts":[{"text":"lorem "}],"role":"model"},"index":0}]}')
      }),
    ],
    [{ name: 'mg', upstreams: ['g'] }],
  )
  const open: Dispatcher.ResponseData[] = []
  try {
    for (let i = 0; i < OPEN; i++) {
      const res = await request(`${g.url}/v1beta/models/mg:streamGenerateContent`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
      })
      open.push(res)
      assert.equal(res.statusCode, 200)
      await res.body[Symbol.asyncIterator]().next()
    }
    // The gateway's responses (the scripted upstream's are in this process too): only the gateway sends a request id.
    const answers = (await headerBlocks()).filter(({ text }) => text.includes('x-request-id: '))
    assert.equal(answers.length, OPEN)
    assert.deepEqual(
      answers.map(({ flat }) => flat),
      Array(OPEN).fill(true),
      'open JSON-array streams whose header block is one string',
    )
  } finally {
    for (const res of open) res.body.destroy()
    await g.close()
  }
})

test("an open stream's upstream request body is in bytes of its own, not in a slab of Buffer's shared pool", async () => {
  const OPEN = 20
  const streams = await openStreams(OPEN)
  try {
    const stores = await upstreamBodyStores(new URL(h.mock.url).origin)
    assert.equal(stores.length, OPEN, 'one live upstream request per open stream')
    const body = Buffer.byteLength(chat({ stream: true, mock: { tokens: 3, gapMs: 5000 } }))
    for (const store of stores) {
      assert.ok(store > 0 && store < Buffer.poolSize && store < body * 2, `a ${body}-byte request body held in ${store} bytes`)
    }
  } finally {
    for (const res of streams) res.body.destroy()
  }
})

test("an open stream's large upstream request body is not held by undici until the answer ends", async () => {
  const OPEN = 10
  const context = 'x'.repeat(4 * UNRETAINED_BODY_BYTES)
  const body = chat({ stream: true, mock: { tokens: 3, gapMs: 5000 }, messages: [{ role: 'user', content: context }] })
  const streams = await openStreams(OPEN, body)
  try {
    const stores = await upstreamBodyStores(new URL(h.mock.url).origin)
    assert.equal(stores.length, OPEN, 'one live upstream request per open stream')
    assert.deepEqual(stores, Array(OPEN).fill(-1), `the bytes behind each ${Buffer.byteLength(body)}-byte request body`)
  } finally {
    for (const res of streams) res.body.destroy()
  }
})

test("an open stream keeps no chunk of its upstream's answer between chunks, and shares its search tables", async () => {
  const OPEN = 20
  const streams = await openStreams(OPEN)
  try {
    // A chunk kept until the next one (a second later, in a slow stream) outlives the young generation: with
    // thousands of streams, megabytes of socket reads wait for a full GC.
    const scanners = await heapObjects('StreamScanner')
    assert.equal(scanners.found.length, OPEN, 'one scanner per open stream')
    const kept = scanners.found.filter((scanner) => {
      const searched = scanners.edgeTo(scanner, 'searched')
      return searched !== null && scanners.typeOf(searched) === 'object' && scanners.text(searched) === 'Buffer'
    })
    assert.equal(kept.length, 0, `scanners holding the last chunk: ${kept.length} of ${OPEN}`)
    // A search's tables depend on its needles only: one per endpoint's list, not 256 bytes more per stream.
    const searches = await heapObjects('NeedleSearch')
    assert.equal(searches.found.length, 2 * OPEN, "each stream's terminator and finish searches")
    const tables = new Set(searches.found.map((search) => searches.edgeTo(search, 'mayCarry')))
    assert.ok(tables.size <= 2, `distinct tables: ${tables.size}`)
  } finally {
    for (const res of streams) res.body.destroy()
  }
})

test('a large request body reaches the upstream whole, with its content-length, and its connection is reused', async () => {
  const seen: { length: string | undefined; chunked: boolean; received: number; port: number | undefined }[] = []
  const g = await scripted(
    [
      upstream('a', 'openai', (res, body, req) => {
        seen.push({
          length: req.headers['content-length'],
          chunked: req.headers['transfer-encoding'] !== undefined,
          received: Buffer.byteLength(body),
          port: req.socket.remotePort,
        })
        sse(res)
        res.end(role + text('ok') + finish() + DONE)
      }),
    ],
    [{ name: 'm', upstreams: ['a'] }],
  )
  try {
    const body = JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'x'.repeat(4 * UNRETAINED_BODY_BYTES) }] })
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${g.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
      assert.match(await res.text(), /data: \[DONE\]/)
    }
    // (The gateway's upstream body is the client's, with what it adds: stream_options.)
    const sent = seen[0]?.received ?? 0
    assert.ok(sent > 4 * UNRETAINED_BODY_BYTES, `${sent} bytes`)
    assert.deepEqual(
      seen.map(({ length, chunked, received }) => [Number(length), chunked, received]),
      Array(3).fill([sent, false, sent]),
    )
    assert.equal(new Set(seen.map((request) => request.port)).size, 1, 'one upstream connection for the three requests')
  } finally {
    await g.close()
  }
})

/**
 * The bytes each field (of each live object of the classes named) keeps alive: a Buffer's whole backing store, a
 * string's characters with those of the string it is a slice of, or of the strings it concatenates. Fields that hold
 * nothing ('' or null) are left out.
 */
async function heldBytes(fields: Record<string, string[]>): Promise<{ holder: string; bytes: number }[]> {
  const { found, edgeTo, typeOf, text, size } = await heapObjects(Object.keys(fields))
  const stringBytes = (node: number): number => {
    const kind = typeOf(node)
    if (kind === 'sliced string') return stringBytes(edgeTo(node, 'parent') as number)
    if (kind === 'concatenated string') return stringBytes(edgeTo(node, 'first') as number) + stringBytes(edgeTo(node, 'second') as number)
    return text(node) === '' ? 0 : size(node)
  }
  const held: { holder: string; bytes: number }[] = []
  for (const object of found) {
    for (const field of fields[text(object)] ?? []) {
      const value = edgeTo(object, field)
      if (value === null) continue
      const holder = `${text(object)}.${field}`
      if (typeOf(value) === 'object' && text(value) === 'Buffer') {
        const store = edgeTo(edgeTo(value, 'buffer') as number, 'backing_store')
        held.push({ holder, bytes: store === null ? 0 : size(store) })
      } else if (typeOf(value).endsWith('string')) {
        const bytes = stringBytes(value)
        if (bytes > 0) held.push({ holder, bytes })
      }
    }
  }
  return held
}

test('a stream whose upstream read ends inside an event keeps that unfinished tail, not the whole read', async () => {
  // The mock's streams, whole, split at their blank lines.
  const mock = await startMockUpstream({ defaults: { tokens: 5 } })
  const headers = { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' }
  const mockEvents = async (path: string, body: object) => {
    const res = await fetch(`${mock.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) })
    return (await res.text()).split(/(?<=\r?\n\r?\n)/)
  }
  const messages = [{ role: 'user', content: 'hi' }]
  const geminiBody = { contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }
  const openaiEvents = await mockEvents('/v1/chat/completions', {
    model: 'm',
    stream: true,
    stream_options: { include_usage: true },
    messages,
  })
  const anthropicEvents = await mockEvents('/v1/messages', { model: 'm', stream: true, max_tokens: 50, messages })
  const geminiEvents = await mockEvents('/v1beta/models/m:streamGenerateContent?alt=sse', geminiBody)
  await mock.close()
  // One read of over 16 KB (a comment pads it, as an intermediary filling its buffer would) that ends in the middle of
  // the fourth event (a text delta); the rest never comes here: the gateway waits with half an event.
  const pausedMidEvent =
    (events: string[]): Script =>
    (res) => {
      sse(res)
      const cut = events[3] as string
      res.write(`${events.slice(0, 3).join('')}: ${'x'.repeat(16 * 1024)}\n\n${cut.slice(0, cut.length >> 1)}`)
    }
  const g = await scripted(
    [
      upstream('o', 'openai', pausedMidEvent(openaiEvents)),
      upstream('v', 'vllm', pausedMidEvent(openaiEvents)),
      upstream('a', 'anthropic', pausedMidEvent(anthropicEvents)),
      upstream('g', 'gemini', pausedMidEvent(geminiEvents)),
    ],
    [
      { name: 'mo', upstreams: ['o'] },
      { name: 'mv', upstreams: ['v'] },
      { name: 'ma', upstreams: ['a'] },
      { name: 'mg', upstreams: ['g'] },
    ],
  )
  const open: Dispatcher.ResponseData[] = []
  try {
    const clients: [string, object][] = [
      // Same format (the usage-event filter and the scanner) and the headline converted pairs: an Anthropic client on
      // OpenAI or vLLM, an OpenAI client on Anthropic; then Gemini upstreams (their finish is searched as a JSON key).
      ['/v1/chat/completions', { model: 'mo', stream: true, messages }],
      ['/v1/messages', { model: 'mo', stream: true, max_tokens: 50, messages }],
      ['/v1/messages', { model: 'mv', stream: true, max_tokens: 50, messages }],
      ['/v1/chat/completions', { model: 'ma', stream: true, messages }],
      ['/v1/messages', { model: 'ma', stream: true, max_tokens: 50, messages }],
      ['/v1/chat/completions', { model: 'mg', stream: true, messages }],
      ['/v1beta/models/mg:streamGenerateContent?alt=sse', geminiBody],
    ]
    for (const [path, body] of clients) {
      const res = await request(`${g.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) })
      open.push(res)
      assert.equal(res.statusCode, 200, path)
      await res.body[Symbol.asyncIterator]().next() // the whole events of the read went out
    }
    // (Should the read have come in two, its rest is read by now.)
    await sleep(50)
    const held = await heldBytes({
      StreamScanner: ['splitLine'],
      EventAligner: ['held'],
      UsageEventFilter: ['held'],
      KeySearch: ['waiting'],
      OpenAiDecoder: ['partial', 'event', 'data'],
      AnthropicDecoder: ['partial', 'event', 'data'],
      GeminiDecoder: ['partial', 'event', 'data'],
    })
    const holders = new Set(held.map(({ holder }) => holder))
    const expected = ['StreamScanner.splitLine', 'UsageEventFilter.held', 'EventAligner.held', 'KeySearch.waiting']
    for (const holder of [...expected, 'OpenAiDecoder.partial', 'AnthropicDecoder.event', 'GeminiDecoder.partial']) {
      assert.ok(holders.has(holder), `${holder} holds the half event (held: ${[...holders].join(', ')})`)
    }
    // Half an event is a few hundred bytes at most; the read it came in is over 16 KB.
    const pinning = held.filter(({ bytes }) => bytes > 2048)
    assert.deepEqual(pinning, [], 'fields keeping more than half an event alive')
  } finally {
    for (const res of open) res.body.destroy()
    await g.close()
  }
})

/**
 * One converted stream per encoder, each open and waiting for its upstream's next event: an OpenAI client on an
 * Anthropic upstream, an Anthropic and a Gemini client on an OpenAI one. Returns what closes them.
 */
async function openConvertedStreams(): Promise<() => Promise<void>> {
  const event = (type: string, data: object) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`
  const message = { id: 'msg_1', type: 'message', role: 'assistant', model: 'c', content: [], usage: { input_tokens: 5, output_tokens: 1 } }
  const g = await scripted(
    [
      upstream('a', 'anthropic', (res) => {
        sse(res)
        res.write(
          event('message_start', { message }) +
            event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }) +
            event('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'lorem ' } }),
        )
      }),
      upstream('o', 'openai', (res) => {
        sse(res)
        res.write(role + text('lorem '))
      }),
    ],
    [
      { name: 'ma', upstreams: ['a'] },
      { name: 'mo', upstreams: ['o'] },
    ],
  )
  const messages = [{ role: 'user', content: 'hi' }]
  const clients: [string, object][] = [
    ['/v1/chat/completions', { model: 'ma', stream: true, stream_options: { include_usage: true }, messages }],
    ['/v1/messages', { model: 'mo', stream: true, max_tokens: 50, messages }],
    ['/v1beta/models/mo:streamGenerateContent?alt=sse', { contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }],
  ]
  const open: Dispatcher.ResponseData[] = []
  const close = async () => {
    for (const res of open) res.body.destroy()
    await g.close()
  }
  try {
    for (const [path, body] of clients) {
      const headers = { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' }
      const res = await request(`${g.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) })
      open.push(res)
      assert.equal(res.statusCode, 200, path)
      await res.body[Symbol.asyncIterator]().next() // the upstream's first chunk went out converted
    }
  } catch (err) {
    await close()
    throw err
  }
  return close
}

test("a converted stream's encoder keeps the text it puts in every chunk as one string, not the tree that built it", async () => {
  const close = await openConvertedStreams()
  try {
    // Built once per stream from its id and model, and kept for its whole life: as a tree, 260-300 B more per stream.
    const kept: Record<string, string[]> = { OpenAiEncoder: ['head'], GeminiEncoder: ['tail'] }
    const { found, edgeTo, text, isFlat } = await heapObjects(Object.keys(kept))
    assert.deepEqual(found.map(text).sort(), ['GeminiEncoder', 'OpenAiEncoder'])
    const trees = found.flatMap((encoder) =>
      (kept[text(encoder)] ?? []).filter((field) => !isFlat(edgeTo(encoder, field) as number)).map((field) => `${text(encoder)}.${field}`),
    )
    assert.deepEqual(trees, [], 'encoder fields kept as a tree of concatenations')
  } finally {
    await close()
  }
})

test('a converted stream keeps none of the events it decoded from its last chunk until the next one', async () => {
  const close = await openConvertedStreams()
  try {
    // An event and its text, held for a second or more in a slow stream: past the young generation.
    const { found, edgeTo, elements, text } = await heapObjects('StreamConverter')
    assert.equal(found.length, 3, 'one converter per open stream')
    const held = found.flatMap((converter) =>
      elements(edgeTo(converter, 'events') as number).map((event) => text(edgeTo(event, 'type') as number)),
    )
    assert.deepEqual(held, [], 'the types of the decoded events held between chunks')
  } finally {
    await close()
  }
})
