/**
 * What the mock reads from a generation request besides its behavior: the checks the real servers make (so a
 * conversion bug gets the 400 a real server would give), and the trailing assistant turn (prefill).
 * Each check is listed in the README.
 */
import { expectedReasoning, type Fields, isObject, REDACTED_THINKING_DATA, redactedSignatureTokens } from './content.js'

/** Why a request is invalid: the server's message and the field at fault. */
export interface RequestProblem {
  message: string
  param: string | null
}

/** The assistant/model turn a request ends with. */
export interface TrailingTurn {
  /** Its text (text blocks/parts concatenated; '' when it has none). */
  text: string
  /** The server continues it (prefill) rather than answering afresh. */
  prefill: boolean
}

/**
 * A client's value as an error message quotes it: a string as it is, anything else as JSON. Never `String(value)`,
 * which throws on an object with a `toString` key (`{"toString":1}`) and would end the mock.
 */
function shown(value: unknown): string {
  return typeof value === 'string' ? value : String(JSON.stringify(value))
}

export type Validator = (body: Fields) => RequestProblem | null
export type TrailingReader = (body: Fields) => TrailingTurn | null

/** Anthropic's message for a model that does not support prefill (https://docs.anthropic.com/en/api/errors). */
export const PREFILL_UNSUPPORTED = 'This model does not support assistant message prefill. The conversation must end with a user message.'

/** Anthropic's message for thinking blocks of the latest assistant message not sent back as they came. */
export const THINKING_MODIFIED =
  '`thinking` or `redacted_thinking` blocks in the latest assistant message cannot be modified. These blocks must remain as they were in the original response.'

function problem(message: string, param: string | null = null): RequestProblem {
  return { message, param }
}

function lastOf(value: unknown): unknown {
  return Array.isArray(value) ? value[value.length - 1] : undefined
}

/** The text of a content that is a string or an array of blocks/parts carrying `text` (those `isText` accepts). */
function textOf(content: unknown, isText: (block: Fields) => boolean): string {
  if (typeof content === 'string') return content
  if (!Array.isArray(content)) return ''
  let text = ''
  for (const block of content) if (isObject(block) && isText(block) && typeof block.text === 'string') text += block.text
  return text
}

function isTypedText(block: Fields): boolean {
  return block.type === 'text'
}

// Anthropic Messages

const ANTHROPIC_BLOCKS: ReadonlySet<string> = new Set([
  'text',
  'image',
  'document',
  'search_result',
  'thinking',
  'redacted_thinking',
  'tool_use',
  'tool_result',
  'server_tool_use',
  'web_search_tool_result',
  'web_fetch_tool_result',
  'code_execution_tool_result',
  'bash_code_execution_tool_result',
  'text_editor_code_execution_tool_result',
  'tool_search_tool_result',
  'container_upload',
])
/** Blocks only the assistant writes. */
const ASSISTANT_BLOCKS: ReadonlySet<string> = new Set(['thinking', 'redacted_thinking', 'tool_use', 'server_tool_use'])
const IMAGE_TYPES: ReadonlySet<string> = new Set(['image/jpeg', 'image/png', 'image/gif', 'image/webp'])
const TOOL_CHOICES: ReadonlySet<string> = new Set(['auto', 'any', 'tool', 'none'])

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0
}

function imageSourceProblem(source: unknown, at: string): RequestProblem | null {
  if (!isObject(source)) return problem(`${at}.source: Field required`)
  switch (source.type) {
    case 'base64':
      if (typeof source.media_type !== 'string' || !IMAGE_TYPES.has(source.media_type)) {
        return problem(`${at}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'`)
      }
      return typeof source.data === 'string' ? null : problem(`${at}.source.base64.data: Field required`)
    case 'url':
      if (typeof source.url !== 'string') return problem(`${at}.source.url.url: Field required`)
      // Anthropic downloads the URL: a data: URL (an OpenAI habit) cannot be fetched.
      return /^https?:\/\//.test(source.url) ? null : problem('Unable to download the file. Please verify the URL and try again.')
    case 'file':
      return typeof source.file_id === 'string' ? null : problem(`${at}.source.file.file_id: Field required`)
    default:
      return problem(
        `${at}.source: Input tag '${shown(source.type)}' found using 'type' does not match any of the expected tags: 'base64', 'url', 'file'`,
      )
  }
}

/** Checks one content block; collects the ids of tool_use blocks into `toolUses` and of tool_result blocks into `results`. */
function anthropicBlockProblem(block: unknown, at: string, role: string, toolUses: string[], results: string[]): RequestProblem | null {
  if (!isObject(block) || typeof block.type !== 'string') return problem(`${at}: Unable to extract tag using discriminator 'type'`)
  const type = block.type
  if (!ANTHROPIC_BLOCKS.has(type)) {
    return problem(
      `${at}: Input tag '${type}' found using 'type' does not match any of the expected tags: ${[...ANTHROPIC_BLOCKS].map((t) => `'${t}'`).join(', ')}`,
    )
  }
  if (role === 'user' && ASSISTANT_BLOCKS.has(type)) return problem(`${at}: \`${type}\` blocks can only be in \`assistant\` messages`)
  if (role === 'assistant' && type === 'tool_result') return problem(`${at}: \`tool_result\` blocks can only be in \`user\` messages`)
  switch (type) {
    case 'text':
      if (typeof block.text !== 'string') return problem(`${at}.text.text: Field required`)
      return block.text === '' ? problem('messages: text content blocks must be non-empty') : null
    case 'image':
      return imageSourceProblem(block.source, `${at}.image`)
    case 'thinking':
      if (typeof block.thinking !== 'string') return problem(`${at}.thinking.thinking: Field required`)
      return typeof block.signature === 'string' ? null : problem(`${at}.thinking.signature: Field required`)
    case 'tool_use':
      if (typeof block.id !== 'string') return problem(`${at}.tool_use.id: Field required`)
      if (typeof block.name !== 'string') return problem(`${at}.tool_use.name: Field required`)
      if (!isObject(block.input)) return problem(`${at}.tool_use.input: Input should be a valid dictionary`)
      toolUses.push(block.id)
      return null
    case 'tool_result':
      if (typeof block.tool_use_id !== 'string') return problem(`${at}.tool_result.tool_use_id: Field required`)
      results.push(block.tool_use_id)
      return null
    default:
      return null
  }
}

function anthropicTopProblem(body: Fields): RequestProblem | null {
  const maxTokens = body.max_tokens
  if (maxTokens === undefined) return problem('max_tokens: Field required', 'max_tokens')
  if (!isCount(maxTokens)) return problem('max_tokens: Input should be a valid integer', 'max_tokens')
  const system = body.system
  if (system !== undefined && typeof system !== 'string') {
    if (!Array.isArray(system)) return problem('system: Input should be a valid string or list', 'system')
    for (let j = 0; j < system.length; j++) {
      const block: unknown = system[j]
      if (!isObject(block) || block.type !== 'text' || typeof block.text !== 'string')
        return problem(`system.${j}: Input should be a text block`, 'system')
    }
  }
  const thinking = body.thinking
  if (isObject(thinking) && thinking.type === 'enabled') {
    const budget = thinking.budget_tokens
    if (!isCount(budget) || budget < 1024) {
      return problem('thinking.enabled.budget_tokens: Input should be greater than or equal to 1024', 'thinking')
    }
    if (maxTokens <= budget) return problem('`max_tokens` must be greater than `thinking.budget_tokens`', 'max_tokens')
  }
  const tools = body.tools
  if (tools !== undefined) {
    if (!Array.isArray(tools)) return problem('tools: Input should be a valid list', 'tools')
    for (let k = 0; k < tools.length; k++) {
      const tool: unknown = tools[k]
      if (!isObject(tool)) return problem(`tools.${k}: Input should be a valid dictionary`, 'tools')
      if (tool.type !== undefined && tool.type !== 'custom') continue // a server tool (web_search_…, bash_…)
      if (typeof tool.name !== 'string') return problem(`tools.${k}.custom.name: Field required`, 'tools')
      if (!isObject(tool.input_schema)) return problem(`tools.${k}.custom.input_schema: Field required`, 'tools')
    }
  }
  const choice = body.tool_choice
  if (choice !== undefined) {
    if (!isObject(choice) || typeof choice.type !== 'string' || !TOOL_CHOICES.has(choice.type)) {
      return problem("tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'", 'tool_choice')
    }
    if (choice.type === 'tool' && typeof choice.name !== 'string') return problem('tool_choice.tool.name: Field required', 'tool_choice')
  }
  return null
}

/**
 * The thinking blocks of the latest assistant message go back as Anthropic sent them: "filtering out
 * `redacted_thinking` blocks triggers a 400 error". The mock can check its own: a thinking block whose signature says
 * a redacted_thinking block followed it (see signatureFor) keeps its text and is still followed by that block.
 */
function latestThinkingProblem(messages: unknown[]): RequestProblem | null {
  let i = messages.length - 1
  while (i >= 0 && !(isObject(messages[i]) && (messages[i] as Fields).role === 'assistant')) i--
  const content = i < 0 ? undefined : (messages[i] as Fields).content
  if (!Array.isArray(content)) return null
  for (let j = 0; j < content.length; j++) {
    const block: unknown = content[j]
    if (!isObject(block) || block.type !== 'thinking' || typeof block.signature !== 'string') continue
    const tokens = redactedSignatureTokens(block.signature)
    if (tokens === null) continue
    const next: unknown = content[j + 1]
    const intact =
      block.thinking === expectedReasoning(tokens) &&
      isObject(next) &&
      next.type === 'redacted_thinking' &&
      next.data === REDACTED_THINKING_DATA
    if (!intact) return problem(`messages.${i}.content.${j}: ${THINKING_MODIFIED}`, 'messages')
  }
  return null
}

/** POST /v1/messages, as api.anthropic.com checks it. */
export const anthropicProblem: Validator = (body) => {
  const top = anthropicTopProblem(body)
  if (top !== null) return top
  const messages = body.messages
  if (messages === undefined) return problem('messages: Field required', 'messages')
  if (!Array.isArray(messages)) return problem('messages: Input should be a valid list', 'messages')
  if (messages.length === 0) return problem('messages: at least one message is required', 'messages')
  /** The tool_use ids of the previous message when it is an assistant message. */
  let pending: string[] = []
  for (let i = 0; i < messages.length; i++) {
    const message: unknown = messages[i]
    if (!isObject(message)) return problem(`messages.${i}: Input should be a valid dictionary`, 'messages')
    const role = message.role
    if (role === 'system') {
      return problem(
        `messages.${i}: Unexpected role "system". The Messages API accepts a top-level \`system\` parameter, not "system" as an input message role.`,
        'messages',
      )
    }
    if (role !== 'user' && role !== 'assistant') return problem(`messages.${i}.role: Input should be 'user' or 'assistant'`, 'messages')
    const content = message.content
    const finalAssistant = role === 'assistant' && i === messages.length - 1
    if (typeof content !== 'string' && !Array.isArray(content))
      return problem(`messages.${i}.content: Input should be a valid list`, 'messages')
    if (content.length === 0 && !finalAssistant) {
      return problem(`messages.${i}: all messages must have non-empty content except for the optional final assistant message`, 'messages')
    }
    const toolUses: string[] = []
    const results: string[] = []
    if (Array.isArray(content)) {
      for (let j = 0; j < content.length; j++) {
        const found = anthropicBlockProblem(content[j], `messages.${i}.content.${j}`, role, toolUses, results)
        if (found !== null) return { message: found.message, param: 'messages' }
      }
    }
    for (const id of results) {
      if (!pending.includes(id)) {
        return problem(
          `messages.${i}.content: unexpected \`tool_use_id\` found in \`tool_result\` blocks: ${id}. Each \`tool_result\` block must have a corresponding \`tool_use\` block in the previous message.`,
          'messages',
        )
      }
    }
    const unanswered = pending.filter((id) => !results.includes(id))
    if (unanswered.length > 0) {
      return problem(
        `messages.${i - 1}: \`tool_use\` ids were found without \`tool_result\` blocks immediately after: ${unanswered.join(', ')}. Each \`tool_use\` block must have a corresponding \`tool_result\` block in the next message.`,
        'messages',
      )
    }
    pending = toolUses
    if (finalAssistant) {
      const last = typeof content === 'string' ? content : lastOf(content)
      const text = typeof last === 'string' ? last : isObject(last) && last.type === 'text' ? last.text : undefined
      if (typeof text === 'string' && /\s$/.test(text))
        return problem('final assistant content cannot end with trailing whitespace', 'messages')
    }
  }
  return latestThinkingProblem(messages)
}

/** A final assistant message is always a prefill on Anthropic (on models that support it). */
export const anthropicTrailing: TrailingReader = (body) => {
  const last = lastOf(body.messages)
  if (!isObject(last) || last.role !== 'assistant') return null
  return { text: textOf(last.content, isTypedText), prefill: true }
}

// OpenAI chat completions (vLLM)

const CHAT_ROLES: ReadonlySet<string> = new Set(['system', 'developer', 'user', 'assistant', 'tool', 'function'])
const CHAT_PARTS: ReadonlySet<string> = new Set(['text', 'image_url', 'input_audio', 'refusal', 'audio', 'file'])

function chatPartsProblem(content: unknown, i: number): RequestProblem | null {
  if (!Array.isArray(content)) return null
  for (let j = 0; j < content.length; j++) {
    const part: unknown = content[j]
    const at = `messages[${i}].content[${j}]`
    if (!isObject(part)) return problem(`Invalid type for '${at}': expected an object.`, at)
    if (typeof part.type !== 'string' || !CHAT_PARTS.has(part.type)) {
      return problem(
        `Invalid value: '${shown(part.type)}'. Supported values are: 'text', 'image_url', 'input_audio', 'refusal', 'audio', and 'file'.`,
        `${at}.type`,
      )
    }
    if (part.type === 'text' && typeof part.text !== 'string') return problem(`Missing required parameter: '${at}.text'.`, `${at}.text`)
    if (part.type === 'image_url' && !(isObject(part.image_url) && typeof part.image_url.url === 'string')) {
      return problem(`Missing required parameter: '${at}.image_url.url'.`, `${at}.image_url.url`)
    }
  }
  return null
}

/** Checks an assistant message's tool_calls; returns their ids, or a problem. */
function chatToolCalls(calls: unknown, i: number): string[] | RequestProblem {
  if (calls === undefined || calls === null) return []
  if (!Array.isArray(calls))
    return problem(`Invalid type for 'messages[${i}].tool_calls': expected an array of objects.`, `messages[${i}].tool_calls`)
  const ids: string[] = []
  for (let k = 0; k < calls.length; k++) {
    const call: unknown = calls[k]
    const at = `messages[${i}].tool_calls[${k}]`
    if (!isObject(call)) return problem(`Invalid type for '${at}': expected an object.`, at)
    if (typeof call.id !== 'string') return problem(`Missing required parameter: '${at}.id'.`, `${at}.id`)
    if (call.type !== 'function') return problem(`Missing required parameter: '${at}.type'.`, `${at}.type`)
    const fn = call.function
    if (!isObject(fn) || typeof fn.name !== 'string')
      return problem(`Missing required parameter: '${at}.function.name'.`, `${at}.function.name`)
    if (typeof fn.arguments !== 'string') {
      return problem(
        `Invalid type for '${at}.function.arguments': expected a string, but got ${Array.isArray(fn.arguments) ? 'an array' : typeof fn.arguments} instead.`,
        `${at}.function.arguments`,
      )
    }
    ids.push(call.id)
  }
  return ids
}

function unansweredCalls(ids: readonly string[], at: number): RequestProblem {
  return problem(
    `An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: ${ids.join(', ')}`,
    `messages.[${at}].role`,
  )
}

/** POST /v1/chat/completions, as OpenAI and vLLM check it (an empty `messages` passes, as on vLLM). */
export const chatProblem: Validator = (body) => {
  const messages = body.messages
  if (messages === undefined) return problem("Missing required parameter: 'messages'.", 'messages')
  if (!Array.isArray(messages)) return problem("Invalid type for 'messages': expected an array of objects.", 'messages')
  if (body.continue_final_message === true && body.add_generation_prompt !== false) {
    // vLLM; add_generation_prompt defaults to true there.
    return problem('Cannot set both `continue_final_message` and `add_generation_prompt` to True.', 'continue_final_message')
  }
  /** Tool call ids of the last assistant message still waiting for their tool message, and where it was. */
  let pending: string[] = []
  let pendingAt = -1
  for (let i = 0; i < messages.length; i++) {
    const message: unknown = messages[i]
    if (!isObject(message)) return problem(`Invalid type for 'messages[${i}]': expected an object.`, `messages[${i}]`)
    const role = message.role
    if (typeof role !== 'string' || !CHAT_ROLES.has(role)) {
      return problem(
        `Invalid value: '${shown(role)}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.`,
        `messages[${i}].role`,
      )
    }
    const parts = chatPartsProblem(message.content, i)
    if (parts !== null) return parts
    if (role === 'tool') {
      const id = message.tool_call_id
      if (typeof id !== 'string')
        return problem(`Missing required parameter: 'messages[${i}].tool_call_id'.`, `messages[${i}].tool_call_id`)
      const at = pending.indexOf(id)
      if (at === -1) {
        return problem(
          "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
          `messages.[${i}].role`,
        )
      }
      pending.splice(at, 1)
      continue
    }
    if (pending.length > 0) return unansweredCalls(pending, pendingAt)
    if (role === 'assistant') {
      const ids = chatToolCalls(message.tool_calls, i)
      if (!Array.isArray(ids)) return ids
      pending = ids
      pendingAt = i
    }
  }
  return pending.length > 0 ? unansweredCalls(pending, pendingAt) : null
}

/** A final assistant message is continued only with vLLM's `continue_final_message` (and `add_generation_prompt: false`). */
export const chatTrailing: TrailingReader = (body) => {
  const last = lastOf(body.messages)
  if (!isObject(last) || last.role !== 'assistant') return null
  return { text: textOf(last.content, isTypedText), prefill: body.continue_final_message === true && body.add_generation_prompt === false }
}

// Gemini generateContent

/** Top-level fields of a GenerateContentRequest (camelCase or snake_case, as Google's JSON parser takes both), and the mock's own. */
const GEMINI_FIELDS: ReadonlySet<string> = new Set([
  'contents',
  'model',
  'tools',
  'toolConfig',
  'tool_config',
  'safetySettings',
  'safety_settings',
  'systemInstruction',
  'system_instruction',
  'generationConfig',
  'generation_config',
  'cachedContent',
  'cached_content',
  'labels',
  'serviceTier',
  'service_tier',
  'mock',
])
const GEMINI_PART_FIELDS: ReadonlySet<string> = new Set([
  'text',
  'inlineData',
  'inline_data',
  'fileData',
  'file_data',
  'functionCall',
  'function_call',
  'functionResponse',
  'function_response',
  'executableCode',
  'executable_code',
  'codeExecutionResult',
  'code_execution_result',
  'toolCall',
  'tool_call',
  'toolResponse',
  'tool_response',
  'thought',
  'thoughtSignature',
  'thought_signature',
  'videoMetadata',
  'video_metadata',
  'mediaResolution',
  'media_resolution',
  'partMetadata',
  'part_metadata',
  'audioTranscription',
  'audio_transcription',
])
const GEMINI_TOOL_FIELDS: ReadonlySet<string> = new Set([
  'functionDeclarations',
  'function_declarations',
  'googleSearch',
  'google_search',
  'googleSearchRetrieval',
  'google_search_retrieval',
  'codeExecution',
  'code_execution',
  'urlContext',
  'url_context',
  'computerUse',
  'computer_use',
  'fileSearch',
  'file_search',
  'googleMaps',
  'google_maps',
])
const FUNCTION_NAME = /^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$/

function unknownField(fields: Fields, known: ReadonlySet<string>, at: string): RequestProblem | null {
  for (const key in fields) {
    if (!known.has(key)) {
      return problem(`Invalid JSON payload received. Unknown name "${key}"${at === '' ? '' : ` at '${at}'`}: Cannot find field.`, at || key)
    }
  }
  return null
}

function struct(value: unknown, at: string): RequestProblem | null {
  if (value === undefined || isObject(value)) return null
  return problem(`Invalid value at '${at}' (type.googleapis.com/google.protobuf.Struct), ${JSON.stringify(value)}`, at)
}

/** Checks one part; counts its functionCall / functionResponse parts into `counts`. */
function geminiPartProblem(part: unknown, at: string, counts: { calls: number; responses: number }): RequestProblem | null {
  if (!isObject(part))
    return problem(`Invalid value at '${at}' (type.googleapis.com/google.ai.generativelanguage.v1beta.Part), ${JSON.stringify(part)}`, at)
  const unknown = unknownField(part, GEMINI_PART_FIELDS, at)
  if (unknown !== null) return unknown
  if (part.text !== undefined && typeof part.text !== 'string')
    return problem(`Invalid value at '${at}.text' (TYPE_STRING), ${JSON.stringify(part.text)}`, at)
  const call = part.functionCall ?? part.function_call
  if (call !== undefined) {
    counts.calls++
    if (!isObject(call) || typeof call.name !== 'string' || call.name === '')
      return problem(`* GenerateContentRequest.${at}.function_call.name: Name cannot be empty.`, at)
    const args = struct(call.args, `${at}.function_call.args`)
    if (args !== null) return args
  }
  const response = part.functionResponse ?? part.function_response
  if (response !== undefined) {
    counts.responses++
    if (!isObject(response) || typeof response.name !== 'string' || response.name === '') {
      return problem(`* GenerateContentRequest.${at}.function_response.name: Name cannot be empty.`, at)
    }
    if (!isObject(response.response)) {
      return problem(
        `Invalid value at '${at}.function_response.response' (type.googleapis.com/google.protobuf.Struct), ${JSON.stringify(response.response ?? null)}`,
        at,
      )
    }
  }
  return null
}

function geminiSystemProblem(system: unknown): RequestProblem | null {
  if (system === undefined) return null
  if (!isObject(system) || !Array.isArray(system.parts)) {
    return problem(
      `Invalid value at 'system_instruction' (type.googleapis.com/google.ai.generativelanguage.v1beta.Content), ${JSON.stringify(system)}`,
      'system_instruction',
    )
  }
  for (let j = 0; j < system.parts.length; j++) {
    const found = geminiPartProblem(system.parts[j], `system_instruction.parts[${j}]`, { calls: 0, responses: 0 })
    if (found !== null) return found
  }
  return null
}

function geminiToolsProblem(tools: unknown): RequestProblem | null {
  if (tools === undefined) return null
  if (!Array.isArray(tools))
    return problem(
      `Invalid value at 'tools' (type.googleapis.com/google.ai.generativelanguage.v1beta.Tool), ${JSON.stringify(tools)}`,
      'tools',
    )
  for (let k = 0; k < tools.length; k++) {
    const tool: unknown = tools[k]
    const at = `tools[${k}]`
    if (!isObject(tool))
      return problem(`Invalid value at '${at}' (type.googleapis.com/google.ai.generativelanguage.v1beta.Tool), ${JSON.stringify(tool)}`, at)
    const unknown = unknownField(tool, GEMINI_TOOL_FIELDS, at)
    if (unknown !== null) return unknown
    const declarations = tool.functionDeclarations ?? tool.function_declarations
    if (declarations === undefined) continue
    if (!Array.isArray(declarations)) return problem(`Invalid value at '${at}.function_declarations', ${JSON.stringify(declarations)}`, at)
    for (let d = 0; d < declarations.length; d++) {
      const declaration: unknown = declarations[d]
      if (!isObject(declaration) || typeof declaration.name !== 'string' || !FUNCTION_NAME.test(declaration.name)) {
        return problem(
          `* GenerateContentRequest.${at}.function_declarations[${d}].name: Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64.`,
          at,
        )
      }
      const parameters = struct(declaration.parameters, `${at}.function_declarations[${d}].parameters`)
      if (parameters !== null) return parameters
    }
  }
  return null
}

/** POST /v1beta/models/{model}:generateContent and :streamGenerateContent, as generativelanguage.googleapis.com checks them. */
export const geminiProblem: Validator = (body) => {
  const unknown = unknownField(body, GEMINI_FIELDS, '')
  if (unknown !== null) return unknown
  const contents = body.contents
  if (!Array.isArray(contents) || contents.length === 0)
    return problem('* GenerateContentRequest.contents: contents is not specified', 'contents')
  /** The previous content's functionCall parts (-1: it was not a model turn). */
  let previousCalls = -1
  /** The previous content was a user turn or a function response turn. */
  let previousUserOrResponse = false
  for (let i = 0; i < contents.length; i++) {
    const content: unknown = contents[i]
    if (!isObject(content))
      return problem(
        `Invalid value at 'contents[${i}]' (type.googleapis.com/google.ai.generativelanguage.v1beta.Content), ${JSON.stringify(content)}`,
      )
    const role = content.role ?? 'user'
    if (role !== 'user' && role !== 'model') return problem('Please use a valid role: user, model.', `contents[${i}].role`)
    const parts = content.parts
    if (!Array.isArray(parts) || parts.length === 0) {
      return problem(`* GenerateContentRequest.contents[${i}].parts: contents.parts must not be empty.`, `contents[${i}].parts`)
    }
    const counts = { calls: 0, responses: 0 }
    for (let j = 0; j < parts.length; j++) {
      const found = geminiPartProblem(parts[j], `contents[${i}].parts[${j}]`, counts)
      if (found !== null) return found
    }
    if (counts.calls > 0 && !previousUserOrResponse) {
      return problem(
        'Please ensure that function call turn comes immediately after a user turn or after a function response turn.',
        `contents[${i}]`,
      )
    }
    if (counts.responses > 0) {
      if (previousCalls <= 0)
        return problem('Please ensure that function response turn comes immediately after a function call turn.', `contents[${i}]`)
      if (counts.responses !== previousCalls) {
        return problem(
          'Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.',
          `contents[${i}]`,
        )
      }
    }
    previousCalls = role === 'model' ? counts.calls : -1
    previousUserOrResponse = role === 'user'
  }
  return geminiSystemProblem(body.systemInstruction ?? body.system_instruction) ?? geminiToolsProblem(body.tools)
}

function isAnswerText(part: Fields): boolean {
  return part.thought !== true
}

/** A final `model` content is continued (Gemini prefill). */
export const geminiTrailing: TrailingReader = (body) => {
  const last = lastOf(body.contents)
  if (!isObject(last) || last.role !== 'model') return null
  return { text: textOf(last.parts, isAnswerText), prefill: true }
}
