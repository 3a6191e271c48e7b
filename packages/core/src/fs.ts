import { mkdirSync, statSync } from 'node:fs'
import { dirname } from 'node:path'

/**
 * `mkdirSync(dir, { recursive: true })`, failing with the real cause, and never Node's recursive mkdir: it reports
 * ENOENT when it cannot make a directory for a reason it does not list (EROFS on a read-only filesystem, a
 * container's root), which sends an operator looking for a missing parent, and it loops for good where a directory
 * that exists answers ENOENT (`/proc/x`). The missing directories are made one by one from the top, and the first that
 * cannot be says why.
 */
export function makeDirectory(dir: string): void {
  try {
    mkdirSync(dir)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EEXIST' && statSync(dir).isDirectory()) return
    const parent = dirname(dir)
    if (code !== 'ENOENT' || parent === dir) throw err
    makeDirectory(parent)
    mkdirSync(dir)
  }
}
