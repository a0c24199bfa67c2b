import ipaddr from 'ipaddr.js'
import { lookup } from 'node:dns/promises'

/**
 * SSRF guard: a webhook URL must be absolute http(s) and every address its host resolves to must be public
 * unicast (no loopback, private, link-local such as cloud metadata, or other reserved ranges).
 * Returns the reason it is refused, or undefined when it is allowed.
 */
export async function refuseWebhookUrl (url: string, allowPrivate: boolean): Promise<string | undefined> {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return 'url must be an absolute http(s) URL'
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return 'url must use http or https'
  if (parsed.username || parsed.password) return 'url must not contain credentials'
  if (allowPrivate) return undefined
  const host = parsed.hostname.replace(/^\[|\]$/g, '')
  let addresses: string[]
  try {
    addresses = ipaddr.isValid(host) ? [host] : (await lookup(host, { all: true })).map((entry) => entry.address)
  } catch {
    return `host ${host} does not resolve`
  }
  const blocked = addresses.find((address) => {
    const parsedAddress = ipaddr.process(address)
    return parsedAddress.range() !== 'unicast'
  })
  return blocked === undefined ? undefined : `host ${host} resolves to a non-public address (${blocked}); set WEBHOOK_ALLOW_PRIVATE_URLS=true to allow it`
}
