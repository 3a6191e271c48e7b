import { ConfigSchema } from './config.js'

type JsonObject = Record<string, unknown>

/**
 * A property with a default may be left out of a config file, but TypeBox lists it as required.
 * Editors would flag it as missing, so such properties are dropped from `required`.
 */
function optionalDefaults(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(optionalDefaults)
  if (node === null || typeof node !== 'object') return node
  const out: JsonObject = {}
  for (const [key, value] of Object.entries(node as JsonObject)) out[key] = optionalDefaults(value)
  const properties = out.properties as Record<string, JsonObject> | undefined
  if (Array.isArray(out.required) && properties !== undefined) {
    const required = (out.required as string[]).filter((name) => properties[name]?.default === undefined)
    if (required.length > 0) out.required = required
    else delete out.required
  }
  return out
}

/** The config's JSON Schema (draft 2020-12), as printed by `llmproxy schema` and committed as schema.json. */
export function configJsonSchema(): JsonObject {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'LLMProxy configuration',
    ...(optionalDefaults(JSON.parse(JSON.stringify(ConfigSchema))) as JsonObject),
  }
}

interface SchemaNode {
  type?: string | string[]
  description?: string
  default?: unknown
  properties?: Record<string, SchemaNode>
  items?: SchemaNode
  anyOf?: SchemaNode[]
  const?: unknown
  enum?: unknown[]
  required?: string[]
  additionalProperties?: unknown
  minimum?: number
  maximum?: number
  exclusiveMinimum?: number
  minLength?: number
  minItems?: number
}

/** The bounds a value must keep (shown beside its type: a config that breaks them is refused). */
function boundsOf(node: SchemaNode): string {
  const low =
    node.minimum !== undefined ? `${node.minimum}` : node.exclusiveMinimum !== undefined ? `> ${node.exclusiveMinimum}` : undefined
  if (low !== undefined && node.maximum !== undefined && node.minimum !== undefined) return ` (${low} to ${node.maximum})`
  if (low !== undefined) return node.minimum !== undefined ? ` (≥ ${low})` : ` (${low})`
  if (node.maximum !== undefined) return ` (≤ ${node.maximum})`
  if (node.minLength !== undefined && node.minLength > 1) return ` (${node.minLength}+ characters)`
  if (node.minItems !== undefined && node.minItems > 0) return ` (${node.minItems}+ items)`
  return ''
}

function typeOf(node: SchemaNode): string {
  if (node.anyOf !== undefined) {
    if (node.anyOf.every((n) => n.const !== undefined)) return node.anyOf.map((n) => JSON.stringify(n.const)).join(' \\| ')
    return node.anyOf.map(typeOf).join(' \\| ')
  }
  if (node.const !== undefined) return JSON.stringify(node.const)
  if (node.type === 'array') {
    const item = node.items === undefined ? 'unknown' : typeOf(node.items)
    return item.includes(' ') ? `list of (${item})` : `${item}[]`
  }
  if (node.type === 'object' && node.properties === undefined) return 'map'
  return Array.isArray(node.type) ? node.type.join(' \\| ') : (node.type ?? 'any')
}

/** One markdown row per config setting (path, type, default, meaning), from the schema: the README's reference. */
export function configReference(): string {
  const rows: string[] = ['| Setting | Type | Default | Meaning |', '| --- | --- | --- | --- |']
  const visit = (node: SchemaNode, path: string, required: boolean): void => {
    const objectish = node.properties !== undefined ? node : node.items?.properties !== undefined ? node.items : undefined
    if (path !== '') {
      // An object's default is its settings' defaults, listed on their own rows; a list's is shown whole.
      const leafDefault =
        node.default === undefined || (typeof node.default === 'object' && node.default !== null && !Array.isArray(node.default))
          ? ''
          : `\`${JSON.stringify(node.default)}\``
      const def = required ? 'required' : leafDefault
      const type =
        objectish !== undefined ? (node.type === 'array' ? `list${boundsOf(node)}` : 'object') : `${typeOf(node)}${boundsOf(node)}`
      rows.push(`| \`${path}\` | ${type} | ${def} | ${(node.description ?? '').replaceAll('|', '\\|')} |`)
    }
    if (objectish?.properties !== undefined) {
      const prefix = node.type === 'array' ? `${path}[]` : path
      for (const [key, child] of Object.entries(objectish.properties)) {
        if (key === '$schema') continue
        visit(child, prefix === '' ? key : `${prefix}.${key}`, objectish.required?.includes(key) === true && child.default === undefined)
      }
    }
    // `metrics` is `false` or an object: document the object's settings too.
    const objectBranch = node.anyOf?.find((n) => n.properties !== undefined)
    if (objectBranch !== undefined) visit({ ...objectBranch, description: undefined } as SchemaNode, path, false)
  }
  visit(JSON.parse(JSON.stringify(ConfigSchema)) as SchemaNode, '', false)
  return rows.filter((row, i) => rows.indexOf(row) === i).join('\n')
}
