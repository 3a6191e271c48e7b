/** OpenAI Chat Completions requests ⇄ the neutral request (vLLM and TGI speak this format too). */
import {
  type AudioPart,
  arrayAt,
  blocksAt,
  type ChatRequest,
  dataUrl,
  described,
  effortForBudget,
  emptyRequest,
  isEffort,
  isObject,
  type JsonObject,
  joinText,
  mediaTypeFromUrl,
  objectAt,
  optionalArray,
  optionalNumber,
  optionalString,
  type Part,
  parseDataUrl,
  pushParts,
  type ResponseFormat,
  type ResultPart,
  sourceFromUrl,
  stringAt,
  type ToolChoice,
} from './request-ir.js'
import { ConversionError, InvalidFieldError, type RequestConversion, splitToolCallId } from './types.js'

/** Fields whose meaning no other format can carry: refused when set to anything but their default. */
function refuseUnportable(body: JsonObject): void {
  if (typeof body.n === 'number' && body.n > 1) {
    throw new ConversionError('n', 'n > 1 cannot be served by this upstream: the gateway converts one choice. Send one request per choice.')
  }
  if (body.logprobs === true) throw new ConversionError('logprobs', 'logprobs are not available from this upstream.')
  if (typeof body.top_logprobs === 'number' && body.top_logprobs > 0) {
    throw new ConversionError('top_logprobs', 'logprobs are not available from this upstream.')
  }
  if (isObject(body.logit_bias) && Object.keys(body.logit_bias).length > 0) {
    throw new ConversionError('logit_bias', 'logit_bias has no equivalent on this upstream.')
  }
  if (body.functions !== undefined) throw new ConversionError('functions', 'The deprecated functions field is not converted: use tools.')
  if (body.function_call !== undefined) {
    throw new ConversionError('function_call', 'The deprecated function_call field is not converted: use tool_choice.')
  }
  if (body.audio !== undefined && body.audio !== null)
    throw new ConversionError('audio', 'Audio output is not available from this upstream.')
  if (Array.isArray(body.modalities) && body.modalities.some((m) => m !== 'text')) {
    throw new ConversionError('modalities', 'Only text output is available from this upstream.')
  }
  if (body.web_search_options !== undefined) {
    throw new ConversionError('web_search_options', 'Built-in web search is not available on this upstream.')
  }
  if (body.moderation !== undefined && body.moderation !== null) {
    throw new ConversionError('moderation', 'OpenAI moderation is not available on this upstream.')
  }
}

export function parseOpenAI(body: JsonObject): ChatRequest {
  refuseUnportable(body)
  const req = emptyRequest()
  const messages = arrayAt(body.messages, 'messages')
  for (let i = 0; i < messages.length; i++) parseMessage(req, objectAt(messages[i], `messages[${i}]`), `messages[${i}]`)

  req.maxTokens = optionalNumber(body.max_completion_tokens, 'max_completion_tokens') ?? optionalNumber(body.max_tokens, 'max_tokens')
  req.temperature = optionalNumber(body.temperature, 'temperature')
  req.topP = optionalNumber(body.top_p, 'top_p')
  req.topK = optionalNumber(body.top_k, 'top_k')
  req.seed = optionalNumber(body.seed, 'seed')
  req.presencePenalty = optionalNumber(body.presence_penalty, 'presence_penalty')
  req.frequencyPenalty = optionalNumber(body.frequency_penalty, 'frequency_penalty')
  const stops = typeof body.stop === 'string' ? [body.stop] : optionalArray(body.stop, 'stop')
  if (stops !== undefined) req.stop = { sequences: stops.map((s, i) => stringAt(s, `stop[${i}]`)), path: 'stop' }
  const tools = optionalArray(body.tools, 'tools')
  if (tools !== undefined) {
    req.tools = tools.map((tool, i) => {
      const path = `tools[${i}]`
      const t = objectAt(tool, path)
      if (t.type !== 'function') throw new ConversionError(path, `Tools of type ${described(t.type)} have no equivalent on this upstream.`)
      const fn = objectAt(t.function, `${path}.function`)
      return {
        name: stringAt(fn.name, `${path}.function.name`),
        description: optionalString(fn.description, `${path}.function.description`),
        parameters:
          fn.parameters === undefined ? { type: 'object', properties: {} } : objectAt(fn.parameters, `${path}.function.parameters`),
        strict: fn.strict === true ? true : undefined,
      }
    })
  }
  req.toolChoice = parseToolChoice(body.tool_choice)
  if (typeof body.parallel_tool_calls === 'boolean') req.parallelToolCalls = body.parallel_tool_calls
  else if (body.parallel_tool_calls !== undefined && body.parallel_tool_calls !== null) {
    throw new InvalidFieldError('parallel_tool_calls', 'parallel_tool_calls must be a boolean.')
  }
  req.responseFormat = parseResponseFormat(body.response_format)
  if (body.reasoning_effort === 'none') req.reasoning = { enabled: false }
  else if (isEffort(body.reasoning_effort)) req.reasoning = { enabled: true, effort: body.reasoning_effort }
  else if (body.reasoning_effort !== undefined && body.reasoning_effort !== null) {
    throw new ConversionError('reasoning_effort', `Unknown reasoning_effort ${described(body.reasoning_effort)}.`)
  }
  req.user = optionalString(body.user, 'user') ?? optionalString(body.safety_identifier, 'safety_identifier')
  return req
}

function parseMessage(req: ChatRequest, msg: JsonObject, path: string): void {
  switch (msg.role) {
    case 'system':
    case 'developer': {
      // Each text part is a block of its own (joined by a blank line, or one Gemini part each), never glued together.
      const texts = textParts(msg.content, `${path}.content`)
      if (req.turns.length === 0) req.system.push(...texts)
      else
        pushParts(
          req.turns,
          'system',
          texts.map((text) => ({ type: 'text', text })),
        )
      return
    }
    case 'user':
      pushParts(req.turns, 'user', userContent(msg.content, `${path}.content`))
      return
    case 'assistant':
      pushParts(req.turns, 'assistant', assistantParts(msg, path))
      return
    case 'tool': {
      const id = stringAt(msg.tool_call_id, `${path}.tool_call_id`)
      const content = resultContent(userContent(msg.content, `${path}.content`))
      pushParts(req.turns, 'user', [{ type: 'tool_result', callId: splitToolCallId(id).id, content, isError: false, path }])
      return
    }
    case 'function':
      throw new ConversionError(`${path}.role`, 'The deprecated function role is not converted: use tool messages.')
    default:
      throw new ConversionError(`${path}.role`, `Unknown message role ${described(msg.role)}.`)
  }
}

/** Tool results carry text, images and documents. */
function resultContent(parts: (ResultPart | AudioPart)[]): ResultPart[] {
  return parts.map((part) => {
    if (part.type === 'audio') throw new ConversionError(part.path, 'Tool results carry only text, images and files.')
    return part
  })
}

function textParts(content: unknown, path: string): string[] {
  if (typeof content === 'string') return [content]
  const parts = blocksAt(content, path)
  const texts: string[] = []
  for (let i = 0; i < parts.length; i++) {
    const part = objectAt(parts[i], `${path}[${i}]`)
    if (part.type !== 'text') throw new ConversionError(`${path}[${i}]`, 'Only text parts are allowed here.')
    texts.push(stringAt(part.text, `${path}[${i}].text`))
  }
  return texts
}

function userContent(content: unknown, path: string): (ResultPart | AudioPart)[] {
  if (typeof content === 'string') return content === '' ? [] : [{ type: 'text', text: content }]
  const parts = blocksAt(content, path)
  const out: (ResultPart | AudioPart)[] = []
  for (let i = 0; i < parts.length; i++) {
    const partPath = `${path}[${i}]`
    const part = objectAt(parts[i], partPath)
    switch (part.type) {
      case 'text':
        out.push({ type: 'text', text: stringAt(part.text, `${partPath}.text`) })
        break
      case 'image_url': {
        const image = objectAt(part.image_url, `${partPath}.image_url`)
        out.push({ type: 'image', source: sourceFromUrl(stringAt(image.url, `${partPath}.image_url.url`)), path: `${partPath}.image_url` })
        break
      }
      case 'input_audio': {
        const audio = objectAt(part.input_audio, `${partPath}.input_audio`)
        const format = stringAt(audio.format, `${partPath}.input_audio.format`)
        const data = stringAt(audio.data, `${partPath}.input_audio.data`)
        out.push({ type: 'audio', mediaType: format === 'mp3' ? 'audio/mpeg' : `audio/${format}`, data, path: `${partPath}.input_audio` })
        break
      }
      case 'file':
        out.push(filePart(objectAt(part.file, `${partPath}.file`), `${partPath}.file`))
        break
      default:
        throw new ConversionError(partPath, `Content parts of type ${described(part.type)} are not converted.`)
    }
  }
  return out
}

function filePart(file: JsonObject, path: string): ResultPart {
  if (file.file_id !== undefined)
    throw new ConversionError(`${path}.file_id`, 'OpenAI file ids cannot be read by this upstream: send file_data.')
  const raw = stringAt(file.file_data, `${path}.file_data`)
  const filename = optionalString(file.filename, `${path}.filename`)
  // file_data is a data: URL, or bare base64 whose type the filename tells.
  const inline = parseDataUrl(raw) ?? { mediaType: mediaTypeFromUrl(filename ?? '') ?? 'application/pdf', data: raw }
  if (inline.mediaType.startsWith('image/')) return { type: 'image', source: { kind: 'base64', ...inline }, path }
  if (inline.mediaType.startsWith('text/')) {
    return { type: 'document', source: { kind: 'text', text: Buffer.from(inline.data, 'base64').toString('utf8') }, title: filename, path }
  }
  return { type: 'document', source: { kind: 'base64', ...inline }, title: filename, path }
}

function assistantParts(msg: JsonObject, path: string): Part[] {
  const parts: Part[] = []
  // vLLM and DeepSeek send reasoning_content; vLLM's newer responses and OpenRouter say reasoning.
  const reasoning =
    optionalString(msg.reasoning_content, `${path}.reasoning_content`) ?? (typeof msg.reasoning === 'string' ? msg.reasoning : undefined)
  if (reasoning !== undefined && reasoning !== '') parts.push({ type: 'reasoning', text: reasoning })
  const content = msg.content
  if (typeof content === 'string') {
    if (content !== '') parts.push({ type: 'text', text: content })
  } else if (content !== undefined && content !== null) {
    const blocks = blocksAt(content, `${path}.content`)
    for (let i = 0; i < blocks.length; i++) {
      const part = objectAt(blocks[i], `${path}.content[${i}]`)
      if (part.type === 'text') parts.push({ type: 'text', text: stringAt(part.text, `${path}.content[${i}].text`) })
      else if (part.type === 'refusal') parts.push({ type: 'text', text: stringAt(part.refusal, `${path}.content[${i}].refusal`) })
      else throw new ConversionError(`${path}.content[${i}]`, `Assistant content parts of type ${described(part.type)} are not converted.`)
    }
  }
  if (typeof msg.refusal === 'string' && msg.refusal !== '') parts.push({ type: 'text', text: msg.refusal })
  const toolCalls = optionalArray(msg.tool_calls, `${path}.tool_calls`)
  if (toolCalls !== undefined) {
    for (let i = 0; i < toolCalls.length; i++) {
      const callPath = `${path}.tool_calls[${i}]`
      const call = objectAt(toolCalls[i], callPath)
      if (call.type !== undefined && call.type !== 'function') {
        throw new ConversionError(callPath, `Tool calls of type ${described(call.type)} have no equivalent on this upstream.`)
      }
      const fn = objectAt(call.function, `${callPath}.function`)
      const { id, signature } = splitToolCallId(stringAt(call.id, `${callPath}.id`))
      const input = parseArguments(fn.arguments, `${callPath}.function.arguments`)
      parts.push({ type: 'tool_call', id, name: stringAt(fn.name, `${callPath}.function.name`), input, signature })
    }
  }
  return parts
}

/** The arguments JSON string → the object Anthropic and Gemini need ('' means no arguments). */
function parseArguments(value: unknown, path: string): JsonObject {
  const text = stringAt(value, path)
  if (text.trim() === '') return {}
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    throw new ConversionError(path, `${path} is not valid JSON; this upstream needs the arguments as a JSON object.`)
  }
  if (!isObject(parsed)) throw new ConversionError(path, `${path} must be a JSON object for this upstream.`)
  return parsed
}

function parseToolChoice(value: unknown): ToolChoice | undefined {
  if (value === undefined || value === null) return undefined
  if (value === 'auto' || value === 'none' || value === 'required') return { mode: value }
  const choice = objectAt(value, 'tool_choice')
  if (choice.type === 'function') {
    return { mode: 'tool', name: stringAt(objectAt(choice.function, 'tool_choice.function').name, 'tool_choice.function.name') }
  }
  if (choice.type === 'allowed_tools') {
    const allowed = objectAt(choice.allowed_tools, 'tool_choice.allowed_tools')
    const names = arrayAt(allowed.tools, 'tool_choice.allowed_tools.tools').map((tool, i) => {
      const path = `tool_choice.allowed_tools.tools[${i}]`
      return stringAt(objectAt(objectAt(tool, path).function, `${path}.function`).name, `${path}.function.name`)
    })
    return { mode: allowed.mode === 'required' ? 'required' : 'auto', allowed: names }
  }
  throw new ConversionError('tool_choice', `tool_choice of type ${described(choice.type)} has no equivalent on this upstream.`)
}

function parseResponseFormat(value: unknown): ResponseFormat | undefined {
  if (value === undefined || value === null) return undefined
  const format = objectAt(value, 'response_format')
  if (format.type === 'text') return undefined
  if (format.type === 'json_object') return { type: 'json', path: 'response_format' }
  if (format.type === 'json_schema') {
    const spec = objectAt(format.json_schema, 'response_format.json_schema')
    return {
      type: 'json_schema',
      schema: spec.schema === undefined ? {} : objectAt(spec.schema, 'response_format.json_schema.schema'),
      name: optionalString(spec.name, 'response_format.json_schema.name'),
      description: optionalString(spec.description, 'response_format.json_schema.description'),
      strict: spec.strict === true ? true : undefined,
      path: 'response_format',
    }
  }
  throw new ConversionError('response_format', `response_format of type ${described(format.type)} has no equivalent on this upstream.`)
}

export function renderOpenAI(req: ChatRequest, opts: RequestConversion): JsonObject {
  const messages = renderMessages(req)
  const out: JsonObject = { model: opts.upstreamModel, messages }
  if (opts.continueFinalMessage === true && messages.at(-1)?.role === 'assistant') {
    out.continue_final_message = true
    out.add_generation_prompt = false
  }
  if (opts.stream) {
    out.stream = true
    // The gateway meters usage from the final usage chunk.
    out.stream_options = { include_usage: true }
  }
  if (req.maxTokens !== undefined) out.max_completion_tokens = req.maxTokens
  if (req.temperature !== undefined) out.temperature = req.temperature
  if (req.topP !== undefined) out.top_p = req.topP
  if (req.topK !== undefined) out.top_k = req.topK
  if (req.stop !== undefined) out.stop = req.stop.sequences
  if (req.seed !== undefined) out.seed = req.seed
  if (req.presencePenalty !== undefined) out.presence_penalty = req.presencePenalty
  if (req.frequencyPenalty !== undefined) out.frequency_penalty = req.frequencyPenalty
  const allowed = req.toolChoice?.allowed
  const tools = allowed === undefined ? req.tools : req.tools.filter((t) => allowed.includes(t.name))
  if (tools.length > 0) {
    out.tools = tools.map((t) => {
      const fn: JsonObject = { name: t.name }
      if (t.description !== undefined) fn.description = t.description
      fn.parameters = t.parameters
      if (t.strict === true) fn.strict = true
      return { type: 'function', function: fn }
    })
    const choice = req.toolChoice
    if (choice !== undefined) out.tool_choice = choice.mode === 'tool' ? { type: 'function', function: { name: choice.name } } : choice.mode
    if (req.parallelToolCalls !== undefined) out.parallel_tool_calls = req.parallelToolCalls
  }
  const format = req.responseFormat
  if (format?.type === 'json') out.response_format = { type: 'json_object' }
  else if (format?.type === 'json_schema') {
    const spec: JsonObject = { name: format.name ?? 'response' }
    if (format.description !== undefined) spec.description = format.description
    spec.schema = format.schema
    if (format.strict === true) spec.strict = true
    out.response_format = { type: 'json_schema', json_schema: spec }
  }
  const reasoning = req.reasoning
  if (reasoning?.enabled === true) {
    const effort = reasoning.effort ?? (reasoning.budget === undefined ? undefined : effortForBudget(reasoning.budget))
    if (effort !== undefined) out.reasoning_effort = effort
  }
  if (req.user !== undefined) out.user = req.user
  return out
}

function renderMessages(req: ChatRequest): JsonObject[] {
  const messages: JsonObject[] = []
  // System messages after the first turn (Claude Code sends one) join the leading one, as for Anthropic and Gemini: the
  // chat templates of many open models (Qwen3.5, MiniMax) refuse a system message anywhere but first.
  const system = [...req.system]
  for (const turn of req.turns) if (turn.role === 'system') system.push(joinText(turn.parts, '\n\n'))
  if (system.length > 0) messages.push({ role: 'system', content: system.join('\n\n') })
  for (const turn of req.turns) {
    if (turn.role === 'assistant') messages.push(assistantMessage(turn.parts))
    else if (turn.role !== 'system') userMessages(turn.parts, messages)
  }
  return messages
}

function assistantMessage(parts: Part[]): JsonObject {
  let text = ''
  let reasoning = ''
  const toolCalls: JsonObject[] = []
  for (const part of parts) {
    if (part.type === 'text') text += part.text
    else if (part.type === 'reasoning') reasoning += part.text
    else if (part.type === 'tool_call') {
      toolCalls.push({ id: part.id, type: 'function', function: { name: part.name, arguments: JSON.stringify(part.input) } })
    } else if (part.type === 'image' || part.type === 'document' || part.type === 'audio') {
      throw new ConversionError(part.path, 'OpenAI assistant messages carry only text and tool calls.')
    }
    // redacted_reasoning is opaque to every upstream but Anthropic: dropped.
  }
  const message: JsonObject = { role: 'assistant', content: text === '' && toolCalls.length > 0 ? null : text }
  if (reasoning !== '') message.reasoning_content = reasoning
  if (toolCalls.length > 0) message.tool_calls = toolCalls
  return message
}

/** A user turn: its tool results first, as tool messages (they must follow the assistant's tool calls), then the rest. */
function userMessages(parts: Part[], messages: JsonObject[]): void {
  const rest: Part[] = []
  for (const part of parts) {
    if (part.type !== 'tool_result') {
      rest.push(part)
      continue
    }
    let text = ''
    for (const item of part.content) {
      if (item.type === 'text') text = text === '' ? item.text : `${text}\n${item.text}`
      // Tool messages take only text: images and files go to the user message that follows.
      else rest.push(item)
    }
    messages.push({ role: 'tool', tool_call_id: part.callId, content: part.isError ? `Error: ${text}` : text })
  }
  if (rest.length === 0) return
  if (rest.length === 1 && rest[0]?.type === 'text') {
    messages.push({ role: 'user', content: rest[0].text })
    return
  }
  const content: JsonObject[] = []
  for (const part of rest) {
    const rendered = userPart(part)
    if (rendered !== undefined) content.push(rendered)
  }
  if (content.length > 0) messages.push({ role: 'user', content })
}

function userPart(part: Part): JsonObject | undefined {
  switch (part.type) {
    case 'text':
      return { type: 'text', text: part.text }
    case 'image': {
      const source = part.source
      return { type: 'image_url', image_url: { url: source.kind === 'base64' ? dataUrl(source.mediaType, source.data) : source.url } }
    }
    case 'document': {
      const source = part.source
      if (source.kind === 'text') return { type: 'text', text: part.title === undefined ? source.text : `${part.title}\n\n${source.text}` }
      if (source.kind === 'url') throw new ConversionError(part.path, 'OpenAI-compatible upstreams take documents inline only, not by URL.')
      if (source.mediaType !== 'application/pdf') {
        throw new ConversionError(part.path, `OpenAI-compatible upstreams take PDF documents, not ${described(source.mediaType)}.`)
      }
      return { type: 'file', file: { file_data: dataUrl(source.mediaType, source.data), filename: part.title ?? 'document.pdf' } }
    }
    case 'audio': {
      const format = AUDIO_FORMATS[part.mediaType]
      if (format === undefined)
        throw new ConversionError(part.path, `OpenAI-compatible upstreams take wav or mp3 audio, not ${described(part.mediaType)}.`)
      return { type: 'input_audio', input_audio: { data: part.data, format } }
    }
    default:
      // Reasoning and tool calls never stand in a user turn.
      return undefined
  }
}

const AUDIO_FORMATS: Record<string, string> = {
  'audio/wav': 'wav',
  'audio/x-wav': 'wav',
  'audio/wave': 'wav',
  'audio/mpeg': 'mp3',
  'audio/mp3': 'mp3',
}
