import ipaddr from 'ipaddr.js'
import { lookup, type LookupAddress, type LookupAllOptions } from 'node:dns'
import { BlockList, isIPv6 } from 'node:net'

/**
 * How names are resolved: dns.lookup's callback form with `all: true`. Injectable so a test can play a DNS
 * server that answers differently each time (rebinding) without any real resolution or connection.
 */
export type Resolver = (hostname: string, options: LookupAllOptions, callback: (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void) => void

const systemResolver: Resolver = (hostname, options, callback) => lookup(hostname, options, callback)

function resolveAll (resolve: Resolver, hostname: string): Promise<LookupAddress[]> {
  return new Promise((resolvePromise, reject) => {
    resolve(hostname, { all: true }, (error, addresses) => error ? reject(error) : resolvePromise(addresses))
  })
}

/**
 * IPv4-compatible IPv6 addresses (::/96, deprecated by RFC 4291) embed an IPv4 address, such as ::127.0.0.1 or
 * ::a9fe:a9fe (169.254.169.254), yet ipaddr.js calls them unicast; its parser also reads `::a.b.c.d` as the
 * IPv4-mapped form, so the range is checked with node's own parser.
 */
const IPV4_COMPATIBLE = new BlockList()
IPV4_COMPATIBLE.addSubnet('::', 96, 'ipv6')

/** A public unicast address (no loopback, private, link-local such as cloud metadata, or other reserved ranges). */
export function isPublicAddress (address: string): boolean {
  if (isIPv6(address) && IPV4_COMPATIBLE.check(address, 'ipv6')) return false
  return ipaddr.isValid(address) && ipaddr.process(address).range() === 'unicast'
}

const privateHint = 'set WEBHOOK_ALLOW_PRIVATE_URLS=true to allow it'

/** The URL's host without IPv6 brackets. */
const hostOf = (url: URL) => url.hostname.replace(/^\[|\]$/g, '')

/**
 * What can be said of a URL without resolving it: absolute http(s), no credentials, and, when its host is an
 * IP literal (which connects without a lookup), a public address. Returns the parsed URL, or why it is refused.
 */
export function checkUrlWithoutLookup (url: string, allowPrivate: boolean): { url: URL } | { refused: string } {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return { refused: 'url must be an absolute http(s) URL' }
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return { refused: 'url must use http or https' }
  if (parsed.username || parsed.password) return { refused: 'url must not contain credentials' }
  const host = hostOf(parsed)
  if (!allowPrivate && ipaddr.isValid(host) && !isPublicAddress(host)) return { refused: `host ${host} is a non-public address; ${privateHint}` }
  return { url: parsed }
}

/**
 * SSRF guard at creation time: the URL passes checkUrlWithoutLookup and every address its host resolves to
 * now is public. Returns the reason it is refused, or undefined when it is allowed. (At send time the check
 * is made on the address actually connected to: see createGuardedLookup.)
 */
export async function refuseWebhookUrl (url: string, allowPrivate: boolean, resolve: Resolver = systemResolver): Promise<string | undefined> {
  const checked = checkUrlWithoutLookup(url, allowPrivate)
  if ('refused' in checked) return checked.refused
  if (allowPrivate) return undefined
  const host = hostOf(checked.url)
  if (ipaddr.isValid(host)) return undefined
  let addresses: string[]
  try {
    addresses = (await resolveAll(resolve, host)).map((entry) => entry.address)
  } catch {
    return `host ${host} does not resolve`
  }
  const blocked = addresses.find((address) => !isPublicAddress(address))
  return blocked === undefined ? undefined : `host ${host} resolves to a non-public address (${blocked}); ${privateHint}`
}

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void

/** An error the sender reports as a refusal rather than a connection failure. */
export class RefusedAddressError extends Error {
  override readonly name = 'RefusedAddressError'
}

export type GuardedLookup = (hostname: string, options: { all?: boolean, family?: number | string }, callback: LookupCallback) => void

/**
 * A `lookup` for outgoing webhook connections: resolves (with `resolve`, the system resolver by default), then
 * refuses the connection when any address is not public. Because the socket connects to exactly the address
 * checked here, a name that answers a public address to an earlier check and a private one now (DNS
 * rebinding) cannot slip through.
 */
export const createGuardedLookup = (resolve: Resolver = systemResolver): GuardedLookup => (hostname, options, callback) => {
  resolve(hostname, { ...options, all: true } as LookupAllOptions, (error, addresses) => {
    if (error) return callback(error, [])
    const blocked = addresses.find((entry) => !isPublicAddress(entry.address))
    if (blocked !== undefined) {
      return callback(new RefusedAddressError(`host ${hostname} resolves to a non-public address (${blocked.address}); ${privateHint}`), [])
    }
    if (options.all === true) return callback(null, addresses)
    const [first] = addresses
    if (first === undefined) return callback(Object.assign(new Error(`host ${hostname} has no address`), { code: 'ENOTFOUND' }), [])
    callback(null, first.address, first.family)
  })
}
