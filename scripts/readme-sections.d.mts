export function replaceSection(text: string, name: string, content: string): string
export function readSection(text: string, name: string): string | null
export function normalizeTable(text: string): string
