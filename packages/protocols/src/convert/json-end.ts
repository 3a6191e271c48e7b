const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d

/**
 * Follows a JSON object's text fragment by fragment and tells when it has closed, so a tool call's
 * arguments are known to be whole the moment their last fragment arrives (no parse, four fields of state).
 * A value that never opens an object or array (empty arguments) is never complete.
 */
export class JsonEnd {
  private depth = 0
  private inString = false
  private escaped = false
  private opened = false
  complete = false

  reset(): void {
    this.depth = 0
    this.inString = false
    this.escaped = false
    this.opened = false
    this.complete = false
  }

  /** Reads one more fragment; true once the top-level object or array has closed. */
  feed(text: string): boolean {
    if (this.complete) return true
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i)
      if (this.inString) {
        if (this.escaped) this.escaped = false
        else if (c === BACKSLASH) this.escaped = true
        else if (c === QUOTE) this.inString = false
      } else if (c === QUOTE) {
        this.inString = true
      } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
        this.depth++
        this.opened = true
      } else if ((c === CLOSE_BRACE || c === CLOSE_BRACKET) && --this.depth === 0 && this.opened) {
        this.complete = true
        return true
      }
    }
    return false
  }
}
