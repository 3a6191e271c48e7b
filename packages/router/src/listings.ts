import type { ApiFamily } from '@llmproxy/protocols'
import type { ModelTable } from './models.js'

/** A model list, or one model of it, as JSON in each client API's shape. */
export type ModelShapes = Record<ApiFamily, string>

/** GET /v1/models and /v1beta/models, and each model of them (`byId`), built once per model table. */
export interface ModelListings extends ModelShapes {
  byId: Map<string, ModelShapes>
}

export function modelListings(table: ModelTable): ModelListings {
  const ids = table.listing
  const openai = ids.map((m) => ({
    id: m.id,
    object: 'model',
    created: 0,
    owned_by: 'llmproxy',
    ...(m.aliasOf ? { alias_of: m.aliasOf } : {}),
  }))
  const anthropic = ids.map((m) => ({ type: 'model', id: m.id, display_name: m.id, created_at: '1970-01-01T00:00:00Z' }))
  const gemini = ids.map((m) => ({
    name: `models/${m.id}`,
    baseModelId: m.aliasOf ?? m.id,
    displayName: m.id,
    supportedGenerationMethods: ['generateContent', 'streamGenerateContent'],
  }))
  const byId = new Map<string, ModelShapes>()
  ids.forEach((m, i) => {
    byId.set(m.id, { openai: JSON.stringify(openai[i]), anthropic: JSON.stringify(anthropic[i]), gemini: JSON.stringify(gemini[i]) })
  })
  return {
    openai: JSON.stringify({ object: 'list', data: openai }),
    anthropic: JSON.stringify({ data: anthropic, has_more: false, first_id: ids[0]?.id ?? null, last_id: ids.at(-1)?.id ?? null }),
    gemini: JSON.stringify({ models: gemini }),
    byId,
  }
}
