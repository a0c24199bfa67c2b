import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, checkedOutAfterSettling, createOrganization, sendEvent, type TestOrganization } from '../../../support/helpers.js'
import {
  ack, createSubscription, idsOf, lease, NIL_LEASE, request, sendEvents, take,
  type Lease, type Subscription
} from '../../../support/subscriptions.js'
import { waitFor } from '../../../support/webhooks.js'

interface InboxPage {
  events: Array<{ event_id: string, status: string }>
  next_cursor: string
  has_more: boolean
}

async function patch (app: FastifyInstance, organization: TestOrganization, id: string, body: object): Promise<Subscription> {
  const response = await request(app, organization, 'PATCH', `/api/subscriptions/${id}`, body)
  if (response.statusCode !== 200) throw new Error(`PATCH answered ${response.statusCode}: ${response.body}`)
  return response.json<Subscription>()
}

/** Every event of the organization's inbox in its cursor order: with status=all, or only those still pending. */
async function inbox (app: FastifyInstance, organization: TestOrganization, status: 'all' | 'pending'): Promise<string[]> {
  const ids: string[] = []
  let cursor: string | null = null
  for (;;) {
    const query: string = `?status=${status}&limit=100${cursor === null ? '' : `&cursor=${cursor}`}`
    const response = await request(app, organization, 'GET', `/api/inbox${query}`)
    if (response.statusCode !== 200) throw new Error(`inbox answered ${response.statusCode}: ${response.body}`)
    const page = response.json<InboxPage>()
    ids.push(...page.events.map((event) => event.event_id))
    if (!page.has_more) return ids
    cursor = page.next_cursor
  }
}

/** What one subscription's consumers were handed. */
interface Consumed {
  received: string[]
  /** Events handed out with a lease_count above 1, which only an expired or released lease should cause. */
  releasedAgain: number
  /** Lease acks that did not acknowledge every event of the lease. */
  shortAcks: number
}

/**
 * `consumers` loops that lease and ack until `enough` says so (asked before each lease). An empty lease is no proof
 * of the end: a subscription reads new events only once every transaction older than theirs has ended on the
 * server, as the inbox's cursors do. Each lease is a short long poll, woken by new events.
 */
async function consume (app: FastifyInstance, organization: TestOrganization, id: string, consumers: number, enough: (consumed: Consumed) => boolean): Promise<Consumed> {
  const consumed: Consumed = { received: [], releasedAgain: 0, shortAcks: 0 }
  const consumer = async () => {
    while (!enough(consumed)) {
      const leased = await lease(app, organization, id, { limit: 20, lease_seconds: 600, wait_seconds: 1 })
      if (leased.lease_id === null) continue
      consumed.received.push(...idsOf(leased))
      consumed.releasedAgain += leased.events.filter((event) => event.lease_count !== 1).length
      const { acknowledged } = await ack(app, organization, id, { lease_id: leased.lease_id })
      if (acknowledged.length !== leased.events.length) consumed.shortAcks++
    }
  }
  await Promise.all(Array.from({ length: consumers }, consumer))
  return consumed
}

const TYPES = ['order.created', 'user.created', 'order.paid', 'invoice.paid', 'user.deleted']

t.test('two subscriptions with different filters each get every matching event exactly once while 8 writers post, and the inbox keeps them all', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const orders = await createSubscription(app, organization, { name: 'orders', event_types: ['order.*'] })
  // Overlaps with orders on order.paid, so acking there must not hide it here, nor here there.
  const people = await createSubscription(app, organization, { name: 'people', event_types: ['user.*', 'order.paid'] })

  const accepted: Array<{ id: string, type: string }> = []
  let writing = true
  const writers = Array.from({ length: 8 }, async (_, writer) => {
    for (let i = 0; i < 50; i++) {
      const type = TYPES[(writer + i) % TYPES.length] as string
      const response = await sendEvent(app, organization, { type, payload: { writer, i } })
      if (response.statusCode === 201) accepted.push({ id: response.json<{ event_id: string }>().event_id, type })
    }
  })
  const matching = (prefixes: string[]) => accepted.filter((event) => prefixes.some((prefix) => event.type === prefix || event.type.startsWith(prefix))).map((event) => event.id)
  const expectedOrders = () => matching(['order.'])
  const expectedPeople = () => matching(['user.', 'order.paid'])

  const consuming = Promise.all([
    consume(app, organization, orders.id, 2, (consumed) => !writing && consumed.received.length >= expectedOrders().length),
    consume(app, organization, people.id, 2, (consumed) => !writing && consumed.received.length >= expectedPeople().length)
  ])
  await Promise.all(writers)
  writing = false
  const [ordersConsumed, peopleConsumed] = await consuming

  t.equal(accepted.length, 400, 'every write accepted')
  const outcomes = [['orders', orders.id, ordersConsumed, expectedOrders()], ['people', people.id, peopleConsumed, expectedPeople()]] as const
  for (const [name, id, consumed, expected] of outcomes) {
    t.equal(consumed.received.length, expected.length, `${name}: as many events handed out as match`)
    t.equal(new Set(consumed.received).size, consumed.received.length, `${name}: none twice`)
    t.same(new Set(consumed.received), new Set(expected), `${name}: every matching event, and no other`)
    t.equal(consumed.releasedAgain, 0, `${name}: every event on its first lease`)
    t.equal(consumed.shortAcks, 0, `${name}: every ack acknowledged its whole lease`)
    t.same(await lease(app, organization, id), NIL_LEASE, `${name}: nothing left`)
  }

  t.same(new Set(await inbox(app, organization, 'pending')), new Set(accepted.map((event) => event.id)), 'the inbox still has every event pending')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('a subscription created at "beginning" after N events gets all N, in the inbox\'s order', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  // Concurrent writers, so that commits interleave and cursor order is not send order.
  await Promise.all(Array.from({ length: 6 }, async (_, writer) => {
    for (let i = 0; i < 20; i++) await sendEvent(app, organization, { type: TYPES[i % TYPES.length] as string, payload: { writer, i } })
  }))
  // The inbox lists events in cursor order, once every transaction older than theirs has ended.
  let all: string[] = []
  await waitFor('the inbox to list all 120', async () => (all = await inbox(app, organization, 'all')).length >= 120)
  t.equal(all.length, 120)
  const late = await createSubscription(app, organization, { start: 'beginning' })
  t.same(await take(app, organization, late.id, 120), all)
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('acking in a subscription acknowledges nothing in the inbox, and inbox acks hide nothing from a subscription', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization)
  const sent = await sendEvents(app, organization, TYPES)
  t.same(await take(app, organization, subscription.id, sent.length), sent)
  t.same(await inbox(app, organization, 'pending'), sent, 'still pending in the inbox')

  const acked = await request(app, organization, 'POST', '/api/ack', { event_ids: sent })
  t.same(acked.json<{ acknowledged: string[] }>().acknowledged, sent)
  const fresh = await createSubscription(app, organization, { start: 'beginning' })
  t.same(await take(app, organization, fresh.id, sent.length), sent, 'a subscription still gets events the inbox acknowledged')
  const inboxLease = await request(app, organization, 'POST', '/api/inbox/lease', {})
  t.same(inboxLease.json<Lease>().events, [], 'the inbox has nothing to lease')
})

t.test('seek back to "beginning" hands out acked events again, to that subscription only', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const rewound = await createSubscription(app, organization)
  const other = await createSubscription(app, organization)
  const sent = await sendEvents(app, organization, Array.from({ length: 60 }, (_, i) => TYPES[i % TYPES.length] as string))
  t.same(await take(app, organization, rewound.id, 60), sent)
  t.same(await take(app, organization, other.id, 60), sent)

  const sought = await request(app, organization, 'POST', `/api/subscriptions/${rewound.id}/seek`, { to: 'beginning' })
  t.equal(sought.statusCode, 200)
  t.same(await take(app, organization, rewound.id, 60), sent, 'every acked event again, in order')
  t.same(await lease(app, organization, other.id), NIL_LEASE, 'the other subscription is not moved')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('a paused subscription, resumed, gets every event posted while it was paused; another is not held up meanwhile', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const pausing = await createSubscription(app, organization)
  const running = await createSubscription(app, organization)
  t.equal((await patch(app, organization, pausing.id, { paused: true })).paused, true)

  const whilePaused = await sendEvents(app, organization, Array.from({ length: 30 }, (_, i) => TYPES[i % TYPES.length] as string))
  t.same(await take(app, organization, running.id, 30), whilePaused, 'the other subscription goes on')
  const refused = await request(app, organization, 'POST', `/api/subscriptions/${pausing.id}/lease`, {})
  t.equal(refused.statusCode, 409)

  t.equal((await patch(app, organization, pausing.id, { paused: false })).paused, false)
  t.same(await take(app, organization, pausing.id, 30), whilePaused, 'everything posted while paused, once each')
})
