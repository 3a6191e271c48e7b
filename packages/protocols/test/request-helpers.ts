/**
 * Checks of converted bodies against the rules the real upstream APIs enforce (each one a 400 there), and the body
 * types of the official SDKs, so that expected bodies in tests are type-checked against them.
 */
import assert from 'node:assert/strict'
import type Anthropic from '@anthropic-ai/sdk'
import type { Content, GenerationConfig, Tool, ToolConfig } from '@google/genai'
import { ConversionError, convertRequest, type RequestConversion } from '@llmproxy/protocols'
import type OpenAI from 'openai'

export type AnthropicBody = Anthropic.MessageCreateParams
/** A Gemini REST generateContent body (the SDK's pieces; the SDK call wraps them differently). */
export interface GeminiBody {
  contents: Content[]
  systemInstruction?: Content
  tools?: Tool[]
  toolConfig?: ToolConfig
  generationConfig?: GenerationConfig
}
export type OpenAIBody = OpenAI.ChatCompletionCreateParams
/** OpenAI-compatible extensions we send (vLLM, DeepSeek): reasoning in assistant history, top_k. */
export type VllmAssistantMessage = OpenAI.ChatCompletionAssistantMessageParam & { reasoning_content?: string }

export const OPTS: RequestConversion = { upstreamModel: 'up-model', stream: false, defaultMaxTokens: 4096 }
export const STREAM: RequestConversion = { upstreamModel: 'up-model', stream: true, defaultMaxTokens: 4096 }

type Json = Record<string, unknown>

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function list(value: unknown): Json[] {
  return Array.isArray(value) ? value.filter(isObject) : []
}

/** Problems an Anthropic Messages upstream would reject the body for. */
export function anthropicProblems(body: Json): string[] {
  const problems: string[] = []
  if (typeof body.model !== 'string') problems.push('model must be a string')
  if (!Number.isInteger(body.max_tokens) || (body.max_tokens as number) < 1) problems.push('max_tokens must be a positive integer')
  for (const key of ['temperature', 'top_p', 'top_k']) {
    if (key in body) problems.push(`${key} is rejected by API version 2026-10-21 and current models`)
  }
  if (body.system !== undefined && typeof body.system !== 'string' && !Array.isArray(body.system))
    problems.push('system must be a string or blocks')
  const messages = list(body.messages)
  if (messages.length === 0) problems.push('messages must not be empty')
  if (messages[0]?.role !== 'user') problems.push('the first message must be a user message')
  for (let i = 0; i < messages.length; i++) {
    const message = messages[i] as Json
    const final = i === messages.length - 1
    if (message.role !== 'user' && message.role !== 'assistant') problems.push(`messages[${i}].role must be user or assistant`)
    if (i > 0 && messages[i - 1]?.role === message.role) problems.push(`messages[${i}] repeats the role ${String(message.role)}`)
    const content = typeof message.content === 'string' ? [{ type: 'text', text: message.content }] : list(message.content)
    if (content.length === 0 && !(final && message.role === 'assistant')) problems.push(`messages[${i}] has no content`)
    let seenOther = false
    for (let j = 0; j < content.length; j++) {
      const block = content[j] as Json
      const at = `messages[${i}].content[${j}]`
      if (block.type === 'text' && (typeof block.text !== 'string' || block.text === ''))
        problems.push(`${at}: text blocks must be non-empty`)
      if (block.type === 'thinking' && (typeof block.signature !== 'string' || block.signature === ''))
        problems.push(`${at}: thinking needs a signature`)
      if ((block.type === 'thinking' || block.type === 'redacted_thinking' || block.type === 'tool_use') && message.role !== 'assistant') {
        problems.push(`${at}: ${String(block.type)} only in assistant messages`)
      }
      if ((block.type === 'tool_result' || block.type === 'image' || block.type === 'document') && message.role !== 'user') {
        problems.push(`${at}: ${String(block.type)} only in user messages`)
      }
      if (block.type === 'tool_use' && !/^[a-zA-Z0-9_-]+$/.test(String(block.id)))
        problems.push(`${at}: tool_use id ${String(block.id)} is not valid`)
      if (block.type === 'tool_result') {
        if (seenOther) problems.push(`${at}: tool_result blocks must come first in the user message`)
      } else seenOther = true
      if (block.type === 'image') {
        const source = block.source as Json
        if (source.type === 'base64' && !['image/jpeg', 'image/png', 'image/gif', 'image/webp'].includes(String(source.media_type))) {
          problems.push(`${at}: image media type ${String(source.media_type)}`)
        }
      }
    }
    if (final && message.role === 'assistant') {
      const last = content.at(-1)
      if (last?.type === 'text' && /\s$/.test(String(last.text))) problems.push('final assistant content cannot end with whitespace')
    }
    // Every tool_use is answered by a tool_result in the next message, and results answer the previous message's calls.
    if (message.role === 'assistant') {
      const calls = content.filter((b) => b.type === 'tool_use').map((b) => String(b.id))
      const next = messages[i + 1]
      const nextContent = next === undefined ? [] : typeof next.content === 'string' ? [] : list(next.content)
      const answered = new Set(nextContent.filter((b) => b.type === 'tool_result').map((b) => String(b.tool_use_id)))
      for (const id of calls) if (!answered.has(id)) problems.push(`messages[${i}]: tool_use ${id} has no tool_result in the next message`)
    }
    if (message.role === 'user') {
      const previous = messages[i - 1]
      const calls = new Set(
        (previous === undefined || typeof previous.content === 'string' ? [] : list(previous.content))
          .filter((b) => b.type === 'tool_use')
          .map((b) => String(b.id)),
      )
      for (const block of content) {
        if (block.type === 'tool_result' && !calls.has(String(block.tool_use_id))) {
          problems.push(`messages[${i}]: tool_result ${String(block.tool_use_id)} answers no tool_use of the previous message`)
        }
      }
    }
  }
  const thinking = body.thinking as Json | undefined
  if (thinking !== undefined && thinking.type !== 'disabled') {
    const last = messages.at(-1)
    const lastContent = last === undefined || typeof last.content === 'string' ? [] : list(last.content)
    if (last?.role === 'assistant') problems.push('a prefill cannot go with thinking')
    if (lastContent[0]?.type === 'tool_result') {
      const previous = messages.at(-2)
      const first = previous === undefined || typeof previous.content === 'string' ? undefined : list(previous.content)[0]
      if (first?.type !== 'thinking' && first?.type !== 'redacted_thinking') {
        problems.push('with thinking on, the assistant turn before the final tool results must start with a thinking block')
      }
    }
    const choice = body.tool_choice as Json | undefined
    if (choice?.type === 'any' || choice?.type === 'tool') problems.push('thinking cannot go with a forced tool_choice')
    if (thinking.type === 'enabled') problems.push('budget thinking is rejected by the newest models: send adaptive')
  }
  for (const tool of list(body.tools)) {
    if (!/^[a-zA-Z0-9_-]{1,128}$/.test(String(tool.name))) problems.push(`tool name ${String(tool.name)} is not valid`)
    if (!isObject(tool.input_schema) || tool.input_schema.type !== 'object')
      problems.push(`tool ${String(tool.name)}: input_schema.type must be object`)
  }
  if (body.tool_choice !== undefined && list(body.tools).length === 0 && (body.tool_choice as Json).type !== 'none') {
    problems.push('tool_choice without tools')
  }
  for (const stop of Array.isArray(body.stop_sequences) ? body.stop_sequences : []) {
    if (String(stop).trim() === '') problems.push('stop sequences need a non-whitespace character')
  }
  return problems
}

/** Problems an OpenAI Chat Completions upstream (OpenAI, vLLM) would reject the body for. */
export function openaiProblems(body: Json): string[] {
  const problems: string[] = []
  if (typeof body.model !== 'string') problems.push('model must be a string')
  const messages = list(body.messages)
  if (messages.length === 0) problems.push('messages must not be empty')
  let pending = new Set<string>()
  for (let i = 0; i < messages.length; i++) {
    const message = messages[i] as Json
    if (!['system', 'developer', 'user', 'assistant', 'tool'].includes(String(message.role)))
      problems.push(`messages[${i}].role ${String(message.role)}`)
    if (message.role === 'tool') {
      const id = String(message.tool_call_id)
      if (!pending.has(id)) problems.push(`messages[${i}]: tool message for ${id} does not answer a pending tool call`)
      pending.delete(id)
      const content = message.content
      if (typeof content !== 'string' && !(Array.isArray(content) && list(content).every((p) => p.type === 'text'))) {
        problems.push(`messages[${i}]: tool content must be text`)
      }
      continue
    }
    if (pending.size > 0) problems.push(`messages[${i}]: tool calls ${[...pending].join(', ')} have no tool message before it`)
    pending = new Set()
    if (message.role === 'assistant') {
      for (const call of list(message.tool_calls)) {
        const fn = call.function as Json
        pending.add(String(call.id))
        try {
          JSON.parse(String(fn.arguments))
        } catch {
          problems.push(`messages[${i}]: tool call arguments must be a JSON string`)
        }
      }
      if (message.content === undefined && message.tool_calls === undefined)
        problems.push(`messages[${i}]: assistant needs content or tool_calls`)
    }
    if (message.role === 'user') {
      const content = message.content
      if (typeof content !== 'string' && list(content).length === 0) problems.push(`messages[${i}]: user content must not be empty`)
    }
  }
  if (pending.size > 0) problems.push(`tool calls ${[...pending].join(', ')} are never answered`)
  if (Array.isArray(body.tools) && body.tools.length === 0) problems.push('tools must not be an empty array')
  for (const tool of list(body.tools)) {
    const fn = tool.function as Json
    if (tool.type !== 'function' || !/^[a-zA-Z0-9_-]{1,64}$/.test(String(fn?.name))) problems.push(`tool ${String(fn?.name)} is not valid`)
  }
  if (body.tool_choice !== undefined && body.tools === undefined) problems.push('tool_choice without tools')
  if (body.stream_options !== undefined && body.stream !== true) problems.push('stream_options without stream')
  return problems
}

/** Problems a Gemini generateContent upstream would reject the body for. */
export function geminiProblems(body: Json): string[] {
  const problems: string[] = []
  if ('model' in body || 'stream' in body) problems.push('model and stream belong in the URL')
  const contents = list(body.contents)
  if (contents.length === 0) problems.push('contents must not be empty')
  // Gemini 3 validates the signatures of the current turn: the model contents after the last user content that is not responses.
  const current = contents.findLastIndex((c) => c.role === 'user' && list(c.parts).some((p) => !('functionResponse' in p)))
  for (let i = 0; i < contents.length; i++) {
    const content = contents[i] as Json
    if (content.role !== 'user' && content.role !== 'model') problems.push(`contents[${i}].role ${String(content.role)}`)
    const parts = list(content.parts)
    if (parts.length === 0) problems.push(`contents[${i}].parts must not be empty`)
    for (let j = 0; j < parts.length; j++) {
      const part = parts[j] as Json
      const data = ['text', 'inlineData', 'fileData', 'functionCall', 'functionResponse'].filter((k) => k in part)
      if (data.length !== 1) problems.push(`contents[${i}].parts[${j}] must have exactly one data field (has ${data.join(', ') || 'none'})`)
      if ('text' in part && part.text === '') problems.push(`contents[${i}].parts[${j}]: an empty text is no data`)
      if (isObject(part.fileData) && !String(part.fileData.fileUri).startsWith('https://'))
        problems.push(`contents[${i}].parts[${j}]: fileUri`)
      if (isObject(part.fileData) && typeof part.fileData.mimeType !== 'string')
        problems.push(`contents[${i}].parts[${j}]: fileData needs mimeType`)
      if ('functionCall' in part && content.role !== 'model') problems.push(`contents[${i}]: functionCall only in model content`)
      if ('functionResponse' in part && content.role !== 'user') problems.push(`contents[${i}]: functionResponse only in user content`)
    }
    const calls = parts.filter((p) => 'functionCall' in p)
    if (i > current && calls.length > 0 && calls[0]?.thoughtSignature === undefined) {
      problems.push(`contents[${i}]: the first functionCall of the current turn needs a thoughtSignature`)
    }
    const responses = parts.filter((p) => 'functionResponse' in p)
    if (responses.length > 0 && responses.length !== parts.length)
      problems.push(`contents[${i}]: function responses cannot have sibling parts`)
    if (calls.length > 0) {
      const next = list(contents[i + 1]?.parts).filter((p) => 'functionResponse' in p)
      if (next.length !== calls.length) problems.push(`contents[${i}]: ${calls.length} calls, ${next.length} responses in the next content`)
      for (let k = 0; k < calls.length; k++) {
        const call = calls[k]?.functionCall as Json
        const response = next[k]?.functionResponse as Json | undefined
        if (response !== undefined && response.name !== call.name)
          problems.push(`contents[${i + 1}]: response ${k} names ${String(response.name)}, call ${String(call.name)}`)
        if ('id' in call) problems.push(`contents[${i}]: ids on functionCall are rejected by Vertex`)
      }
    }
    if (responses.length > 0 && list(contents[i - 1]?.parts).filter((p) => 'functionCall' in p).length === 0) {
      problems.push(`contents[${i}]: function responses must follow a model content with calls`)
    }
  }
  for (const tool of list(body.tools)) {
    for (const decl of list(tool.functionDeclarations)) {
      if (!/^[a-zA-Z_][a-zA-Z0-9_.:-]{0,127}$/.test(String(decl.name))) problems.push(`function name ${String(decl.name)} is not valid`)
      if ('parameters' in decl && 'parametersJsonSchema' in decl)
        problems.push(`${String(decl.name)}: parameters and parametersJsonSchema exclude each other`)
      walkSchema(decl.parametersJsonSchema, `${String(decl.name)}.parametersJsonSchema`, problems)
    }
  }
  const calling = isObject(body.toolConfig) ? (body.toolConfig.functionCallingConfig as Json | undefined) : undefined
  if (calling?.allowedFunctionNames !== undefined && calling.mode !== 'ANY') problems.push('allowedFunctionNames only with mode ANY')
  const thinking = isObject(body.generationConfig) ? (body.generationConfig.thinkingConfig as Json | undefined) : undefined
  if (thinking?.thinkingBudget !== undefined && thinking.thinkingLevel !== undefined)
    problems.push('thinkingBudget and thinkingLevel exclude each other')
  return problems
}

function walkSchema(node: unknown, path: string, problems: string[]): void {
  if (Array.isArray(node)) {
    for (let i = 0; i < node.length; i++) walkSchema(node[i], `${path}[${i}]`, problems)
    return
  }
  if (!isObject(node)) return
  if ('$schema' in node) problems.push(`${path}: $schema is rejected`)
  if ('$ref' in node && Object.keys(node).some((k) => !k.startsWith('$'))) problems.push(`${path}: a $ref cannot have siblings`)
  for (const key in node) walkSchema(node[key], `${path}.${key}`, problems)
}

const PROBLEMS = { anthropic: anthropicProblems, openai: openaiProblems, gemini: geminiProblems } as const

/** Converts and asserts that the upstream would accept the result. */
export function convertValid(from: keyof typeof PROBLEMS, to: keyof typeof PROBLEMS, body: Json, opts: RequestConversion = OPTS): Json {
  const out = convertRequest(from, to, body, opts)
  assert.deepEqual(PROBLEMS[to](out), [], `${from} → ${to}: ${JSON.stringify(out)}`)
  return out
}

/** Asserts that the conversion is refused with a ConversionError naming `param`. */
export function assertRefused(from: keyof typeof PROBLEMS, to: keyof typeof PROBLEMS, body: Json, param: string, message?: RegExp): void {
  assert.throws(
    () => convertRequest(from, to, body, OPTS),
    (err: unknown) => {
      assert.ok(err instanceof ConversionError, `expected a ConversionError, got ${String(err)}`)
      assert.equal(err.param, param)
      if (message !== undefined) assert.match(err.message, message)
      return true
    },
  )
}
