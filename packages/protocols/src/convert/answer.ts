import { randomUUID } from 'node:crypto'
import { JsonEnd } from './json-end.js'
import type { FinishReason, NeutralUsage } from './types.js'

/** One piece of a whole (non-streamed) answer, in the order the upstream gave them. */
export type AnswerBlock =
  | { type: 'text'; text: string }
  | { type: 'reasoning'; text: string; signature?: string }
  | { type: 'redacted_reasoning'; data: string }
  /** `args`: the arguments JSON text. */
  | { type: 'tool'; id: string; name: string; args: string; signature?: string }

/** A non-streamed answer in neutral terms: what an upstream's JSON says, before the client's JSON is written. */
export interface Answer {
  blocks: AnswerBlock[]
  finish: FinishReason
  stopSequence?: string
  usage: NeutralUsage
}

/**
 * Whether the answer has a redacted_thinking block, which OpenAI and Gemini clients have no field for: they then get
 * none of its signatures (Claude takes a tool-call turn's thinking back only whole; without a signature it goes back
 * without thinking).
 */
export function hasRedactedReasoning(answer: Answer): boolean {
  return answer.blocks.some((block) => block.type === 'redacted_reasoning')
}

/** 32 random hex digits: the random part of generated ids. */
export function randomHex(): string {
  return randomUUID().replaceAll('-', '')
}

/** A tool-call id for an upstream that gives none (Gemini): `call_` and 24 hex digits, valid in every format. */
export function newToolCallId(): string {
  return `call_${randomHex().slice(0, 24)}`
}

/** A tool call's arguments as the object formats that hold them parsed need; '' is `{}`; undefined when not an object. */
export function parseToolArgs(json: string): Record<string, unknown> | undefined {
  if (json.trim() === '') return {}
  try {
    const value: unknown = JSON.parse(json)
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

/**
 * Whether the output cap cut a tool call's arguments off: the answer ended with `length` before their JSON closed
 * (OpenAI and vLLM send them as far as they got, e.g. `{"city":"Par`). A truncation, not a malformed call.
 */
export function cutByCap(args: string, finish: FinishReason): boolean {
  return finish === 'length' && !new JsonEnd().feed(args)
}
