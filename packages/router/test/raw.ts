import { connect } from 'node:net'

/** Sends raw bytes to the server and resolves with everything it answers until it closes the connection. */
export function rawExchange(url: string, payload: string | Buffer, timeoutMs = 5000): Promise<string> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname)
    let out = ''
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no close within ${timeoutMs} ms; got: ${out}`)))
    socket.on('data', (data: Buffer) => {
      out += data.toString()
    })
    socket.once('error', reject)
    socket.once('close', () => resolve(out))
    socket.write(payload)
  })
}
