export function replaceSection(text: string, name: string, content: string): string
export function readSection(text: string, name: string): string | null
export function normalizeTable(text: string): string
export function errorTable(catalogue: Record<string, { status: number; type: string; when: string }>): string
