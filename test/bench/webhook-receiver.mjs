// The usage webhook the benchmark's all-features gateway delivers to: answers 200 to every batch and counts the
// records (GET /count), so the benchmark can tell that every request was metered and delivered.
import { createServer } from 'node:http'

let records = 0
let batches = 0
const server = createServer((req, res) => {
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ records, batches }))
    return
  }
  const chunks = []
  req.on('data', (chunk) => chunks.push(chunk))
  req.on('end', () => {
    batches++
    records += JSON.parse(Buffer.concat(chunks).toString()).records.length
    res.writeHead(200)
    res.end()
  })
})
server.listen(0, '127.0.0.1', () => process.stdout.write(`listening http://127.0.0.1:${server.address().port}\n`))
process.once('SIGTERM', () => server.close(() => process.exit(0)))
