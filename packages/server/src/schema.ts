import { ConfigSchema } from './config.js'

/** The config's JSON Schema (draft 2020-12 compatible), as printed by `llmproxy schema`. */
export function configJsonSchema(): Record<string, unknown> {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'LLMProxy configuration',
    ...(JSON.parse(JSON.stringify(ConfigSchema)) as Record<string, unknown>),
  }
}
