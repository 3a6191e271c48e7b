/** Gemini generateContent requests ⇄ the neutral request. The model and the stream flag live in the URL, not the body. */
import { field, named, optionalInteger } from './gemini-fields.js'
import { fromGeminiSchema, type InlineBudget, MAX_INLINED_CHARS, toGeminiJsonSchema } from './json-schema.js'
import {
  arrayAt,
  budgetForEffort,
  type ChatRequest,
  canonicalMediaType,
  described,
  type Effort,
  emptyRequest,
  isObject,
  type JsonObject,
  joinText,
  type MediaSource,
  mediaTypeFromUrl,
  objectAt,
  optionalNumber,
  optionalObject,
  optionalString,
  type Part,
  pushParts,
  type ResultPart,
  stringAt,
  type Turn,
} from './request-ir.js'
import { ConversionError } from './types.js'

const LEVEL_EFFORT: Record<string, Effort> = { MINIMAL: 'minimal', LOW: 'low', MEDIUM: 'medium', HIGH: 'high' }

export function parseGemini(body: JsonObject): ChatRequest {
  const cached = field(body, 'cachedContent')
  if (cached !== undefined && cached !== null) {
    throw new ConversionError(named(body, 'cachedContent'), "Gemini cached content lives on Google's side; this upstream cannot read it.")
  }
  const req = emptyRequest()
  const system = field(body, 'systemInstruction')
  if (system !== undefined && system !== null) {
    const path = named(body, 'systemInstruction')
    const parts = arrayAt(objectAt(system, path).parts, `${path}.parts`)
    for (let i = 0; i < parts.length; i++)
      req.system.push(stringAt(objectAt(parts[i], `${path}.parts[${i}]`).text, `${path}.parts[${i}].text`))
  }
  parseContents(req, arrayAt(body.contents, 'contents'))
  parseTools(req, body)
  const config = field(body, 'generationConfig')
  if (config !== undefined && config !== null)
    parseGenerationConfig(req, objectAt(config, named(body, 'generationConfig')), named(body, 'generationConfig'))
  return req
}

function parseContents(req: ChatRequest, contents: unknown[]): void {
  // Gemini matches function responses to calls by name and order; calls without an id get one here.
  const pending = new Map<string, WaitingCalls>()
  let generated = 0
  for (let i = 0; i < contents.length; i++) {
    const path = `contents[${i}]`
    const content = objectAt(contents[i], path)
    const role = content.role ?? 'user'
    if (role !== 'user' && role !== 'model' && role !== 'function') {
      throw new ConversionError(`${path}.role`, `Unknown content role ${described(role)}.`)
    }
    const rawParts = arrayAt(content.parts, `${path}.parts`)
    const parts: Part[] = []
    for (let j = 0; j < rawParts.length; j++) {
      const partPath = `${path}.parts[${j}]`
      const part = objectAt(rawParts[j], partPath)
      const call = field(part, 'functionCall')
      const response = field(part, 'functionResponse')
      if (call !== undefined) {
        const fc = objectAt(call, `${partPath}.functionCall`)
        const name = stringAt(fc.name, `${partPath}.functionCall.name`)
        const id = optionalString(fc.id, `${partPath}.functionCall.id`) ?? `call${String(++generated).padStart(5, '0')}`
        const queue = pending.get(name)
        if (queue === undefined) pending.set(name, new WaitingCalls(id))
        else queue.add(id)
        const args = fc.args === undefined || fc.args === null ? {} : objectAt(fc.args, `${partPath}.functionCall.args`)
        const signature = optionalString(field(part, 'thoughtSignature'), `${partPath}.thoughtSignature`)
        parts.push({ type: 'tool_call', id, name, input: args, signature })
      } else if (response !== undefined) {
        parts.push(functionResponse(objectAt(response, `${partPath}.functionResponse`), pending, partPath))
      } else {
        const parsed = dataPart(part, partPath)
        if (parsed !== undefined) parts.push(parsed)
      }
    }
    // Consecutive model contents are one model turn: @google/genai's chats keep a streamed answer as one content per
    // chunk (parallel calls in contents of their own), and their results answer them all in the next user turn.
    pushParts(req.turns, role === 'model' ? 'assistant' : 'user', parts)
  }
}

/**
 * The function calls of one name waiting for their response, in order: a response with an id takes that call, one
 * without the first still waiting. Linear in the calls: a search of the list for each response made 68,000 responses
 * (8 MB of request) hold the event loop for seconds. Clients' own ids may repeat: each is one call.
 */
class WaitingCalls {
  private readonly ids: string[] = []
  /** The calls before it are answered. */
  private head = 0
  /** Calls of each id still waiting. */
  private readonly waiting = new Map<string, number>()
  /** Calls of each id answered by their id, not passed by the head yet (the first of that id waiting is the one). */
  private readonly answered = new Map<string, number>()

  constructor(id: string) {
    this.add(id)
  }

  add(id: string): void {
    this.ids.push(id)
    bump(this.waiting, id, 1)
  }

  /** A response names its call (an id no call of this name has is taken as it is: nothing waits for it here). */
  take(id: string): void {
    if ((this.waiting.get(id) ?? 0) === 0) return
    bump(this.waiting, id, -1)
    bump(this.answered, id, 1)
  }

  /** A response without an id: the first call still waiting, if any. */
  takeFirst(): string | undefined {
    while (this.head < this.ids.length) {
      const id = this.ids[this.head++] as string
      if ((this.answered.get(id) ?? 0) > 0) bump(this.answered, id, -1)
      else {
        bump(this.waiting, id, -1)
        return id
      }
    }
    return undefined
  }
}

function bump(counts: Map<string, number>, id: string, by: number): void {
  counts.set(id, (counts.get(id) ?? 0) + by)
}

function functionResponse(fr: JsonObject, pending: Map<string, WaitingCalls>, path: string): Part {
  const name = stringAt(fr.name, `${path}.functionResponse.name`)
  const queue = pending.get(name)
  const given = optionalString(fr.id, `${path}.functionResponse.id`)
  if (given !== undefined) queue?.take(given)
  const callId = given ?? queue?.takeFirst()
  if (callId === undefined)
    throw new ConversionError(`${path}.functionResponse`, `No earlier functionCall named ${described(name)} is waiting for this response.`)
  const response = fr.response === undefined || fr.response === null ? {} : objectAt(fr.response, `${path}.functionResponse.response`)
  const keys = Object.keys(response)
  const only = keys.length === 1 ? keys[0] : undefined
  const isError = only === 'error'
  // {output: "…"} (Gemini's convention) or {error: "…"} become the text itself; any other object its JSON.
  const value = only === 'output' || only === 'result' || only === 'content' || isError ? response[only] : response
  const content: ResultPart[] = [{ type: 'text', text: typeof value === 'string' ? value : JSON.stringify(value) }]
  const extra = fr.parts
  if (Array.isArray(extra)) {
    for (let k = 0; k < extra.length; k++) {
      const part = dataPart(objectAt(extra[k], `${path}.functionResponse.parts[${k}]`), `${path}.functionResponse.parts[${k}]`)
      if (part?.type === 'image' || part?.type === 'document') content.push(part)
      else if (part !== undefined)
        throw new ConversionError(`${path}.functionResponse.parts[${k}]`, 'Function responses carry only images and documents here.')
    }
  }
  return { type: 'tool_result', callId, content, isError, path }
}

/** A text, thought, inline-data or file-data part; undefined for parts that add nothing elsewhere. */
function dataPart(part: JsonObject, path: string): Part | undefined {
  if (typeof part.text === 'string') {
    if (part.thought === true)
      return { type: 'reasoning', text: part.text, signature: optionalString(field(part, 'thoughtSignature'), `${path}.thoughtSignature`) }
    // A signature on a non-thought part only matters to Gemini itself.
    return { type: 'text', text: part.text }
  }
  const inline = field(part, 'inlineData')
  if (inline !== undefined) {
    const key = named(part, 'inlineData')
    const blob = objectAt(inline, `${path}.${key}`)
    const mediaType = canonicalMediaType(stringAt(field(blob, 'mimeType'), `${path}.${key}.mimeType`))
    return mediaPart({ kind: 'base64', mediaType, data: stringAt(blob.data, `${path}.${key}.data`) }, `${path}.${key}`)
  }
  const file = field(part, 'fileData')
  if (file !== undefined) {
    const key = named(part, 'fileData')
    const data = objectAt(file, `${path}.${key}`)
    const uri = stringAt(field(data, 'fileUri'), `${path}.${key}.fileUri`)
    if (uri.startsWith('gs://') || uri.startsWith('https://generativelanguage.googleapis.com/')) {
      throw new ConversionError(
        `${path}.${key}`,
        'Files stored with Google can only be read by Gemini: send the data inline or by a public https URL.',
      )
    }
    const mimeType = optionalString(field(data, 'mimeType'), `${path}.${key}.mimeType`)
    const mediaType = mimeType === undefined ? mediaTypeFromUrl(uri) : canonicalMediaType(mimeType)
    return mediaPart({ kind: 'url', url: uri, mediaType }, `${path}.${key}`)
  }
  for (const key of ['executableCode', 'codeExecutionResult', 'toolCall', 'toolResponse']) {
    if (field(part, key) !== undefined)
      throw new ConversionError(path, `Gemini's built-in ${key} parts have no equivalent on this upstream.`)
  }
  return undefined
}

function mediaPart(source: MediaSource, path: string): Part {
  const mediaType = source.mediaType ?? ''
  if (mediaType.startsWith('image/')) return { type: 'image', source, path }
  if (source.kind === 'base64' && mediaType.startsWith('audio/')) return { type: 'audio', mediaType, data: source.data, path }
  if (source.kind === 'base64' && mediaType.startsWith('text/')) {
    return { type: 'document', source: { kind: 'text', text: Buffer.from(source.data, 'base64').toString('utf8') }, path }
  }
  if (mediaType === 'application/pdf') return { type: 'document', source, path }
  throw new ConversionError(
    path,
    `Media of type ${mediaType === '' ? 'unknown' : described(mediaType)} has no equivalent on this upstream.`,
  )
}

function parseTools(req: ChatRequest, body: JsonObject): void {
  if (body.tools !== undefined) {
    const tools = arrayAt(body.tools, 'tools')
    for (let i = 0; i < tools.length; i++) {
      const path = `tools[${i}]`
      const tool = objectAt(tools[i], path)
      for (const key in tool) {
        if (key !== 'functionDeclarations' && key !== 'function_declarations') {
          throw new ConversionError(`${path}.${key}`, `Gemini's built-in ${described(key)} tool has no equivalent on this upstream.`)
        }
      }
      const decls = arrayAt(field(tool, 'functionDeclarations'), `${path}.${named(tool, 'functionDeclarations')}`)
      for (let j = 0; j < decls.length; j++) {
        const declPath = `${path}.${named(tool, 'functionDeclarations')}[${j}]`
        const decl = objectAt(decls[j], declPath)
        const jsonSchema = field(decl, 'parametersJsonSchema')
        const parameters =
          jsonSchema !== undefined
            ? objectAt(jsonSchema, `${declPath}.parametersJsonSchema`)
            : fromGeminiSchema(optionalObject(decl.parameters, `${declPath}.parameters`))
        req.tools.push({
          name: stringAt(decl.name, `${declPath}.name`),
          description: optionalString(decl.description, `${declPath}.description`),
          parameters: isObject(parameters) ? parameters : { type: 'object', properties: {} },
        })
      }
    }
  }
  const toolConfig = field(body, 'toolConfig')
  const callingConfig = isObject(toolConfig) ? field(toolConfig, 'functionCallingConfig') : undefined
  if (!isObject(callingConfig)) return
  const mode = callingConfig.mode
  const names = field(callingConfig, 'allowedFunctionNames')
  const allowed = Array.isArray(names)
    ? names.map((n, i) => stringAt(n, `toolConfig.functionCallingConfig.allowedFunctionNames[${i}]`))
    : undefined
  if (mode === 'NONE') req.toolChoice = { mode: 'none' }
  else if (mode === 'ANY' && allowed?.length === 1) req.toolChoice = { mode: 'tool', name: allowed[0] }
  else if (mode === 'ANY') req.toolChoice = { mode: 'required', allowed }
  // AUTO, VALIDATED (schema-checked calls, still optional) and unspecified: the model decides.
  else req.toolChoice = { mode: 'auto' }
}

function parseGenerationConfig(req: ChatRequest, config: JsonObject, path: string): void {
  const at = (name: string) => `${path}.${named(config, name)}`
  const candidates = optionalInteger(field(config, 'candidateCount'), at('candidateCount'))
  if (candidates !== undefined && candidates > 1) {
    throw new ConversionError(
      at('candidateCount'),
      'candidateCount > 1 cannot be served by this upstream: the gateway converts one candidate.',
    )
  }
  if (field(config, 'responseLogprobs') === true || field(config, 'logprobs') !== undefined) {
    throw new ConversionError(
      at(field(config, 'responseLogprobs') === true ? 'responseLogprobs' : 'logprobs'),
      'logprobs are not available from this upstream.',
    )
  }
  const modalities = field(config, 'responseModalities')
  if (Array.isArray(modalities) && modalities.some((m) => m !== 'TEXT')) {
    throw new ConversionError(at('responseModalities'), 'Only text output is available from this upstream.')
  }
  req.maxTokens = optionalInteger(field(config, 'maxOutputTokens'), at('maxOutputTokens'))
  req.temperature = optionalNumber(config.temperature, at('temperature'))
  req.topP = optionalNumber(field(config, 'topP'), at('topP'))
  req.topK = optionalInteger(field(config, 'topK'), at('topK'))
  req.seed = optionalInteger(config.seed, at('seed'))
  req.presencePenalty = optionalNumber(field(config, 'presencePenalty'), at('presencePenalty'))
  req.frequencyPenalty = optionalNumber(field(config, 'frequencyPenalty'), at('frequencyPenalty'))
  const stop = field(config, 'stopSequences')
  if (stop !== undefined)
    req.stop = {
      sequences: arrayAt(stop, at('stopSequences')).map((s, i) => stringAt(s, `${at('stopSequences')}[${i}]`)),
      path: at('stopSequences'),
    }
  const mime = field(config, 'responseMimeType')
  if (mime === 'application/json') {
    const jsonSchema = field(config, 'responseJsonSchema')
    const schema =
      jsonSchema !== undefined
        ? objectAt(jsonSchema, at('responseJsonSchema'))
        : fromGeminiSchema(optionalObject(field(config, 'responseSchema'), at('responseSchema')))
    req.responseFormat = isObject(schema)
      ? { type: 'json_schema', schema, path: at('responseMimeType') }
      : { type: 'json', path: at('responseMimeType') }
  } else if (mime !== undefined && mime !== 'text/plain') {
    throw new ConversionError(at('responseMimeType'), `responseMimeType ${described(mime)} has no equivalent on this upstream.`)
  }
  const thinking = field(config, 'thinkingConfig')
  if (isObject(thinking)) {
    const thinkingPath = at('thinkingConfig')
    const budget = optionalInteger(field(thinking, 'thinkingBudget'), `${thinkingPath}.thinkingBudget`)
    const level = field(thinking, 'thinkingLevel')
    const includeThoughts = field(thinking, 'includeThoughts')
    const show = typeof includeThoughts === 'boolean' ? includeThoughts : undefined
    if (budget === 0) req.reasoning = { enabled: false }
    else {
      req.reasoning = { enabled: true, show }
      if (budget !== undefined && budget > 0) req.reasoning.budget = budget
      if (typeof level === 'string' && LEVEL_EFFORT[level.toUpperCase()] !== undefined)
        req.reasoning.effort = LEVEL_EFFORT[level.toUpperCase()]
    }
  }
}

/** The largest thinkingBudget every current Gemini model takes (Flash's ceiling; Pro's is higher). */
const MAX_THINKING_BUDGET = 24576

/** Gemini 3 rejects a current-turn function call without its signature unless this documented placeholder stands in for it. */
const SKIP_SIGNATURE = 'skip_thought_signature_validator'

interface GeminiContent {
  role: 'user' | 'model'
  parts: JsonObject[]
  /** Function responses stand alone in their content (Gemini rejects other parts beside them). */
  responses: boolean
}

export function renderGemini(req: ChatRequest): JsonObject {
  const inlineBudget: InlineBudget = { left: MAX_INLINED_CHARS }
  const system = [...req.system]
  const contents: GeminiContent[] = []
  const callNames = new Map<string, string>()
  /** The last assistant turn's tool calls: their position, by id. */
  let callOrder = new Map<string, number>()
  // Gemini 3 checks the signatures of the current turn only: the calls since the last user message that is not tool results.
  const current = req.turns.findLastIndex((t) => t.role === 'user' && t.parts.some((p) => p.type !== 'tool_result'))
  for (let i = 0; i < req.turns.length; i++) {
    const turn = req.turns[i] as Turn
    if (turn.role === 'system') {
      system.push(joinText(turn.parts, '\n\n'))
      continue
    }
    if (turn.role === 'assistant') {
      callOrder = new Map()
      const parts: JsonObject[] = []
      // A call of the current turn without a signature gets the placeholder (only the first call of a step is signed).
      let signed = i < current
      for (const part of turn.parts) {
        if (part.type === 'tool_call') {
          callNames.set(part.id, part.name)
          if (!callOrder.has(part.id)) callOrder.set(part.id, callOrder.size)
          const rendered: JsonObject = { functionCall: { name: part.name, args: part.input } }
          if (part.signature !== undefined) rendered.thoughtSignature = part.signature
          else if (!signed) rendered.thoughtSignature = SKIP_SIGNATURE
          signed = true
          parts.push(rendered)
        } else if (part.type === 'reasoning') {
          // Gemini needs no earlier thoughts, only their signatures.
          if (part.signature !== undefined && part.signature !== '')
            parts.push({ text: part.text, thought: true, thoughtSignature: part.signature })
        } else if (part.type !== 'redacted_reasoning' && part.type !== 'tool_result') {
          const rendered = dataPartOut(part)
          if (rendered !== undefined) parts.push(rendered)
        }
      }
      pushContent(contents, 'model', parts, false)
      continue
    }
    const responses: JsonObject[] = []
    const rest: JsonObject[] = []
    const results = turn.parts.filter((p) => p.type === 'tool_result')
    // Gemini pairs responses with calls by position: answer in the order of the calls.
    results.sort((a, b) => (callOrder.get(a.callId) ?? -1) - (callOrder.get(b.callId) ?? -1))
    for (const result of results) {
      const name = callNames.get(result.callId)
      if (name === undefined) throw new ConversionError(result.path, `No earlier tool call has the id ${described(result.callId)}.`)
      let text = ''
      for (const item of result.content) {
        if (item.type === 'text') text = text === '' ? item.text : `${text}\n${item.text}`
        else {
          // Images and files of a tool result follow in a user content of their own.
          const rendered = dataPartOut(item)
          if (rendered !== undefined) rest.push(rendered)
        }
      }
      responses.push({ functionResponse: { name, response: result.isError ? { error: text } : { output: text } } })
    }
    for (const part of turn.parts) {
      if (part.type === 'tool_result' || part.type === 'tool_call' || part.type === 'reasoning' || part.type === 'redacted_reasoning')
        continue
      const rendered = dataPartOut(part)
      if (rendered !== undefined) rest.push(rendered)
    }
    pushContent(contents, 'user', responses, true)
    pushContent(contents, 'user', rest, false)
  }

  const out: JsonObject = { contents: contents.map(({ role, parts }) => ({ role, parts })) }
  const systemParts = system.filter((s) => s !== '').map((text) => ({ text }))
  if (systemParts.length > 0) out.systemInstruction = { parts: systemParts }
  const allowed = req.toolChoice?.allowed
  const required = req.toolChoice?.mode === 'required'
  // allowedFunctionNames only goes with mode ANY: an 'auto' subset is a shorter tool list.
  const tools = allowed === undefined || required ? req.tools : req.tools.filter((t) => allowed.includes(t.name))
  if (tools.length > 0) {
    out.tools = [
      {
        functionDeclarations: tools.map((t) => {
          const decl: JsonObject = { name: t.name }
          if (t.description !== undefined) decl.description = t.description
          const schema = toGeminiJsonSchema(t.parameters, `tools (${described(t.name)}): its parameters`, inlineBudget)
          decl.parametersJsonSchema = schema.type === undefined && schema.$ref === undefined ? { type: 'object', ...schema } : schema
          return decl
        }),
      },
    ]
    const choice = req.toolChoice
    if (choice !== undefined) {
      const config: JsonObject = { mode: choice.mode === 'none' ? 'NONE' : choice.mode === 'auto' ? 'AUTO' : 'ANY' }
      if (choice.mode === 'tool' && choice.name !== undefined) config.allowedFunctionNames = [choice.name]
      else if (required && allowed !== undefined) config.allowedFunctionNames = allowed
      out.toolConfig = { functionCallingConfig: config }
    }
  }
  const generation = generationConfig(req, inlineBudget)
  if (Object.keys(generation).length > 0) out.generationConfig = generation
  return out
}

function pushContent(contents: GeminiContent[], role: GeminiContent['role'], parts: JsonObject[], responses: boolean): void {
  if (parts.length === 0) return
  const last = contents.at(-1)
  if (last !== undefined && last.role === role && last.responses === responses && !responses) last.parts.push(...parts)
  else contents.push({ role, parts, responses })
}

function dataPartOut(part: Part): JsonObject | undefined {
  switch (part.type) {
    case 'text':
      // Gemini rejects empty text parts.
      return part.text === '' ? undefined : { text: part.text }
    case 'image':
      return mediaOut(part.source, part.path)
    case 'document': {
      const source = part.source
      if (source.kind === 'text') return { text: part.title === undefined ? source.text : `${part.title}\n\n${source.text}` }
      return mediaOut(source.kind === 'url' ? { ...source, mediaType: source.mediaType ?? 'application/pdf' } : source, part.path)
    }
    case 'audio':
      return { inlineData: { mimeType: part.mediaType, data: part.data } }
    default:
      return undefined
  }
}

function mediaOut(source: MediaSource, path: string): JsonObject {
  if (source.kind === 'base64') return { inlineData: { mimeType: source.mediaType, data: source.data } }
  if (!source.url.startsWith('https://')) {
    throw new ConversionError(path, 'Gemini fetches only public https URLs: send this file inline (a data: URL or base64).')
  }
  const mediaType = source.mediaType ?? mediaTypeFromUrl(source.url)
  if (mediaType === undefined) {
    throw new ConversionError(path, "Gemini needs the file's media type and this URL does not show it: send the file inline (a data: URL).")
  }
  return { fileData: { mimeType: mediaType, fileUri: source.url } }
}

function generationConfig(req: ChatRequest, inlineBudget: InlineBudget): JsonObject {
  const config: JsonObject = {}
  if (req.maxTokens !== undefined) config.maxOutputTokens = req.maxTokens
  if (req.temperature !== undefined) config.temperature = req.temperature
  if (req.topP !== undefined) config.topP = req.topP
  if (req.topK !== undefined) config.topK = req.topK
  if (req.stop !== undefined) config.stopSequences = req.stop.sequences
  if (req.seed !== undefined) config.seed = req.seed
  if (req.presencePenalty !== undefined) config.presencePenalty = req.presencePenalty
  if (req.frequencyPenalty !== undefined) config.frequencyPenalty = req.frequencyPenalty
  const format = req.responseFormat
  if (format !== undefined) {
    config.responseMimeType = 'application/json'
    if (format.type === 'json_schema')
      config.responseJsonSchema = toGeminiJsonSchema(format.schema, 'the response format: its schema', inlineBudget)
  }
  const reasoning = req.reasoning
  if (reasoning?.enabled === true) {
    // A budget, not a thinkingLevel: Gemini 2.5 rejects levels, Gemini 3 still takes budgets. -1 lets the model decide.
    const budget = reasoning.budget ?? (reasoning.effort === undefined ? -1 : budgetForEffort(reasoning.effort))
    config.thinkingConfig = { thinkingBudget: Math.min(budget, MAX_THINKING_BUDGET), includeThoughts: reasoning.show ?? true }
  }
  return config
}
