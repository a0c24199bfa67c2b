import t from 'tap'
import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, checkedOutAfterSettling, createOrganization, type TestOrganization } from '../../../support/helpers.js'
import {
  ack, createSubscription, getSubscription, idsOf, lease, leaseSome, NIL_LEASE, request, sendEvents, take, times,
  type ErrorBody, type Subscription
} from '../../../support/subscriptions.js'

/** Moves the subscription to `to`; throws unless it is 200. */
async function seek (app: FastifyInstance, organization: TestOrganization, id: string, to: string): Promise<Subscription> {
  const response = await request(app, organization, 'POST', `/api/subscriptions/${id}/seek`, { to })
  if (response.statusCode !== 200) throw new Error(`seek answered ${response.statusCode}: ${response.body}`)
  return response.json<Subscription>()
}

t.test('a pull subscription is created with its defaults, read, listed in creation order, changed and deleted', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)

  const created = await request(app, organization, 'POST', '/api/subscriptions', { kind: 'pull' })
  t.equal(created.statusCode, 201)
  const plain = created.json<Subscription>()
  t.equal(created.headers.location, `/api/subscriptions/${plain.id}`)
  t.match(plain, {
    id: /^[0-9a-f-]{36}$/,
    kind: 'pull',
    name: null,
    event_types: [],
    max_in_flight: 1000,
    max_attempts: 5,
    paused: false,
    position: String,
    pending: { in_flight: 0, available: 0, dead: 0 },
    created_at: String,
    updated_at: String
  })
  t.ok(Number.isFinite(Date.parse(plain.created_at)), 'created_at is a time')

  const named = await createSubscription(app, organization, { name: 'billing', event_types: ['order.*', 'invoice.paid'], max_in_flight: 10, max_attempts: 3 })
  t.match(named, { name: 'billing', event_types: ['order.*', 'invoice.paid'], max_in_flight: 10, max_attempts: 3, paused: false })
  t.not(named.id, plain.id)

  t.same(await getSubscription(app, organization, plain.id), plain, 'a read answers what creation answered')
  const listed = await request(app, organization, 'GET', '/api/subscriptions')
  t.equal(listed.statusCode, 200)
  t.same(listed.json<{ subscriptions: Subscription[] }>().subscriptions.map((subscription) => subscription.id), [plain.id, named.id], 'in creation order')

  const changed = await request(app, organization, 'PATCH', `/api/subscriptions/${named.id}`, {
    name: 'billing v2', event_types: ['invoice.*'], max_in_flight: 20, max_attempts: 7, paused: true
  })
  t.equal(changed.statusCode, 200)
  t.match(changed.json<Subscription>(), { id: named.id, name: 'billing v2', event_types: ['invoice.*'], max_in_flight: 20, max_attempts: 7, paused: true })
  t.ok(Date.parse(changed.json<Subscription>().updated_at) >= Date.parse(named.updated_at), 'updated_at does not go back')

  const resumed = await request(app, organization, 'PATCH', `/api/subscriptions/${named.id}`, { paused: false })
  t.match(resumed.json<Subscription>(), { name: 'billing v2', event_types: ['invoice.*'], max_in_flight: 20, max_attempts: 7, paused: false }, 'what a change leaves out stays')

  const deleted = await request(app, organization, 'DELETE', `/api/subscriptions/${plain.id}`)
  t.equal(deleted.statusCode, 204)
  t.equal(deleted.body, '')
  const gone = await request(app, organization, 'GET', `/api/subscriptions/${plain.id}`)
  t.equal(gone.statusCode, 404)
  t.equal(gone.json<ErrorBody>().code, 'not_found')
  t.equal((await request(app, organization, 'DELETE', `/api/subscriptions/${plain.id}`)).statusCode, 404, 'deleting twice is 404')
  const left = (await request(app, organization, 'GET', '/api/subscriptions')).json<{ subscriptions: Subscription[] }>()
  t.same(left.subscriptions.map((subscription) => subscription.id), [named.id])
})

t.test('deleting a subscription takes its state with it', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization, { start: 'beginning', max_attempts: 1 })
  await sendEvents(app, organization, times(4))
  const first = await leaseSome(app, organization, subscription.id, { limit: 2 })
  await request(app, organization, 'POST', `/api/subscriptions/${subscription.id}/release`, { lease_id: first.lease_id })
  const second = await lease(app, organization, subscription.id, { limit: 1 })
  t.equal(second.events.length, 1)
  t.match(await getSubscription(app, organization, subscription.id), { pending: { in_flight: 1, dead: 2 } }, 'a lease in flight and two dead letters')

  t.equal((await request(app, organization, 'DELETE', `/api/subscriptions/${subscription.id}`)).statusCode, 204)
  const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM subscription_events WHERE subscription_id = $1', [subscription.id])
  t.equal(rows[0]?.n, 0, 'no row of its pending set is left')
  t.equal((await request(app, organization, 'POST', `/api/subscriptions/${subscription.id}/lease`, {})).statusCode, 404)
  t.equal((await request(app, organization, 'POST', `/api/subscriptions/${subscription.id}/ack`, { lease_id: second.lease_id })).statusCode, 404)
})

t.test('create and change requests are validated', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const invalid = [
    {},
    { kind: 'webhook' },
    { kind: 'push', url: 'https://example.com/hook' },
    { kind: 'pull', name: 'x'.repeat(201) },
    { kind: 'pull', event_types: 'order.*' },
    { kind: 'pull', event_types: ['bad type'] },
    { kind: 'pull', event_types: ['order.*.x*'] },
    { kind: 'pull', start: 5 },
    { kind: 'pull', max_in_flight: 0 },
    { kind: 'pull', max_in_flight: 10001 },
    { kind: 'pull', max_in_flight: 1.5 },
    { kind: 'pull', max_attempts: 0 },
    { kind: 'pull', max_attempts: 1001 },
    { kind: 'pull', extra: true }
  ]
  for (const body of invalid) {
    const response = await request(app, organization, 'POST', '/api/subscriptions', body)
    t.equal(response.statusCode, 400, JSON.stringify(body))
    t.equal(response.json<ErrorBody>().code, 'validation_failed', JSON.stringify(body))
  }
  t.same((await request(app, organization, 'GET', '/api/subscriptions')).json(), { subscriptions: [] }, 'nothing was created')

  // The bounds themselves are accepted.
  const lowest = await createSubscription(app, organization, { max_in_flight: 1, max_attempts: 1, name: 'x'.repeat(200) })
  t.match(lowest, { max_in_flight: 1, max_attempts: 1 })
  t.equal(lowest.name?.length, 200)
  t.match(await createSubscription(app, organization, { max_in_flight: 10000, max_attempts: 1000 }), { max_in_flight: 10000, max_attempts: 1000 })

  for (const body of [{}, { kind: 'pull' }, { position: 'x' }, { max_in_flight: 0 }, { max_attempts: 1001 }, { paused: 'yes' }, { event_types: ['bad type'] }]) {
    const response = await request(app, organization, 'PATCH', `/api/subscriptions/${lowest.id}`, body)
    t.equal(response.statusCode, 400, `PATCH ${JSON.stringify(body)}`)
  }
  t.same(await getSubscription(app, organization, lowest.id), lowest, 'refused changes changed nothing')
  const anonymous = await app.inject({ method: 'GET', url: '/api/subscriptions' })
  t.equal(anonymous.statusCode, 401)
})

t.test('a start or seek target that does not parse is 400 invalid_start', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization)
  const encode = (text: string) => Buffer.from(text).toString('base64url')
  const unparseable = ['yesterday', 'later', '2024-13-45T00:00:00Z', '2024-01-01', '12:00', encode('abc'), encode('18446744073709551616.1'), 'x'.repeat(60)]
  for (const start of unparseable) {
    const created = await request(app, organization, 'POST', '/api/subscriptions', { kind: 'pull', start })
    t.equal(created.statusCode, 400, `start ${start}`)
    t.equal(created.json<ErrorBody>().code, 'invalid_start', `start ${start}`)
    const sought = await request(app, organization, 'POST', `/api/subscriptions/${subscription.id}/seek`, { to: start })
    t.equal(sought.statusCode, 400, `seek ${start}`)
    t.equal(sought.json<ErrorBody>().code, 'invalid_start', `seek ${start}`)
  }
  for (const body of [{}, { to: 5 }, { to: 'now', extra: 1 }]) {
    const response = await request(app, organization, 'POST', `/api/subscriptions/${subscription.id}/seek`, body)
    t.equal(response.statusCode, 400, `seek ${JSON.stringify(body)}`)
  }
  t.equal((await request(app, organization, 'GET', '/api/subscriptions')).json<{ subscriptions: Subscription[] }>().subscriptions.length, 1, 'nothing more was created')
  t.same(await getSubscription(app, organization, subscription.id), subscription, 'nor moved')
})

t.test('a start or seek time before the retained days is 400 start_before_retention, naming the oldest retained time', async (t) => {
  const app = await buildTestApp(t, { EVENT_RETENTION_DAYS: '7' })
  const organization = await createOrganization(app)
  // Retention keeps whole UTC days: today and the 7 before it.
  const today = new Date()
  const oldest = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate()) - 7 * 24 * 3600 * 1000
  const oldestDay = new Date(oldest).toISOString().slice(0, 10)
  const tooOld = new Date(oldest - 1).toISOString()

  const created = await request(app, organization, 'POST', '/api/subscriptions', { kind: 'pull', start: tooOld })
  t.equal(created.statusCode, 400)
  t.equal(created.json<ErrorBody>().code, 'start_before_retention')
  t.match(created.json<ErrorBody>().message, oldestDay, 'the message names the oldest retained time')

  const atOldest = await createSubscription(app, organization, { start: new Date(oldest).toISOString() })
  t.equal(atOldest.kind, 'pull', 'the oldest retained time itself is accepted')
  const sought = await request(app, organization, 'POST', `/api/subscriptions/${atOldest.id}/seek`, { to: new Date(oldest - 24 * 3600 * 1000).toISOString() })
  t.equal(sought.statusCode, 400)
  t.equal(sought.json<ErrorBody>().code, 'start_before_retention')
  t.match(sought.json<ErrorBody>().message, oldestDay)
})

t.test('an organization has at most SUBSCRIPTIONS_PER_ORGANIZATION subscriptions, also when created concurrently', async (t) => {
  const app = await buildTestApp(t, { SUBSCRIPTIONS_PER_ORGANIZATION: '3' })
  const organization = await createOrganization(app)
  const other = await createOrganization(app)

  const attempts = await Promise.all(Array.from({ length: 8 }, (_, i) => request(app, organization, 'POST', '/api/subscriptions', { kind: 'pull', name: `s${i}` })))
  const statuses = attempts.map((response) => response.statusCode)
  t.equal(statuses.filter((status) => status === 201).length, 3, 'three created')
  t.equal(statuses.filter((status) => status === 409).length, 5, 'the others refused')
  for (const refused of attempts.filter((response) => response.statusCode === 409)) t.equal(refused.json<ErrorBody>().code, 'subscription_limit_reached')
  t.equal((await request(app, organization, 'GET', '/api/subscriptions')).json<{ subscriptions: Subscription[] }>().subscriptions.length, 3)

  await createSubscription(app, other)
  t.pass('another organization has its own allowance')

  const first = attempts.find((response) => response.statusCode === 201)?.json<Subscription>()
  if (!first) throw new Error('nothing was created')
  t.equal((await request(app, organization, 'DELETE', `/api/subscriptions/${first.id}`)).statusCode, 204)
  t.equal((await request(app, organization, 'POST', '/api/subscriptions', { kind: 'pull' })).statusCode, 201, 'a deleted one frees its place')
  t.equal((await request(app, organization, 'POST', '/api/subscriptions', { kind: 'pull' })).statusCode, 409)
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('another organization\'s subscription answers 404 not_found on every route and is left untouched', async (t) => {
  const app = await buildTestApp(t)
  const owner = await createOrganization(app)
  const stranger = await createOrganization(app)
  const subscription = await createSubscription(app, owner, { start: 'beginning', max_attempts: 1 })
  await sendEvents(app, owner, times(2))
  const leased = await leaseSome(app, owner, subscription.id, { limit: 1 })
  await request(app, owner, 'POST', `/api/subscriptions/${subscription.id}/release`, { lease_id: leased.lease_id })
  const held = await lease(app, owner, subscription.id, { limit: 1 })
  const before = await getSubscription(app, owner, subscription.id)
  t.match(before, { pending: { in_flight: 1, dead: 1 } })

  const routes: Array<['GET' | 'POST' | 'PATCH' | 'DELETE', string, object?]> = [
    ['GET', ''],
    ['PATCH', '', { paused: true }],
    ['DELETE', ''],
    ['POST', '/lease', {}],
    ['POST', '/ack', { lease_id: held.lease_id }],
    ['POST', '/release', { lease_id: held.lease_id }],
    ['POST', '/extend', { lease_id: held.lease_id, lease_seconds: 5 }],
    ['POST', '/seek', { to: 'beginning' }],
    ['GET', '/dead-letters'],
    ['POST', '/dead-letters/redrive', {}]
  ]
  for (const [method, path, body] of routes) {
    const foreign = await request(app, stranger, method, `/api/subscriptions/${subscription.id}${path}`, body)
    t.equal(foreign.statusCode, 404, `${method} ${path} by another organization`)
    t.equal(foreign.json<ErrorBody>().code, 'not_found', `${method} ${path} by another organization`)
    const unknown = await request(app, owner, method, `/api/subscriptions/${randomUUID()}${path}`, body)
    t.equal(unknown.statusCode, 404, `${method} ${path} of an unknown id`)
  }
  t.same((await request(app, stranger, 'GET', '/api/subscriptions')).json(), { subscriptions: [] }, 'not listed to the other organization')
  t.same(await getSubscription(app, owner, subscription.id), before, 'nothing changed: not paused, not moved, not deleted')
  t.same(await ack(app, owner, subscription.id, { lease_id: held.lease_id }), { acknowledged: idsOf(held), not_found: [] }, 'the lease still holds its event')
})

t.test('start "now", the default, gets only events sent after the subscription was created', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  await sendEvents(app, organization, times(3))
  const byDefault = await createSubscription(app, organization)
  const explicit = await createSubscription(app, organization, { start: 'now' })
  for (const subscription of [byDefault, explicit]) t.same(await lease(app, organization, subscription.id), NIL_LEASE, 'nothing from before')
  const later = await sendEvents(app, organization, times(2))
  t.same(await take(app, organization, byDefault.id, later.length), later)
  t.same(await take(app, organization, explicit.id, later.length), later)
})

t.test('start "beginning" gets every retained event, in the inbox\'s order', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const sent = await sendEvents(app, organization, times(150))
  const subscription = await createSubscription(app, organization, { start: 'beginning' })
  t.same(await take(app, organization, subscription.id, sent.length), sent)
})

t.test('start at an inbox cursor gets the events after it', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const sent = await sendEvents(app, organization, times(5))
  const page = (await request(app, organization, 'GET', '/api/inbox?limit=2')).json<{ events: Array<{ event_id: string }>, next_cursor: string }>()
  t.same(page.events.map((event) => event.event_id), sent.slice(0, 2))
  const subscription = await createSubscription(app, organization, { start: page.next_cursor })
  t.same(await take(app, organization, subscription.id, 3), sent.slice(2))
})

t.test('start at a time gets the events created at or after it', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  await sendEvents(app, organization, times(2))
  // Between the two answers: the first events were committed before it, the later ones begin after it.
  const between = new Date().toISOString()
  const later = await sendEvents(app, organization, times(3))
  const subscription = await createSubscription(app, organization, { start: between })
  t.same(await take(app, organization, subscription.id, later.length), later)
})

t.test('position is the ack floor: it passes events acked out of order only once every earlier one is acked', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const sent = await sendEvents(app, organization, times(5))
  const subscription = await createSubscription(app, organization, { start: 'beginning' })
  const leased = await leaseSome(app, organization, subscription.id, { limit: 3 })
  t.same(idsOf(leased), sent.slice(0, 3))

  t.same(await ack(app, organization, subscription.id, { lease_id: leased.lease_id, event_ids: sent.slice(1, 3) }), { acknowledged: sent.slice(1, 3), not_found: [] })
  const held = await getSubscription(app, organization, subscription.id)
  t.equal(held.pending.in_flight, 1)
  // The first event, unacked, holds the floor: a subscription starting at the position gets every event again.
  const fromHeld = await createSubscription(app, organization, { start: held.position })
  t.same(await take(app, organization, fromHeld.id, sent.length), sent, 'the floor is before the unacked first event')

  await ack(app, organization, subscription.id, { lease_id: leased.lease_id })
  const passed = await getSubscription(app, organization, subscription.id)
  t.not(passed.position, held.position, 'the floor moved once the first event was acked')
  t.equal(passed.pending.in_flight, 0)
  const fromPassed = await createSubscription(app, organization, { start: passed.position })
  t.same(await take(app, organization, fromPassed.id, 2), sent.slice(3), 'the floor is past the three acked events, not past the others')
})

t.test('seek to "beginning" leases acked events again; seek to "now" passes over everything before', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const sent = await sendEvents(app, organization, times(4))
  const subscription = await createSubscription(app, organization, { start: 'beginning' })
  t.same(await take(app, organization, subscription.id, sent.length), sent)
  const done = await getSubscription(app, organization, subscription.id)

  const rewound = await seek(app, organization, subscription.id, 'beginning')
  t.equal(rewound.id, subscription.id)
  t.not(rewound.position, done.position, 'the answer has the new position')
  t.same(await take(app, organization, subscription.id, sent.length), sent, 'every acked event again, in order')

  await seek(app, organization, subscription.id, 'beginning')
  const skipped = await seek(app, organization, subscription.id, 'now')
  t.equal(skipped.pending.in_flight + skipped.pending.available, 0)
  t.same(await lease(app, organization, subscription.id), NIL_LEASE, 'nothing from before "now"')
  const later = await sendEvents(app, organization, times(1))
  t.same(await take(app, organization, subscription.id, later.length), later)
})

t.test('seek to a cursor or a time leases the events after it', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const early = await sendEvents(app, organization, times(3))
  const between = new Date().toISOString()
  const late = await sendEvents(app, organization, times(2))
  const subscription = await createSubscription(app, organization, { start: 'beginning' })
  t.same(await take(app, organization, subscription.id, 5), [...early, ...late])

  const page = (await request(app, organization, 'GET', '/api/inbox?limit=1')).json<{ next_cursor: string }>()
  await seek(app, organization, subscription.id, page.next_cursor)
  t.same(await take(app, organization, subscription.id, 4), [...early.slice(1), ...late], 'after the cursor')

  await seek(app, organization, subscription.id, between)
  t.same(await take(app, organization, subscription.id, late.length), late, 'from the time on')
})

t.test('seek ends the leases in flight and keeps the dead letters', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const sent = await sendEvents(app, organization, times(3))
  const subscription = await createSubscription(app, organization, { start: 'beginning', max_attempts: 1 })
  const doomed = await leaseSome(app, organization, subscription.id, { limit: 1 })
  await request(app, organization, 'POST', `/api/subscriptions/${subscription.id}/release`, { lease_id: doomed.lease_id })
  const inFlight = await lease(app, organization, subscription.id, { limit: 2, lease_seconds: 600 })
  t.same(idsOf(inFlight), sent.slice(1))

  const sought = await seek(app, organization, subscription.id, 'beginning')
  t.equal(sought.pending.in_flight, 0, 'no lease is in flight after a seek')
  t.equal(sought.pending.dead, 1, 'the dead letter stays')
  t.same(await ack(app, organization, subscription.id, { lease_id: inFlight.lease_id, event_ids: sent.slice(1) }), { acknowledged: [], not_found: sent.slice(1) },
    'the old lease acknowledges nothing')
  const extended = await request(app, organization, 'POST', `/api/subscriptions/${subscription.id}/extend`, { lease_id: inFlight.lease_id, lease_seconds: 60 })
  t.equal(extended.statusCode, 404)
  t.equal(extended.json<ErrorBody>().code, 'lease_not_found')

  const letters = (await request(app, organization, 'GET', `/api/subscriptions/${subscription.id}/dead-letters`)).json<{ events: Array<{ event_id: string }> }>()
  t.same(letters.events.map((event) => event.event_id), sent.slice(0, 1))
  const again = await lease(app, organization, subscription.id, { limit: 10 })
  t.same(idsOf(again).filter((id) => id !== sent[0]), sent.slice(1), 'the events that were in flight are leased again')
})
