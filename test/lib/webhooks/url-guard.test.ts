import type { LookupAddress } from 'node:dns'
import t from 'tap'
import { checkUrlWithoutLookup, createGuardedLookup, isPublicAddress, refuseWebhookUrl, RefusedAddressError, type Resolver } from '../../../lib/webhooks/url-guard.js'

// IPv4-compatible IPv6 (::/96): each embeds an IPv4 address, public or not; the whole range is refused.
const IPV4_COMPATIBLE = ['::127.0.0.1', '::7f00:1', '::a9fe:a9fe', '::169.254.169.254', '0:0:0:0:0:0:10.0.0.1', '::8.8.8.8', '::1:2', '::']

const answering = (address: string): Resolver => (_hostname, _options, callback) => {
  queueMicrotask(() => callback(null, [{ address, family: 6 } satisfies LookupAddress]))
}

t.test('the ::/96 forms are not public addresses', async (t) => {
  for (const address of IPV4_COMPATIBLE) t.notOk(isPublicAddress(address), address)
  t.ok(isPublicAddress('2001:4860:4860::8888'), 'a public IPv6 address still passes')
  t.ok(isPublicAddress('8.8.8.8'), 'and a public IPv4 address')
  t.ok(isPublicAddress('::1:0:0:1'), 'an address just outside ::/96 is judged by its own range')
})

t.test('URLs with a ::/96 literal are refused at creation, in every spelling', async (t) => {
  for (const address of IPV4_COMPATIBLE) {
    const url = `http://[${address}]:8080/hook`
    const checked = checkUrlWithoutLookup(url, false)
    t.ok('refused' in checked, url)
    t.match(await refuseWebhookUrl(url, false), /non-public address/, url)
    t.notOk('refused' in checkUrlWithoutLookup(url, true), `${url} with WEBHOOK_ALLOW_PRIVATE_URLS`)
  }
})

t.test('a name resolving into ::/96 is refused at creation and at send time', async (t) => {
  for (const address of ['::7f00:1', '::a9fe:a9fe']) {
    t.match(await refuseWebhookUrl('http://hooks.example/x', false, answering(address)), /resolves to a non-public address/, address)
    const lookup = createGuardedLookup(answering(address))
    const error = await new Promise<unknown>((resolve) => { lookup('hooks.example', {}, (failure) => resolve(failure)) })
    t.type(error, RefusedAddressError, `${address}: the connection is refused before it is made`)
  }
})
