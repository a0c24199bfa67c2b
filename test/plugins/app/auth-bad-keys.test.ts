import type { FastifyInstance } from 'fastify'
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { buildTestApp, createOrganization } from '../../support/helpers.js'

const BUDGET = 100
const ATTEMPTS = 10_000
// Requests in flight at once: the attacker does not wait for one answer before sending the next.
const CONCURRENCY = 100

const randomKey = () => `sk_${randomBytes(32).toString('base64url')}`
const randomHextet = () => randomBytes(2).toString('hex')
const randomIPv4 = () => [...randomBytes(4)].join('.')

/** Counts key lookups that reach the database (the query auth runs for a key memory cannot answer). */
function countKeyLookups (app: FastifyInstance): { lookups: number } {
  const counter = { lookups: 0 }
  const query = app.pg.query
  app.pg.query = ((...args: Parameters<typeof query>) => {
    const [first] = args as unknown[]
    if ((first as { name?: string } | null)?.name === 'organization-by-key-hash') counter.lookups++
    return query.apply(app.pg.pool, args)
  }) as typeof query
  return counter
}

interface Flood {
  /** Answers by status, of the requests counted. */
  statuses: Record<number, number>
  /** Requests counted: all that were sent, unless the rate-limit window ended first (see flood). */
  sent: number
  /** Key lookups made by the requests counted. */
  lookups: number
}

/**
 * Sends up to `count` requests built by `build`, CONCURRENCY at a time, and tallies the statuses and lookups of
 * those answered within the first rate-limit window of the flood. Budgets are per minute: should the flood
 * outlast that window (a slow machine), the batch that may have reached the next one and all after it are left
 * out, so the counts stay those of one window however long the requests take. The window's end comes from the
 * limiter's own first answers (x-ratelimit-reset, whole seconds, so one second less); without that header
 * (nothing limited) every batch counts.
 */
async function flood (app: FastifyInstance, counter: { lookups: number }, count: number, build: () => { url: string, remoteAddress: string, headers?: Record<string, string> }): Promise<Flood> {
  const result: Flood = { statuses: {}, sent: 0, lookups: 0 }
  const lookupsBefore = counter.lookups
  let windowOpenUntil = Number.POSITIVE_INFINITY
  while (result.sent < count) {
    const batchStarted = Date.now()
    const batch = await Promise.all(Array.from({ length: Math.min(CONCURRENCY, count - result.sent) }, () => {
      const { url, remoteAddress, headers = { 'x-api-key': randomKey() } } = build()
      return app.inject({ method: 'GET', url, remoteAddress, headers })
    }))
    if (result.sent === 0) {
      const resets = batch.map((response) => Number(response.headers['x-ratelimit-reset'])).filter((seconds) => Number.isFinite(seconds))
      if (resets.length > 0) windowOpenUntil = batchStarted + (Math.min(...resets) - 1) * 1000
    }
    if (Date.now() >= windowOpenUntil) break
    for (const response of batch) result.statuses[response.statusCode] = (result.statuses[response.statusCode] ?? 0) + 1
    result.sent += batch.length
    result.lookups = counter.lookups - lookupsBefore
  }
  return result
}

t.test('10 000 random keys from one IPv4 address cost at most its budget in lookups', async (t) => {
  const app = await buildTestApp(t, { RATE_LIMIT_ANONYMOUS: String(BUDGET) })
  const counter = countKeyLookups(app)
  const guess = () => ({ url: '/api/inbox', remoteAddress: '203.0.113.7' })
  const spent = await flood(app, counter, BUDGET, guess)
  t.same(spent.statuses, { 401: BUDGET }, 'the budget\'s guesses are answered')
  t.equal(spent.lookups, BUDGET, 'each at the cost of one lookup (the counter sees them)')

  const organization = await createOrganization(app)
  const lookupsBefore = counter.lookups
  const known = await app.inject({ method: 'GET', url: '/api/keys', headers: organization.headers, remoteAddress: '203.0.113.7' })
  t.equal(known.statusCode, 200, 'once spent, the address still gets a valid key looked up: the budget protects lookups of guesses')
  const lookupsForKnown = counter.lookups - lookupsBefore
  t.equal(lookupsForKnown, 1, 'a valid key not in memory yet is looked up once, whatever its address spent')
  const elsewhere = await app.inject({ method: 'GET', url: '/api/keys', headers: organization.headers, remoteAddress: '203.0.113.8' })
  t.equal(elsewhere.statusCode, 200, 'other addresses are unaffected')
  t.equal(counter.lookups, lookupsBefore + 1, 'the other address needed no second lookup: the key is in memory now')
  const cached = await app.inject({ method: 'GET', url: '/api/keys', headers: organization.headers, remoteAddress: '203.0.113.7' })
  t.equal(cached.statusCode, 200, 'a key already in memory needs no lookup and counts against its organization')

  const rest = await flood(app, counter, ATTEMPTS - BUDGET, guess)
  const statuses = { ...rest.statuses, 401: (spent.statuses[401] ?? 0) + (rest.statuses[401] ?? 0) }
  t.same(statuses, { 401: BUDGET, 429: rest.sent }, `${rest.sent} more guesses within the window are refused`)
  t.ok(rest.sent > 0)
  t.equal(counter.lookups, BUDGET + 1, `${BUDGET} lookups for ${BUDGET + rest.sent} guesses (and one for the real key)`)
})

t.test('10 000 random keys from addresses spread over one IPv6 /64 share one budget', async (t) => {
  const app = await buildTestApp(t, { RATE_LIMIT_ANONYMOUS: String(BUDGET) })
  const counter = countKeyLookups(app)
  const { statuses, sent, lookups } = await flood(app, counter, ATTEMPTS, () => ({
    url: '/api/inbox',
    remoteAddress: `2001:db8:5:7:${randomHextet()}:${randomHextet()}:${randomHextet()}:${randomHextet()}`
  }))
  t.same(statuses, { 401: BUDGET, 429: sent - BUDGET })
  t.ok(sent > BUDGET, `${sent} guesses within the window`)
  t.equal(lookups, BUDGET, `${lookups} lookups for ${sent} guesses`)
  const nextNetwork = await app.inject({ method: 'GET', url: '/api/inbox', remoteAddress: '2001:db8:5:8::1', headers: { 'x-api-key': randomKey() } })
  t.equal(nextNetwork.statusCode, 401, 'the neighbouring /64 has its own budget')
  t.equal(counter.lookups, BUDGET + 1, 'and its guess was looked up')
})

t.test('RATE_LIMIT_IPV6_PREFIX widens the group', async (t) => {
  const app = await buildTestApp(t, { RATE_LIMIT_ANONYMOUS: '2', RATE_LIMIT_IPV6_PREFIX: '48' })
  const { statuses, sent } = await flood(app, countKeyLookups(app), 3, () => ({ url: '/api/inbox', remoteAddress: `2001:db8:5:${randomHextet()}::1` }))
  t.same({ statuses, sent }, { statuses: { 401: 2, 429: 1 }, sent: 3 })
})

t.test('unknown routes and readiness are limited per address and never look a key up', async (t) => {
  const app = await buildTestApp(t, { RATE_LIMIT_ANONYMOUS: String(BUDGET) })
  const counter = countKeyLookups(app)
  const urls = ['/nope', '/api/nope', '/api/events/x/y/z', '/health/ready']
  let next = 0
  const { statuses, sent } = await flood(app, counter, 1000, () => ({ url: urls[next++ % urls.length] as string, remoteAddress: '198.51.100.20' }))
  t.equal((statuses[404] ?? 0) + (statuses[200] ?? 0), BUDGET, 'the budget is spent on unknown routes and readiness alike')
  t.ok(sent > BUDGET)
  t.equal(statuses[429], sent - BUDGET)
  t.equal(counter.lookups, 0, 'no key was looked up')
  const keyed = await app.inject({ method: 'GET', url: '/api/inbox', remoteAddress: '198.51.100.21', headers: { 'x-api-key': randomKey() } })
  t.equal(keyed.statusCode, 401)
  t.equal(counter.lookups, 1, 'while a key sent to a real route is looked up (the counter sees it)')
})

t.test('an unknown key is answered from memory when repeated', async (t) => {
  const app = await buildTestApp(t)
  const counter = countKeyLookups(app)
  const key = randomKey()
  const { statuses } = await flood(app, counter, 50, () => ({ url: '/api/inbox', remoteAddress: '198.51.100.30', headers: { 'x-api-key': key } }))
  t.same(statuses, { 401: 50 })
  t.ok(counter.lookups >= 1 && counter.lookups <= 50, `only the first requests, in flight together, looked it up (${counter.lookups})`)
  const again = await app.inject({ method: 'GET', url: '/api/inbox', remoteAddress: '198.51.100.30', headers: { 'x-api-key': key } })
  t.equal(again.statusCode, 401)
  const before = counter.lookups
  await app.inject({ method: 'GET', url: '/api/inbox', remoteAddress: '198.51.100.30', headers: { 'x-api-key': key } })
  t.equal(counter.lookups, before, 'a repeated unknown key costs no query')
  await app.inject({ method: 'GET', url: '/api/inbox', remoteAddress: '198.51.100.30', headers: { 'x-api-key': randomKey() } })
  t.equal(counter.lookups, before + 1, 'while a new one costs one')
})

/** A route that shows the address the service sees for the client. */
const showClientAddress = (app: FastifyInstance) => {
  app.get('/test/client-address', { config: { rateLimit: false } }, async (request) => ({ ip: request.ip }))
}

async function clientAddress (app: FastifyInstance, remoteAddress: string, forwardedFor: string): Promise<string> {
  const response = await app.inject({ method: 'GET', url: '/test/client-address', remoteAddress, headers: { 'x-forwarded-for': forwardedFor } })
  return response.json<{ ip: string }>().ip
}

t.test('forged X-Forwarded-For entries beyond the trusted hops buy no new budget', async (t) => {
  const app = await buildTestApp(t, { TRUST_PROXY: '1', RATE_LIMIT_ANONYMOUS: '5' }, showClientAddress)
  // The proxy (10.0.0.1) appends the address it saw; everything before that the client wrote itself.
  t.equal(await clientAddress(app, '10.0.0.1', '1.2.3.4, 198.51.100.7'), '198.51.100.7')
  const { statuses, sent } = await flood(app, countKeyLookups(app), 50, () => ({
    url: '/api/inbox',
    remoteAddress: '10.0.0.1',
    headers: { 'x-api-key': randomKey(), 'x-forwarded-for': `${randomIPv4()}, ${randomIPv4()}, 198.51.100.7` }
  }))
  t.same({ statuses, sent }, { statuses: { 401: 5, 429: 45 }, sent: 50 })
  const otherClient = await app.inject({ method: 'GET', url: '/api/inbox', remoteAddress: '10.0.0.1', headers: { 'x-forwarded-for': '198.51.100.8' } })
  t.equal(otherClient.statusCode, 401, 'another client behind the same proxy has its own budget')
})

t.test('with a list of proxies, only hops from those proxies are believed', async (t) => {
  const app = await buildTestApp(t, { TRUST_PROXY: '10.0.0.0/8, 192.0.2.1', RATE_LIMIT_ANONYMOUS: '5' }, showClientAddress)
  t.equal(await clientAddress(app, '10.0.0.1', '1.2.3.4, 198.51.100.7'), '198.51.100.7', 'the proxy\'s entry is the client')
  t.equal(await clientAddress(app, '10.0.0.1', '1.2.3.4, 10.9.9.9'), '1.2.3.4', 'a chain of trusted proxies is followed')
  t.equal(await clientAddress(app, '203.0.113.5', '1.2.3.4'), '203.0.113.5', 'a client connecting directly cannot forward for anyone')
  const { statuses, sent } = await flood(app, countKeyLookups(app), 50, () => ({
    url: '/api/inbox',
    remoteAddress: '203.0.113.5',
    headers: { 'x-api-key': randomKey(), 'x-forwarded-for': randomIPv4() }
  }))
  t.same({ statuses, sent }, { statuses: { 401: 5, 429: 45 }, sent: 50 })
})

t.test('TRUST_PROXY=true no longer trusts every hop; bad values stop start-up', async (t) => {
  const app = await buildTestApp(t, { TRUST_PROXY: 'true' }, showClientAddress)
  t.equal(await clientAddress(app, '10.0.0.1', '1.2.3.4, 198.51.100.7'), '198.51.100.7', 'read as one hop')
  const direct = await buildTestApp(t, { TRUST_PROXY: 'false' }, showClientAddress)
  t.equal(await clientAddress(direct, '10.0.0.1', '1.2.3.4'), '10.0.0.1')
  await t.rejects(buildTestApp(t, { TRUST_PROXY: 'yes please' }), { message: /TRUST_PROXY/ })
})
