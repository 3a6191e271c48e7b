import { strict as assert } from 'node:assert'
import { createHmac } from 'node:crypto'
import { test } from 'node:test'
import { signPayload, verifySignature } from '../src/index.js'

const body = '{"records":[{"id":"a"}]}'

test('signPayload follows the contract: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>', () => {
  const expected = createHmac('sha256', 's3cret').update(`1700000000.${body}`).digest('hex')
  assert.equal(signPayload('s3cret', body, 1_700_000_000), `t=1700000000,v1=${expected}`)
  assert.equal(signPayload('s3cret', Buffer.from(body), 1_700_000_000), `t=1700000000,v1=${expected}`)
})

test('verifySignature accepts a fresh, matching signature (string or Buffer body)', () => {
  const header = signPayload('s3cret', body)
  assert.equal(verifySignature('s3cret', header, body), true)
  assert.equal(verifySignature('s3cret', header, Buffer.from(body)), true)
  assert.equal(verifySignature('s3cret', ` ${header.replace(',', ' , ')} `, body), true)
})

test('verifySignature rejects tampering, wrong secrets, stale timestamps and malformed headers', () => {
  const now = Math.floor(Date.now() / 1000)
  const header = signPayload('s3cret', body, now)
  assert.equal(verifySignature('s3cret', header, `${body} `), false, 'tampered body')
  assert.equal(verifySignature('other', header, body), false, 'wrong secret')
  assert.equal(verifySignature('s3cret', signPayload('s3cret', body, now - 301), body), false, 'too old')
  assert.equal(verifySignature('s3cret', signPayload('s3cret', body, now + 301), body), false, 'too far in the future')
  assert.equal(verifySignature('s3cret', signPayload('s3cret', body, now - 301), body, 600), true, 'custom tolerance')
  assert.equal(verifySignature('s3cret', header.replace(/t=\d+/, `t=${now - 1}`), body), false, 'timestamp is signed')
  assert.equal(verifySignature('s3cret', undefined, body), false)
  assert.equal(verifySignature('s3cret', [header, header], body), false)
  assert.equal(verifySignature('s3cret', '', body), false)
  assert.equal(verifySignature('s3cret', `t=${now}`, body), false)
  assert.equal(verifySignature('s3cret', header.split(',')[1], body), false, 'no timestamp')
  assert.equal(verifySignature('s3cret', `${header.slice(0, -2)}`, body), false, 'truncated signature')
})

test('verifySignature accepts any matching v1 among several (secret rotation)', () => {
  const now = Math.floor(Date.now() / 1000)
  const good = signPayload('new', body, now).split(',')[1]
  const bad = signPayload('old', body, now).split(',')[1]
  assert.equal(verifySignature('new', `t=${now},${bad},${good}`, body), true)
})
