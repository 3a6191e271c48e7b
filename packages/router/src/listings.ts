import type { ApiFamily } from '@llmproxy/protocols'
import type { ModelTable } from './models.js'

/** A model list, or one model of it, as JSON in each client API's shape. */
export type ModelShapes = Record<ApiFamily, string>

/** GET /v1/models and /v1beta/models, and each model of them (`byId`). */
export interface ModelListings extends ModelShapes {
  byId: Map<string, ModelShapes>
}

type Listed = ModelTable['listing'][number]

/**
 * The listings of a model table, as each key sees them: only the names and aliases it may use (as OpenAI lists
 * only a key's models), so that no key learns the others' models. Built once per table for the keys that may use
 * every model, once per set of allowed models (a key's, shared by its requests) for the others.
 */
export class ModelCatalogue {
  private readonly listing: readonly Listed[]
  private readonly all: ModelListings
  private readonly restricted = new WeakMap<ReadonlySet<string>, ModelListings>()

  constructor(table: ModelTable) {
    this.listing = table.listing
    this.all = modelListings(table.listing)
  }

  /** The listings of a key's allowed models (`request.llm.allowedModels`; null: every model). */
  visibleTo(allowed: ReadonlySet<string> | null): ModelListings {
    if (allowed === null) return this.all
    let listings = this.restricted.get(allowed)
    if (listings === undefined) {
      // The router's own rule: a name is usable when it, or the model it is an alias of, is allowed.
      listings = modelListings(this.listing.filter((m) => allowed.has(m.id) || (m.aliasOf !== null && allowed.has(m.aliasOf))))
      this.restricted.set(allowed, listings)
    }
    return listings
  }
}

function modelListings(ids: readonly Listed[]): ModelListings {
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
