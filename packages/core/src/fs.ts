import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'

/**
 * `mkdirSync(dir, { recursive: true })`, failing with the real cause. Node's recursive mkdir reports ENOENT when it
 * cannot make a directory for a reason it does not list (EROFS on a read-only filesystem, a container's root), which
 * sends an operator looking for a missing parent: then the missing directories are made one by one from the top, and
 * the first that cannot be says why.
 */
export function makeDirectory(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true })
  } catch (err) {
    const parent = dirname(dir)
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || parent === dir) throw err
    makeDirectory(parent)
    mkdirSync(dir)
  }
}
