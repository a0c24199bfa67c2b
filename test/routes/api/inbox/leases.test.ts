import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, checkedOutAfterSettling, createOrganization, sendEvent, type TestOrganization } from '../../../support/helpers.js'

interface LeaseResponse {
  lease_id: string | null
  leased_until: string | null
  events: Array<{ event_id: string, lease_count: number, type: string, payload: object }>
}

async function post (app: FastifyInstance, organization: TestOrganization, url: string, payload: object) {
  const response = await app.inject({ method: 'POST', url, headers: organization.headers, payload })
  return { statusCode: response.statusCode, body: response.json() }
}

async function lease (app: FastifyInstance, organization: TestOrganization, body: object = {}): Promise<LeaseResponse> {
  const response = await post(app, organization, '/api/inbox/lease', body)
  if (response.statusCode !== 200) throw new Error(`lease failed: ${JSON.stringify(response.body)}`)
  return response.body
}

async function sendEvents (app: FastifyInstance, organization: TestOrganization, count: number, type = 'lease.test'): Promise<string[]> {
  const ids: string[] = []
  for (let start = 0; start < count; start += 100) {
    const events = Array.from({ length: Math.min(100, count - start) }, (_, i) => ({ type, payload: { n: start + i } }))
    const response = await post(app, organization, '/api/events/batch', { events })
    ids.push(...response.body.results.map((result: { event_id: string }) => result.event_id))
  }
  return ids
}

const idsOf = (leased: LeaseResponse) => leased.events.map((event) => event.event_id)

/**
 * Ends a lease now, as if its time had run out: the tests lease for long (nothing they check before this can
 * outlast it, however slow the machine) and end the lease on purpose before they look at what expiry does.
 */
async function expireLease (app: FastifyInstance, leaseId: string | null): Promise<void> {
  const { rowCount } = await app.pg.query('UPDATE events SET leased_until = now() WHERE lease_id = $1 AND leased_until > now()', [leaseId])
  if (rowCount === 0) throw new Error(`lease ${String(leaseId)} held nothing to expire`)
}

t.test('a lease hands out the oldest available events, each to one lease', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const sent = await sendEvents(app, organization, 3)

  const asked = Date.now()
  const first = await lease(app, organization, { limit: 2 })
  const answered = Date.now()
  t.match(first, { lease_id: /^[0-9a-f-]{36}$/, leased_until: String })
  t.same(idsOf(first), sent.slice(0, 2))
  t.match(first.events[0], { type: 'lease.test', payload: { n: 0 }, lease_count: 1, dedup_id: null, source: null, created_at: String })
  // 300 s from the moment the lease was taken, somewhere between asking and the answer (a second for the clocks).
  const leasedUntil = Date.parse(first.leased_until ?? '')
  t.ok(leasedUntil >= asked + 299_000 && leasedUntil <= answered + 301_000, 'default lease is 300 s')

  const second = await lease(app, organization)
  t.same(idsOf(second), sent.slice(2))
  t.not(second.lease_id, first.lease_id)
  t.same(await lease(app, organization), { lease_id: null, leased_until: null, events: [] }, 'nothing left to lease')
})

t.test('ack by lease acknowledges only what the lease still holds', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const [a, b, c] = await sendEvents(app, organization, 3)
  const leased = await lease(app, organization, { limit: 2 })

  const partial = await post(app, organization, '/api/inbox/ack', { lease_id: leased.lease_id, event_ids: [a, c] })
  t.same(partial.body, { acknowledged: [a], not_found: [c] }, 'c was never in this lease')
  const rest = await post(app, organization, '/api/inbox/ack', { lease_id: leased.lease_id })
  t.same(rest.body, { acknowledged: [b], not_found: [] })
  const again = await post(app, organization, '/api/inbox/ack', { lease_id: leased.lease_id })
  t.same(again.body, { acknowledged: [], not_found: [] }, 'acknowledging twice does nothing more')
  const event = await app.inject({ method: 'GET', url: `/api/events/${a}`, headers: organization.headers })
  t.match(event.json(), { status: 'acknowledged', acknowledged_at: String })
})

t.test('an expired lease returns its events; its lease_id can no longer ack them', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const sent = await sendEvents(app, organization, 2)
  const stale = await lease(app, organization, { lease_seconds: 3600 })
  t.same(await lease(app, organization), { lease_id: null, leased_until: null, events: [] }, 'invisible while leased')
  await expireLease(app, stale.lease_id)

  const fresh = await lease(app, organization)
  t.same(idsOf(fresh), sent, 'the events came back after the lease expired')
  t.same(fresh.events.map((event) => event.lease_count), [2, 2])

  const staleAck = await post(app, organization, '/api/inbox/ack', { lease_id: stale.lease_id, event_ids: sent })
  t.same(staleAck.body, { acknowledged: [], not_found: sent }, 'a stale lease cannot acknowledge re-leased work')
  const staleRelease = await post(app, organization, '/api/inbox/release', { lease_id: stale.lease_id })
  t.same(staleRelease.body, { released: [] })
  const freshAck = await post(app, organization, '/api/inbox/ack', { lease_id: fresh.lease_id })
  t.same(freshAck.body.acknowledged.sort(), [...sent].sort())
})

t.test('release returns events at once; extend keeps them longer', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const [a, b] = await sendEvents(app, organization, 2)

  const leased = await lease(app, organization)
  const released = await post(app, organization, '/api/inbox/release', { lease_id: leased.lease_id, event_ids: [b] })
  t.same(released.body, { released: [b] })
  const relet = await lease(app, organization)
  t.same(idsOf(relet), [b], 'the released event is available immediately')
  t.equal(relet.events[0]?.lease_count, 2)

  const short = await lease(app, organization, { lease_seconds: 1 })
  t.same(short.events, [], 'a is still leased')
  const extended = await post(app, organization, '/api/inbox/extend', { lease_id: leased.lease_id, lease_seconds: 600 })
  t.equal(extended.statusCode, 200)
  t.same(extended.body.event_ids, [a])
  t.ok(Date.parse(extended.body.leased_until) > Date.parse(leased.leased_until ?? ''), 'leased_until moved forward')

  const unknown = await post(app, organization, '/api/inbox/extend', { lease_id: '00000000-0000-4000-8000-000000000000', lease_seconds: 10 })
  t.equal(unknown.statusCode, 404)
  t.equal(unknown.body.code, 'lease_not_found')
})

t.test('events leased INBOX_MAX_LEASES times without ack are quarantined, and can be requeued', async (t) => {
  const app = await buildTestApp(t, { INBOX_MAX_LEASES: '2' })
  const organization = await createOrganization(app)
  const [poison] = await sendEvents(app, organization, 1, 'poison')
  for (let attempt = 1; attempt <= 2; attempt++) {
    const leased = await lease(app, organization)
    t.same(idsOf(leased), [poison])
    t.equal(leased.events[0]?.lease_count, attempt)
    await post(app, organization, '/api/inbox/release', { lease_id: leased.lease_id })
  }
  t.same((await lease(app, organization)).events, [], 'a quarantined event is not leased again')
  const quarantined = await app.inject({ method: 'GET', url: '/api/inbox?status=quarantined', headers: organization.headers })
  t.same(quarantined.json().events.map((event: { event_id: string, status: string }) => [event.event_id, event.status]), [[poison, 'quarantined']])

  const requeued = await post(app, organization, `/api/inbox/quarantine/${poison}/requeue`, {})
  t.equal(requeued.statusCode, 200)
  t.match(requeued.body, { event_id: poison, status: 'pending' })
  const again = await lease(app, organization, { lease_seconds: 3600 })
  t.same(idsOf(again), [poison])
  t.equal(again.events[0]?.lease_count, 1, 'lease_count starts over')

  const notQuarantined = await post(app, organization, `/api/inbox/quarantine/${poison}/requeue`, {})
  t.equal(notQuarantined.statusCode, 404)

  // The expiry path: after its last allowed lease runs out, the event moves to the quarantine too.
  await expireLease(app, again.lease_id)
  const second = await lease(app, organization, { lease_seconds: 3600 })
  t.equal(second.events[0]?.lease_count, 2)
  await expireLease(app, second.lease_id)
  t.same((await lease(app, organization)).events, [])
  const listed = await app.inject({ method: 'GET', url: '/api/inbox?status=quarantined', headers: organization.headers })
  t.equal(listed.json().count, 1)
})

t.test('10 concurrent consumers share 1 000 events: each handed out exactly once, all acked', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const sent = await sendEvents(app, organization, 1000, 'load')
  const received: string[] = []
  const consumer = async () => {
    for (;;) {
      const leased = await lease(app, organization, { limit: 25, lease_seconds: 600 })
      if (leased.events.length === 0) return
      received.push(...idsOf(leased))
      const acked = await post(app, organization, '/api/inbox/ack', { lease_id: leased.lease_id })
      if (acked.body.acknowledged.length !== leased.events.length) t.fail('a lease could not ack all its events')
    }
  }
  await Promise.all(Array.from({ length: 10 }, consumer))
  t.equal(received.length, 1000, 'no event was handed out twice')
  t.same(new Set(received), new Set(sent), 'every event was handed out')
  const pending = await app.inject({ method: 'GET', url: '/api/inbox', headers: organization.headers })
  t.equal(pending.json().count, 0, 'nothing is left')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('leases are isolated per organization', async (t) => {
  const app = await buildTestApp(t, { INBOX_MAX_LEASES: '1' })
  const owner = await createOrganization(app)
  const stranger = await createOrganization(app)
  const [mine] = await sendEvents(app, owner, 1)
  const leased = await lease(app, owner)
  t.same((await lease(app, stranger)).events, [], 'another organization sees none of these events')
  t.same((await post(app, stranger, '/api/inbox/ack', { lease_id: leased.lease_id, event_ids: [mine] })).body, { acknowledged: [], not_found: [mine] })
  t.same((await post(app, stranger, '/api/inbox/release', { lease_id: leased.lease_id })).body, { released: [] })
  t.equal((await post(app, stranger, '/api/inbox/extend', { lease_id: leased.lease_id, lease_seconds: 5 })).statusCode, 404)
  await post(app, owner, '/api/inbox/release', { lease_id: leased.lease_id })
  t.equal((await post(app, stranger, `/api/inbox/quarantine/${mine}/requeue`, {})).statusCode, 404)
  t.equal((await post(app, owner, `/api/inbox/quarantine/${mine}/requeue`, {})).statusCode, 200)
})

t.test('the core ack endpoint works on leased events', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const { event_id: eventId } = (await sendEvent(app, organization, { type: 'x', payload: {} })).json()
  const leased = await lease(app, organization)
  const acked = await app.inject({ method: 'POST', url: `/api/events/${eventId}/ack`, headers: organization.headers })
  t.equal(acked.statusCode, 200)
  t.same((await post(app, organization, '/api/inbox/ack', { lease_id: leased.lease_id })).body, { acknowledged: [], not_found: [] })
})

t.test('lease requests are validated', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const bad = [{ limit: 0 }, { limit: 101 }, { lease_seconds: 0 }, { lease_seconds: 3601 }, { wait_seconds: 21 }, { extra: 1 }]
  for (const body of bad) t.equal((await post(app, organization, '/api/inbox/lease', body)).statusCode, 400, JSON.stringify(body))
  t.equal((await post(app, organization, '/api/inbox/ack', { lease_id: 'nope' })).statusCode, 400)
  t.equal((await post(app, organization, '/api/inbox/extend', { lease_id: '00000000-0000-4000-8000-000000000000' })).statusCode, 400)
  const anonymous = await app.inject({ method: 'POST', url: '/api/inbox/lease', payload: {} })
  t.equal(anonymous.statusCode, 401)
})
