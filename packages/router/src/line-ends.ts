// An SSE stream's line ends as the rest of the gateway reads them: LF (or CRLF) passes untouched, lone CRs become LFs.
const NEWLINE = 0x0a
const CR = 0x0d

/** One stream's line ends, chunk by chunk (a stream relay has one). */
export class LineEnds {
  /** How lines end: unknown until a line end is seen; `cr` when a lone CR was (then CRs become LFs, see `normalize`). */
  private style: 'unknown' | 'lf' | 'cr' = 'unknown'
  /** The last chunk ended with a CR that went out as a LF (a LF starting the next one belongs to it). */
  private pendingCr = false

  /**
   * The chunk with its line ends as the rest of the gateway reads them. The SSE spec allows CR, LF and CRLF;
   * upstreams send LF or CRLF, which pass untouched. A stream seen to use lone CRs has them turned into LFs
   * (a copy per chunk, only for such streams), so that events, terminators and usage are found in it too.
   */
  normalize(chunk: Buffer): Buffer {
    if (this.style === 'lf') return chunk
    if (this.style === 'unknown') {
      const lf = chunk.indexOf(NEWLINE)
      const cr = chunk.indexOf(CR)
      // A CR is lone when a byte other than LF follows it in this chunk (a CR ending the chunk decides nothing yet).
      if (cr !== -1 && (lf === -1 || cr < lf) && cr + 1 < chunk.length && chunk[cr + 1] !== NEWLINE) this.style = 'cr'
      else if (lf !== -1) this.style = 'lf'
      if (this.style === 'lf') {
        // The CR that ended the chunk before went out as a LF (below): the LF of its CRLF ends no second line.
        const skip = this.pendingCr && chunk[0] === NEWLINE
        this.pendingCr = false
        return skip ? chunk.subarray(1) : chunk
      }
      if (this.style === 'unknown') {
        // Undecided, and a CR ends the chunk: a line end either way (lone or a CRLF's), so it goes out as a LF now,
        // else a lone CR's blank line cut between its CRs would reach the client as one CRLF.
        this.pendingCr = cr === chunk.length - 1
        if (!this.pendingCr) return chunk
        const out = Buffer.from(chunk)
        out[cr] = NEWLINE
        return out
      }
    }
    const out = Buffer.allocUnsafe(chunk.length)
    let n = 0
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i] as number
      if (byte === NEWLINE && (this.pendingCr || (i > 0 && chunk[i - 1] === CR))) {
        // The LF of a CRLF whose CR already became a LF.
        this.pendingCr = false
        continue
      }
      this.pendingCr = false
      out[n++] = byte === CR ? NEWLINE : byte
    }
    this.pendingCr = chunk[chunk.length - 1] === CR
    return out.subarray(0, n)
  }
}
