/**
 * Gemini request fields as protobuf JSON allows them, read alike by the converter and by the reservation of the output
 * cap (Gemini's outputCap): a field by its camelCase or its snake_case name, an integer as a number or a string.
 */
import { type JsonObject, optionalNumber } from './request-ir.js'

function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)
}

/** A field by its camelCase name or the snake_case one (protobuf JSON accepts both; curl examples use snake_case). */
export function field(object: JsonObject, name: string): unknown {
  const value = object[name]
  return value !== undefined ? value : object[snake(name)]
}

/** The name a field has in the client's body, for error paths. */
export function named(object: JsonObject, name: string): string {
  return object[name] === undefined && snake(name) in object ? snake(name) : name
}

/** An integer field's value, which protobuf JSON may spell as a string (`"30000"`): a number then; else as it is. */
export function protobufInteger(value: unknown): unknown {
  return typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : value
}

/** An optional integer field (int32 or int64). */
export function optionalInteger(value: unknown, path: string): number | undefined {
  return optionalNumber(protobufInteger(value), path)
}
