// The docs' generated sections live between `<!-- NAME:start -->` and `<!-- NAME:end -->`.
export function replaceSection(text, name, content) {
  const start = `<!-- ${name}:start -->`
  const end = `<!-- ${name}:end -->`
  const from = text.indexOf(start)
  const to = text.indexOf(end)
  if (from === -1 || to < from) throw new Error(`no ${name} section (<!-- ${name}:start --> … <!-- ${name}:end -->)`)
  return `${text.slice(0, from + start.length)}\n${content}\n${text.slice(to)}`
}

export function readSection(text, name) {
  const start = `<!-- ${name}:start -->`
  const from = text.indexOf(start)
  const to = text.indexOf(`<!-- ${name}:end -->`)
  return from === -1 || to < from ? null : text.slice(from + start.length, to).trim()
}

/** A markdown table without its alignment padding (the formatter pads cells; the content is what counts). */
export function normalizeTable(text) {
  return text
    .split('\n')
    .map((line) =>
      line
        .split(/(?<!\\)\|/)
        .map((cell) => cell.trim().replace(/^-{3,}$/, '---'))
        .join('|'),
    )
    .join('\n')
}

/** The error catalogue as a markdown table (docs/errors.md's generated section). */
export function errorTable(catalogue) {
  const rows = Object.entries(catalogue)
    .sort(([a, x], [b, y]) => x.status - y.status || a.localeCompare(b))
    .map(([code, entry]) => `| \`${code}\` | ${entry.status} | \`${entry.type}\` | ${entry.when.replaceAll('|', '\\|')} |`)
  return ['| Code | Status | Type | When, and what to do |', '| --- | --- | --- | --- |', ...rows].join('\n')
}
