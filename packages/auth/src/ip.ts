import { BlockList, isIP } from 'node:net'
import type { ConfigProblem } from '@llmproxy/core'

/**
 * Compiles address/CIDR entries into a BlockList (which also matches IPv4-mapped IPv6 addresses,
 * `::ffff:10.1.2.3`, against IPv4 rules and the reverse). Bad entries are reported in `problems`.
 */
export function compileIpList(entries: readonly string[], path: string, problems: ConfigProblem[]): BlockList {
  const list = new BlockList()
  for (let i = 0; i < entries.length; i++) {
    const problem = addEntry(list, entries[i] as string)
    if (problem !== null) problems.push({ path: `${path}/${i}`, message: problem })
  }
  return list
}

const PREFIX = /^\d{1,3}$/

function addEntry(list: BlockList, entry: string): string | null {
  const slash = entry.indexOf('/')
  const address = slash === -1 ? entry : entry.slice(0, slash)
  const family = isIP(address)
  if (family === 0) return `${JSON.stringify(entry)} is not an IPv4 or IPv6 address or CIDR`
  const type = family === 4 ? 'ipv4' : 'ipv6'
  if (slash === -1) {
    list.addAddress(address, type)
    return null
  }
  const prefixText = entry.slice(slash + 1)
  const max = family === 4 ? 32 : 128
  const prefix = Number(prefixText)
  if (!PREFIX.test(prefixText) || prefix > max) return `${JSON.stringify(entry)}: the prefix length must be 0 to ${max}`
  list.addSubnet(address, prefix, type)
  return null
}

/** The IP check: deny first, then allow (when an allowlist is set). */
export class IpRules {
  private readonly allow: BlockList | null
  private readonly deny: BlockList | null

  constructor(allow: BlockList | null, deny: BlockList | null) {
    this.allow = allow
    this.deny = deny
  }

  allows(address: string): boolean {
    const family = isIP(address)
    // An address we cannot read can match no rule: refused when only listed addresses may enter.
    if (family === 0) return this.allow === null
    const type = family === 4 ? 'ipv4' : 'ipv6'
    if (this.deny?.check(address, type)) return false
    return this.allow === null || this.allow.check(address, type)
  }
}
