// The README's generated sections live between `<!-- NAME:start -->` and `<!-- NAME:end -->`.
export function replaceSection(text, name, content) {
  const start = `<!-- ${name}:start -->`
  const end = `<!-- ${name}:end -->`
  const from = text.indexOf(start)
  const to = text.indexOf(end)
  if (from === -1 || to < from) throw new Error(`README.md has no ${name} section`)
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
