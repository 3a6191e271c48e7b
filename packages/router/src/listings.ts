import { echoed, errors, type LlmProxyError } from '@llmproxy/core'
import type { ApiFamily } from '@llmproxy/protocols'
import type { ModelTable } from './models.js'

/** A model list, or one model of it, as JSON in each client API's shape. */
export type ModelShapes = Record<ApiFamily, string>

/** GET /v1/models and /v1beta/models, and each model of them (`byId`, in list order: `ids`). */
export interface ModelListings extends ModelShapes {
  byId: Map<string, ModelShapes>
  ids: readonly string[]
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
    ids: ids.map((m) => m.id),
    openai: JSON.stringify({ object: 'list', data: openai }),
    anthropic: JSON.stringify({ data: anthropic, has_more: false, first_id: ids[0]?.id ?? null, last_id: ids.at(-1)?.id ?? null }),
    gemini: JSON.stringify({ models: gemini }),
    byId,
  }
}

/** The query parameters that page each API's list (OpenAI's has no pages). */
const PAGING = {
  anthropic: { size: 'limit', after: 'after_id', before: 'before_id' },
  gemini: { size: 'pageSize', after: 'pageToken', before: null },
} as const

/**
 * The model list a client asked for, in its API's shape: the whole list (prebuilt) unless it asks for a page,
 * Anthropic's `limit` models after `after_id` or before `before_id`, Gemini's `pageSize` models after `pageToken` (the
 * last model of the page before: its `nextPageToken`). Without a size, a page runs to the list's end. A cursor that
 * names no model of the list, or a size that is no whole number from 1, is the client's 400.
 */
export function modelList(listings: ModelListings, api: ApiFamily, query: Record<string, unknown>): string | LlmProxyError {
  if (api === 'openai') return listings.openai
  const names = PAGING[api]
  const size = query[names.size]
  const after = query[names.after]
  const before = names.before === null ? undefined : query[names.before]
  if (size === undefined && after === undefined && before === undefined) return listings[api]
  if (after !== undefined && before !== undefined) {
    return errors.invalidRequest(`Send "${names.after}" or "${names.before}", not both.`, { param: names.before ?? '' })
  }
  const ids = listings.ids
  const [cursor, cursorParam] = after !== undefined ? [after, names.after] : [before, names.before ?? '']
  const at = typeof cursor === 'string' ? ids.indexOf(cursor) : -1
  if (cursor !== undefined && at === -1) {
    return errors.invalidRequest(`No model ${echoed(String(cursor), true)} in the list (${cursorParam}).`, { param: cursorParam })
  }
  const most = typeof size === 'string' ? Number(size) : ids.length
  if (size !== undefined && (typeof size !== 'string' || !Number.isInteger(most) || most < 1)) {
    return errors.invalidRequest(`"${names.size}" must be a whole number from 1.`, { param: names.size })
  }
  // A page before the cursor ends just before it; one after it starts just after it.
  const end = before === undefined ? Math.min(ids.length, at + 1 + most) : at
  const start = before === undefined ? at + 1 : Math.max(0, at - most)
  const page = ids.slice(start, end)
  const items = page.map((id) => (listings.byId.get(id) as ModelShapes)[api]).join(',')
  // Anthropic's has_more looks the way the client pages.
  const more = before === undefined ? end < ids.length : start > 0
  if (api === 'anthropic') {
    return `{"data":[${items}],"has_more":${more},"first_id":${JSON.stringify(page[0] ?? null)},"last_id":${JSON.stringify(page.at(-1) ?? null)}}`
  }
  return `{"models":[${items}]${more ? `,"nextPageToken":${JSON.stringify(page.at(-1))}` : ''}}`
}
