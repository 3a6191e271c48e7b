/** Anthropic Messages requests ⇄ the neutral request. */
import { coded } from '@llmproxy/core'
import {
  arrayAt,
  blocksAt,
  type ChatRequest,
  described,
  type Effort,
  effortForBudget,
  emptyRequest,
  isEffort,
  isObject,
  type JsonObject,
  joinText,
  objectAt,
  optionalNumber,
  optionalString,
  type Part,
  pushParts,
  type Reasoning,
  type ResponseFormat,
  type ResultPart,
  stringAt,
  type ToolChoice,
} from './request-ir.js'
import { ConversionError, type RequestConversion, splitToolCallId } from './types.js'

export function parseAnthropic(body: JsonObject): ChatRequest {
  // Message threads (@anthropic-ai/sdk's beta.messages.thread() and toolRunner()): a turn that continues one sends only
  // its new messages, without `system` and `tools`, and no upstream of another API holds the rest. Anthropic's own
  // thread_not_found has the SDK send the whole conversation again, under a new thread whose `create` is dropped here.
  if (body.thread !== undefined && body.thread !== null && !(isObject(body.thread) && body.thread.type === 'create')) {
    throw coded(
      'llmproxy_thread_not_kept',
      'No such message thread: the gateway keeps no message threads for this model (it is served over another API); send the whole conversation without `thread`.',
    )
  }
  if (Array.isArray(body.mcp_servers) && body.mcp_servers.length > 0) {
    throw new ConversionError('mcp_servers', 'Remote MCP servers are run by Anthropic only; this upstream cannot call them.')
  }
  const req = emptyRequest()
  if (typeof body.system === 'string') {
    if (body.system !== '') req.system.push(body.system)
  } else if (body.system !== undefined) {
    const blocks = blocksAt(body.system, 'system')
    for (let i = 0; i < blocks.length; i++) req.system.push(textBlock(blocks[i], `system[${i}]`))
  }
  const messages = arrayAt(body.messages, 'messages')
  for (let i = 0; i < messages.length; i++) {
    const path = `messages[${i}]`
    const msg = objectAt(messages[i], path)
    const role = msg.role
    if (role !== 'user' && role !== 'assistant' && role !== 'system') {
      throw new ConversionError(`${path}.role`, `Unknown message role ${described(role)}.`)
    }
    const parts = contentParts(msg.content, `${path}.content`)
    if (role === 'system' && req.turns.length === 0) req.system.push(joinText(parts, '\n\n'))
    else pushParts(req.turns, role, parts)
  }

  req.maxTokens = optionalNumber(body.max_tokens, 'max_tokens')
  req.temperature = optionalNumber(body.temperature, 'temperature')
  req.topP = optionalNumber(body.top_p, 'top_p')
  req.topK = optionalNumber(body.top_k, 'top_k')
  if (body.stop_sequences !== undefined) {
    req.stop = {
      sequences: arrayAt(body.stop_sequences, 'stop_sequences').map((s, i) => stringAt(s, `stop_sequences[${i}]`)),
      path: 'stop_sequences',
    }
  }
  if (body.tools !== undefined) {
    const tools = arrayAt(body.tools, 'tools')
    for (let i = 0; i < tools.length; i++) {
      const path = `tools[${i}]`
      const t = objectAt(tools[i], path)
      if (typeof t.type === 'string' && t.type.startsWith('tool_search_tool_')) {
        // Tool search only defers loading: without it the deferred tools are ordinary tools.
        continue
      }
      if (t.type !== undefined && t.type !== null && t.type !== 'custom') {
        throw new ConversionError(
          path,
          `Anthropic's ${described(t.type)} tool is built into Anthropic's API (its schema, or the tool itself, is Anthropic's); this upstream has no equivalent.`,
        )
      }
      req.tools.push({
        name: stringAt(t.name, `${path}.name`),
        description: optionalString(t.description, `${path}.description`),
        parameters: objectAt(t.input_schema, `${path}.input_schema`),
        strict: t.strict === true ? true : undefined,
      })
    }
  }
  parseToolChoice(req, body.tool_choice)
  const outputConfig = body.output_config === undefined || body.output_config === null ? {} : objectAt(body.output_config, 'output_config')
  req.reasoning = parseThinking(body.thinking, outputConfig.effort)
  req.responseFormat = parseFormat(outputConfig.format, 'output_config.format') ?? parseFormat(body.output_format, 'output_format')
  if (body.metadata !== undefined && body.metadata !== null) {
    req.user = optionalString(objectAt(body.metadata, 'metadata').user_id, 'metadata.user_id')
  }
  return req
}

function textBlock(value: unknown, path: string): string {
  const block = objectAt(value, path)
  if (block.type !== 'text') throw new ConversionError(path, 'Only text blocks are allowed here.')
  return stringAt(block.text, `${path}.text`)
}

function contentParts(content: unknown, path: string): Part[] {
  if (typeof content === 'string') return content === '' ? [] : [{ type: 'text', text: content }]
  const blocks = blocksAt(content, path)
  const parts: Part[] = []
  for (let i = 0; i < blocks.length; i++) {
    const blockPath = `${path}[${i}]`
    const block = objectAt(blocks[i], blockPath)
    switch (block.type) {
      case 'thinking':
        parts.push({
          type: 'reasoning',
          text: stringAt(block.thinking, `${blockPath}.thinking`),
          signature: optionalString(block.signature, `${blockPath}.signature`),
        })
        break
      case 'redacted_thinking':
        parts.push({ type: 'redacted_reasoning', data: stringAt(block.data, `${blockPath}.data`) })
        break
      case 'tool_use': {
        const { id, signature } = splitToolCallId(stringAt(block.id, `${blockPath}.id`))
        const input = block.input === undefined ? {} : objectAt(block.input, `${blockPath}.input`)
        parts.push({ type: 'tool_call', id, name: stringAt(block.name, `${blockPath}.name`), input, signature })
        break
      }
      case 'tool_result': {
        const callId = splitToolCallId(stringAt(block.tool_use_id, `${blockPath}.tool_use_id`)).id
        const content = resultContent(block.content, `${blockPath}.content`)
        parts.push({ type: 'tool_result', callId, content, isError: block.is_error === true, path: blockPath })
        break
      }
      default:
        parts.push(...mediaParts(block, blockPath))
    }
  }
  return parts
}

/** Text, image and document blocks: what user content and tool results share. */
function mediaParts(block: JsonObject, path: string): ResultPart[] {
  switch (block.type) {
    case 'text':
      return [{ type: 'text', text: stringAt(block.text, `${path}.text`) }]
    case 'image': {
      const source = objectAt(block.source, `${path}.source`)
      if (source.type === 'base64') {
        const mediaType = stringAt(source.media_type, `${path}.source.media_type`)
        return [{ type: 'image', source: { kind: 'base64', mediaType, data: stringAt(source.data, `${path}.source.data`) }, path }]
      }
      if (source.type === 'url') return [{ type: 'image', source: { kind: 'url', url: stringAt(source.url, `${path}.source.url`) }, path }]
      throw new ConversionError(`${path}.source`, `Image sources of type ${described(source.type)} cannot be read by this upstream.`)
    }
    case 'document':
      return documentParts(block, path)
    default:
      throw new ConversionError(path, `Content blocks of type ${described(block.type)} have no equivalent on this upstream.`)
  }
}

function documentParts(block: JsonObject, path: string): ResultPart[] {
  const source = objectAt(block.source, `${path}.source`)
  const title = optionalString(block.title, `${path}.title`)
  switch (source.type) {
    case 'base64': {
      const mediaType = stringAt(source.media_type, `${path}.source.media_type`)
      return [{ type: 'document', source: { kind: 'base64', mediaType, data: stringAt(source.data, `${path}.source.data`) }, title, path }]
    }
    case 'url':
      return [
        {
          type: 'document',
          source: { kind: 'url', url: stringAt(source.url, `${path}.source.url`), mediaType: 'application/pdf' },
          title,
          path,
        },
      ]
    case 'text':
      return [{ type: 'document', source: { kind: 'text', text: stringAt(source.data, `${path}.source.data`) }, title, path }]
    case 'content': {
      // A document made of blocks: its text and images stand for it.
      if (typeof source.content === 'string') return [{ type: 'document', source: { kind: 'text', text: source.content }, title, path }]
      const blocks = blocksAt(source.content, `${path}.source.content`)
      const parts = blocks.flatMap((b, i) => mediaParts(objectAt(b, `${path}.source.content[${i}]`), `${path}.source.content[${i}]`))
      // Its title goes first, as a text document's does.
      return title === undefined ? parts : [{ type: 'text', text: title }, ...parts]
    }
    default:
      throw new ConversionError(`${path}.source`, `Document sources of type ${described(source.type)} cannot be read by this upstream.`)
  }
}

function resultContent(content: unknown, path: string): ResultPart[] {
  if (content === undefined || content === null) return []
  if (typeof content === 'string') return content === '' ? [] : [{ type: 'text', text: content }]
  const blocks = blocksAt(content, path)
  return blocks.flatMap((b, i) => mediaParts(objectAt(b, `${path}[${i}]`), `${path}[${i}]`))
}

function parseToolChoice(req: ChatRequest, value: unknown): void {
  if (value === undefined || value === null) return
  const choice = objectAt(value, 'tool_choice')
  if (choice.disable_parallel_tool_use === true) req.parallelToolCalls = false
  switch (choice.type) {
    case 'auto':
    case 'none':
      req.toolChoice = { mode: choice.type }
      return
    case 'any':
      req.toolChoice = { mode: 'required' }
      return
    case 'tool':
      req.toolChoice = { mode: 'tool', name: stringAt(choice.name, 'tool_choice.name') }
      return
    default:
      throw new ConversionError('tool_choice', `Unknown tool_choice type ${described(choice.type)}.`)
  }
}

function parseThinking(value: unknown, effort: unknown): Reasoning | undefined {
  const level = isEffort(effort) ? effort : undefined
  if (value === undefined || value === null) return level === undefined ? undefined : { enabled: true, effort: level }
  const thinking = objectAt(value, 'thinking')
  const show = thinking.display === 'omitted' ? false : thinking.display === 'summarized' ? true : undefined
  switch (thinking.type) {
    case 'disabled':
      return { enabled: false }
    case 'enabled':
      return { enabled: true, budget: optionalNumber(thinking.budget_tokens, 'thinking.budget_tokens'), effort: level, show }
    case 'adaptive':
    case 'between_tools':
      return { enabled: true, effort: level, show }
    default:
      throw new ConversionError('thinking.type', `Unknown thinking type ${described(thinking.type)}.`)
  }
}

function parseFormat(value: unknown, path: string): ResponseFormat | undefined {
  if (value === undefined || value === null) return undefined
  const format = objectAt(value, path)
  if (format.type !== 'json_schema') throw new ConversionError(`${path}.type`, `Unknown output format type ${described(format.type)}.`)
  return { type: 'json_schema', schema: objectAt(format.schema, `${path}.schema`), path }
}

type Block = JsonObject
type Message = { role: 'user' | 'assistant'; content: Block[] }

const IMAGE_TYPES: ReadonlySet<string> = new Set(['image/jpeg', 'image/png', 'image/gif', 'image/webp'])

/** Anthropic's output_config.effort levels (no 'minimal'). */
function anthropicEffort(effort: Effort): string {
  return effort === 'minimal' ? 'low' : effort
}

export function renderAnthropic(req: ChatRequest, opts: RequestConversion): JsonObject {
  const system = [...req.system]
  const built: Message[] = []
  for (const turn of req.turns) {
    // System messages after the first turn join the system prompt: Anthropic takes them in place only on some models.
    if (turn.role === 'system') system.push(joinText(turn.parts, '\n\n'))
    else if (turn.role === 'assistant') pushMessage(built, 'assistant', assistantBlocks(turn.parts))
    else pushMessage(built, 'user', userBlocks(turn.parts))
  }
  // In a user message the tool results come first (Anthropic rejects text before them).
  for (const message of built) {
    if (message.role === 'user') message.content.sort((a, b) => resultRank(a) - resultRank(b))
  }
  const messages = withoutTrailingWhitespace(built)

  const out: JsonObject = { model: opts.upstreamModel, max_tokens: req.maxTokens ?? opts.defaultMaxTokens, messages, stream: opts.stream }
  const systemText = system.filter((s) => s !== '').join('\n\n')
  if (systemText !== '') out.system = systemText
  if (req.stop !== undefined) {
    if (req.stop.sequences.some((s) => s.trim() === '')) {
      throw new ConversionError(req.stop.path, 'Anthropic stop sequences must contain a non-whitespace character.')
    }
    out.stop_sequences = req.stop.sequences
  }
  // temperature, top_p and top_k are not sent: current Claude models and API version 2026-10-21 reject them (400), even
  // at their defaults. Seed and the penalties have no Anthropic equivalent.
  const allowed = req.toolChoice?.allowed
  const tools = allowed === undefined ? req.tools : req.tools.filter((t) => allowed.includes(t.name))
  if (tools.length > 0) {
    out.tools = tools.map((t) => {
      const tool: JsonObject = { name: t.name }
      if (t.description !== undefined) tool.description = t.description
      tool.input_schema = t.parameters.type === undefined ? { type: 'object', ...t.parameters } : t.parameters
      if (t.strict === true) tool.strict = true
      return tool
    })
    const choice = renderToolChoice(req.toolChoice, req.parallelToolCalls)
    if (choice !== undefined) out.tool_choice = choice
  }
  const outputConfig: JsonObject = {}
  const reasoning = req.reasoning
  if (reasoning?.enabled === true) {
    const effort = reasoning.effort ?? (reasoning.budget === undefined ? undefined : effortForBudget(reasoning.budget))
    if (effort !== undefined) outputConfig.effort = anthropicEffort(effort)
    if (thinkingAllowed(messages, req.toolChoice)) {
      // Adaptive, not a budget: Claude 4.6+ recommends it and the newest models reject budget_tokens.
      const thinking: JsonObject = { type: 'adaptive' }
      if (reasoning.show !== undefined) thinking.display = reasoning.show ? 'summarized' : 'omitted'
      out.thinking = thinking
    }
  }
  const format = req.responseFormat
  if (format?.type === 'json') {
    throw new ConversionError(format.path, 'Anthropic has no free-form JSON mode: send a JSON schema (json_schema) instead.')
  }
  if (format?.type === 'json_schema') outputConfig.format = { type: 'json_schema', schema: format.schema }
  if (Object.keys(outputConfig).length > 0) out.output_config = outputConfig
  if (req.user !== undefined) out.metadata = { user_id: req.user }
  return out
}

/**
 * `messages` (Anthropic's, as built or as sent) with the trailing whitespace of a final assistant turn cut off: Claude
 * continues that turn (a prefill) and rejects one that ends in whitespace (400). Text left empty goes, and so does a
 * turn left empty. A copy: `messages` is not changed.
 */
export function withoutTrailingWhitespace<M>(messages: readonly M[]): M[] {
  const out = [...messages]
  const last: unknown = out.at(-1)
  if (!isObject(last) || last.role !== 'assistant') return out
  let content = last.content
  if (typeof content === 'string') content = content.trimEnd()
  else if (Array.isArray(content)) {
    const blocks = [...content]
    let block: unknown = blocks.at(-1)
    while (isObject(block) && block.type === 'text' && typeof block.text === 'string') {
      const text = block.text.trimEnd()
      if (text !== '') {
        blocks[blocks.length - 1] = { ...block, text }
        break
      }
      blocks.pop()
      block = blocks.at(-1)
    }
    content = blocks
  } else return out
  if (content === '' || (Array.isArray(content) && content.length === 0)) out.pop()
  else out[out.length - 1] = { ...last, content } as M
  return out
}

function resultRank(block: Block): number {
  return block.type === 'tool_result' ? 0 : 1
}

/** Consecutive messages of one role merge: Anthropic alternates user and assistant. Empty messages are left out. */
function pushMessage(messages: Message[], role: Message['role'], content: Block[]): void {
  if (content.length === 0) return
  const last = messages.at(-1)
  if (last?.role === role) last.content.push(...content)
  else messages.push({ role, content })
}

/**
 * Thinking cannot be on when a tool is forced, when the request ends with an assistant prefill, or when the assistant
 * turn answered by the final tool results does not start with a thinking block (Anthropic rejects each with a 400).
 * A client in another format keeps no signed thinking for the last case unless its tool-call ids carried the signature.
 */
function thinkingAllowed(messages: Message[], choice: ToolChoice | undefined): boolean {
  if (choice?.mode === 'required' || choice?.mode === 'tool') return false
  const last = messages.at(-1)
  if (last?.role === 'assistant') return false
  if (last?.content[0]?.type === 'tool_result') {
    const first = messages.at(-2)?.content[0]?.type
    return first === 'thinking' || first === 'redacted_thinking'
  }
  return true
}

function renderToolChoice(choice: ToolChoice | undefined, parallel: boolean | undefined): JsonObject | undefined {
  if (choice === undefined) return parallel === false ? { type: 'auto', disable_parallel_tool_use: true } : undefined
  if (choice.mode === 'none') return { type: 'none' }
  const out: JsonObject =
    choice.mode === 'required' ? { type: 'any' } : choice.mode === 'tool' ? { type: 'tool', name: choice.name } : { type: 'auto' }
  if (parallel === false) out.disable_parallel_tool_use = true
  return out
}

/**
 * Anthropic tool_use ids match ^[a-zA-Z0-9_-]+$; ids from other upstreams may not (mapped alike in calls and results).
 * A mapped id carries a hash of the original, so that two ids differing only in such characters stay two
 * (`functions.get:0` and `functions.get.0`).
 */
function anthropicId(id: string): string {
  if (/^[a-zA-Z0-9_-]+$/.test(id)) return id
  // FNV-1a, 32 bits: short, stable, and enough to tell a request's few ids apart.
  let hash = 0x811c9dc5
  for (let i = 0; i < id.length; i++) hash = Math.imul(hash ^ id.charCodeAt(i), 0x01000193)
  return `${id.replace(/[^a-zA-Z0-9_-]/g, '_')}_${(hash >>> 0).toString(16).padStart(8, '0')}`
}

function assistantBlocks(parts: Part[]): Block[] {
  const blocks: Block[] = []
  // A client in another format keeps Anthropic's thinking signature on its tool-call ids (see toolCallIdWithSignature).
  let carried: string | undefined
  for (const part of parts) if (part.type === 'tool_call' && carried === undefined) carried = part.signature
  // Reasoning may come in pieces (a Gemini client keeps a streamed thought as one part per chunk, the signature on the
  // last): one thinking block holds the text of the pieces up to the signature that ends them, as it was signed.
  let thinking: string | null = null
  const endThinking = (signature: string | undefined): void => {
    if (thinking === null) return
    const signed = signature !== undefined && signature !== '' ? signature : carried
    carried = undefined
    // Unsigned thinking cannot be sent; Anthropic ignores thinking from earlier turns anyway.
    if (signed !== undefined && signed !== '') blocks.push({ type: 'thinking', thinking, signature: signed })
    thinking = null
  }
  for (const part of parts) {
    if (part.type === 'reasoning') {
      thinking = (thinking ?? '') + part.text
      if (part.signature !== undefined && part.signature !== '') endThinking(part.signature)
      continue
    }
    endThinking(undefined)
    switch (part.type) {
      case 'redacted_reasoning':
        blocks.push({ type: 'redacted_thinking', data: part.data })
        break
      case 'text':
        if (part.text !== '') blocks.push({ type: 'text', text: part.text })
        break
      case 'tool_call':
        blocks.push({ type: 'tool_use', id: anthropicId(part.id), name: part.name, input: part.input })
        break
      case 'tool_result':
        throw new ConversionError(part.path, 'Tool results belong in a user turn.')
      default:
        throw new ConversionError(part.path, 'Anthropic assistant messages carry only text, thinking and tool calls.')
    }
  }
  endThinking(undefined)
  return blocks
}

function userBlocks(parts: Part[]): Block[] {
  const blocks: Block[] = []
  for (const part of parts) {
    if (part.type === 'tool_result') {
      const block: Block = { type: 'tool_result', tool_use_id: anthropicId(part.callId) }
      const content = part.content.flatMap(mediaBlock)
      if (content.length === 1 && content[0]?.type === 'text') block.content = content[0].text
      else if (content.length > 0) block.content = content
      if (part.isError) block.is_error = true
      blocks.push(block)
    } else if (part.type === 'text' || part.type === 'image' || part.type === 'document') {
      blocks.push(...mediaBlock(part))
    } else if (part.type === 'audio') {
      throw new ConversionError(part.path, 'Anthropic does not take audio input.')
    }
    // Reasoning and tool calls never stand in a user turn.
  }
  return blocks
}

function mediaBlock(part: ResultPart): Block[] {
  if (part.type === 'text') return part.text === '' ? [] : [{ type: 'text', text: part.text }]
  if (part.type === 'image') {
    const source = part.source
    if (source.kind === 'url') return [{ type: 'image', source: { type: 'url', url: source.url } }]
    if (!IMAGE_TYPES.has(source.mediaType)) {
      throw new ConversionError(part.path, `Anthropic takes JPEG, PNG, GIF and WebP images, not ${described(source.mediaType)}.`)
    }
    return [{ type: 'image', source: { type: 'base64', media_type: source.mediaType, data: source.data } }]
  }
  const source = part.source
  let block: Block
  if (source.kind === 'text') block = { type: 'document', source: { type: 'text', media_type: 'text/plain', data: source.text } }
  else if (source.mediaType !== undefined && source.mediaType !== 'application/pdf') {
    throw new ConversionError(part.path, `Anthropic takes PDF and plain-text documents, not ${described(source.mediaType)}.`)
  } else if (source.kind === 'url') block = { type: 'document', source: { type: 'url', url: source.url } }
  else block = { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: source.data } }
  if (part.title !== undefined) block.title = part.title
  return [block]
}
