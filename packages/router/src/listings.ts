import type { ModelTable } from './models.js'

/** GET /v1/models and /v1beta/models, in each client API's shape, built once per model table. */
export interface ModelListings {
  openai: string
  anthropic: string
  gemini: string
}

export function modelListings(table: ModelTable): ModelListings {
  const ids = table.listing
  return {
    openai: JSON.stringify({
      object: 'list',
      data: ids.map((m) => ({
        id: m.id,
        object: 'model',
        created: 0,
        owned_by: 'llmproxy',
        ...(m.aliasOf ? { alias_of: m.aliasOf } : {}),
      })),
    }),
    anthropic: JSON.stringify({
      data: ids.map((m) => ({ type: 'model', id: m.id, display_name: m.id, created_at: '1970-01-01T00:00:00Z' })),
      has_more: false,
      first_id: ids[0]?.id ?? null,
      last_id: ids.at(-1)?.id ?? null,
    }),
    gemini: JSON.stringify({
      models: ids.map((m) => ({
        name: `models/${m.id}`,
        baseModelId: m.aliasOf ?? m.id,
        displayName: m.id,
        supportedGenerationMethods: ['generateContent', 'streamGenerateContent'],
      })),
    }),
  }
}
