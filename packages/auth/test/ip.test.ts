import { strict as assert } from 'node:assert'
import { test } from 'node:test'
import type { ConfigProblem } from '@llmproxy/core'
import { compileIpList, IpRules } from '../src/ip.js'
import { build, KEY_A, type Seen } from './helpers.js'

const keys = [{ id: 'team-a', key: KEY_A }]
const withKey = { 'x-api-key': KEY_A }

test('IPv4 CIDR allowlist: listed addresses pass, others get 403 permission_error llmproxy_ip_denied', async (t) => {
  const { app, rejections } = await build({ keys, ipAllowlist: ['10.0.0.0/8', '192.168.1.7'] })
  t.after(() => app.close())
  for (const ip of ['10.0.0.1', '10.255.255.254', '192.168.1.7']) {
    const res = await app.inject({ url: '/v1/whoami', remoteAddress: ip, headers: withKey })
    assert.equal(res.statusCode, 200, ip)
  }
  for (const ip of ['11.0.0.1', '192.168.1.8', '127.0.0.1', '2001:db8::1']) {
    const res = await app.inject({ url: '/v1/whoami', remoteAddress: ip, headers: withKey })
    assert.equal(res.statusCode, 403, ip)
    assert.deepEqual(res.json(), {
      error: { message: 'Requests from this address are not allowed.', type: 'permission_error', param: null, code: 'llmproxy_ip_denied' },
    })
  }
  assert.equal(rejections.length, 4)
  assert.deepEqual(rejections[0], { reason: 'ip', keyId: null, statusCode: 403 })
})

test('the IP check comes before the key check: a denied address gets 403 even without a key', async (t) => {
  const { app } = await build({ keys, ipDenylist: ['203.0.113.0/24'] })
  t.after(() => app.close())
  assert.equal((await app.inject({ url: '/v1/whoami', remoteAddress: '203.0.113.9' })).statusCode, 403)
  assert.equal((await app.inject({ url: '/v1/whoami', remoteAddress: '203.0.114.9' })).statusCode, 401)
  assert.equal((await app.inject({ url: '/v1/whoami', remoteAddress: '203.0.114.9', headers: withKey })).statusCode, 200)
})

test('the denylist is checked first: an address in both lists is refused', async (t) => {
  const { app } = await build({ keys, ipAllowlist: ['10.0.0.0/8'], ipDenylist: ['10.1.0.0/16'] })
  t.after(() => app.close())
  assert.equal((await app.inject({ url: '/v1/whoami', remoteAddress: '10.1.2.3', headers: withKey })).statusCode, 403)
  assert.equal((await app.inject({ url: '/v1/whoami', remoteAddress: '10.2.2.3', headers: withKey })).statusCode, 200)
})

test('IPv6 CIDRs in both lists', async (t) => {
  const { app } = await build({ keys, ipAllowlist: ['2001:db8::/32', '::1'], ipDenylist: ['2001:db8:bad::/48'] })
  t.after(() => app.close())
  const status = async (ip: string) => (await app.inject({ url: '/v1/whoami', remoteAddress: ip, headers: withKey })).statusCode
  assert.equal(await status('2001:db8::1'), 200)
  assert.equal(await status('2001:DB8:ffff::1'), 200)
  assert.equal(await status('::1'), 200)
  assert.equal(await status('2001:db8:bad::1'), 403)
  assert.equal(await status('2001:db9::1'), 403)
  assert.equal(await status('10.0.0.1'), 403)
})

test('IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) match IPv4 rules', async (t) => {
  const { app } = await build({ keys, ipAllowlist: ['10.0.0.0/8'], ipDenylist: ['10.9.9.9'] })
  t.after(() => app.close())
  const status = async (ip: string) => (await app.inject({ url: '/v1/whoami', remoteAddress: ip, headers: withKey })).statusCode
  assert.equal(await status('::ffff:10.1.2.3'), 200)
  assert.equal(await status('::ffff:10.9.9.9'), 403)
  assert.equal(await status('::ffff:11.1.2.3'), 403)
})

test('with trustProxy the client address is the one x-forwarded-for names; without it the header is ignored', async (t) => {
  const trusted = await build({ keys, ipAllowlist: ['198.51.100.0/24'] }, { trustProxy: '127.0.0.1' })
  const untrusted = await build({ keys, ipAllowlist: ['198.51.100.0/24'] })
  t.after(() => Promise.all([trusted.app.close(), untrusted.app.close()]))
  const headers = { ...withKey, 'x-forwarded-for': '198.51.100.20' }
  assert.equal((await trusted.app.inject({ url: '/v1/whoami', remoteAddress: '127.0.0.1', headers })).statusCode, 200)
  // A forwarded-for from an untrusted hop is not believed.
  assert.equal((await trusted.app.inject({ url: '/v1/whoami', remoteAddress: '127.0.0.2', headers })).statusCode, 403)
  assert.equal((await untrusted.app.inject({ url: '/v1/whoami', remoteAddress: '127.0.0.1', headers })).statusCode, 403)
  const spoofed = { ...withKey, 'x-forwarded-for': '198.51.100.20, 203.0.113.5' }
  const res = await trusted.app.inject({ url: '/v1/whoami', remoteAddress: '127.0.0.1', headers: spoofed })
  assert.equal(res.statusCode, 403, 'a spoofed leftmost value is not believed: the nearest untrusted hop decides')
})

test('IPv6 forwarded addresses with trustProxy: true', async (t) => {
  const { app } = await build({ keys, ipDenylist: ['2001:db8::/32'] }, { trustProxy: true })
  t.after(() => app.close())
  const res = await app.inject({ url: '/v1/whoami', headers: { ...withKey, 'x-forwarded-for': '2001:db8::42' } })
  assert.equal(res.statusCode, 403)
  const ok = await app.inject({ url: '/v1/whoami', headers: { ...withKey, 'x-forwarded-for': '2001:db9::42' } })
  assert.equal(ok.json<Seen>().keyId, 'team-a')
})

test('IpRules: an address that cannot be parsed is refused only when an allowlist is set', () => {
  const problems: ConfigProblem[] = []
  const allowOnly = new IpRules(compileIpList(['10.0.0.0/8'], '/ipAllowlist', problems), null)
  const denyOnly = new IpRules(null, compileIpList(['10.0.0.0/8'], '/ipDenylist', problems))
  assert.deepEqual(problems, [])
  assert.equal(allowOnly.allows('not-an-ip'), false)
  assert.equal(denyOnly.allows('not-an-ip'), true)
  assert.equal(denyOnly.allows('10.0.0.1'), false)
  assert.equal(allowOnly.allows('10.0.0.1'), true)
})
