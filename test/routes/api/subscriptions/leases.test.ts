import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, checkedOutAfterSettling, createOrganization, type Teardown, type TestOrganization } from '../../../support/helpers.js'
import {
  ack, createSubscription, getSubscription, idsOf, lease, leaseSome, NIL_LEASE, request, sendEvents, times,
  type ErrorBody, type Subscription
} from '../../../support/subscriptions.js'
import { waitFor } from '../../../support/webhooks.js'

interface DeadLetter {
  event_id: string
  type: string
  payload: Record<string, unknown>
  created_at: string
  lease_count: number
  dead_at: string
}

async function post<T> (app: FastifyInstance, organization: TestOrganization, url: string, payload: object): Promise<T> {
  const response = await request(app, organization, 'POST', url, payload)
  if (response.statusCode !== 200) throw new Error(`${url} answered ${response.statusCode}: ${response.body}`)
  return response.json<T>()
}

const release = (app: FastifyInstance, organization: TestOrganization, id: string, body: object) =>
  post<{ released: string[] }>(app, organization, `/api/subscriptions/${id}/release`, body)

async function deadLetters (app: FastifyInstance, organization: TestOrganization, id: string, query = ''): Promise<DeadLetter[]> {
  const response = await request(app, organization, 'GET', `/api/subscriptions/${id}/dead-letters${query}`)
  if (response.statusCode !== 200) throw new Error(`dead letters answered ${response.statusCode}: ${response.body}`)
  return response.json<{ events: DeadLetter[] }>().events
}

t.test('a lease hands out the matching events oldest first, each to one lease, in the inbox\'s lease format', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization, { event_types: ['order.*', 'invoice.paid'] })
  const [created, , paid, , invoice, shipped] = await sendEvents(app, organization, ['order.created', 'user.created', 'order.paid', 'orders', 'invoice.paid', 'order.shipped'])

  const asked = Date.now()
  const first = await leaseSome(app, organization, subscription.id, { limit: 2 })
  const answered = Date.now()
  t.match(first, { lease_id: /^[0-9a-f-]{36}$/, leased_until: String })
  t.same(idsOf(first), [created, paid], 'order.* needs the dot: "orders" does not match')
  t.match(first.events[0], { event_id: created, type: 'order.created', payload: { n: 0 }, lease_count: 1, status: 'pending', dedup_id: null, source: null, created_at: String })
  // 300 s from the moment the lease was taken, somewhere between asking and the answer (a second for the clocks).
  const leasedUntil = Date.parse(first.leased_until ?? '')
  t.ok(leasedUntil >= asked + 299_000 && leasedUntil <= answered + 301_000, 'the default lease is 300 s')

  const second = await lease(app, organization, subscription.id)
  t.same(idsOf(second), [invoice, shipped])
  t.not(second.lease_id, first.lease_id)
  t.same(await lease(app, organization, subscription.id), NIL_LEASE, 'nothing left to lease')
  t.match(await getSubscription(app, organization, subscription.id), { pending: { in_flight: 4, dead: 0 } })
})

t.test('a lease with a type gets only that type, also when other types come first', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization, { start: 'beginning' })
  const sent = await sendEvents(app, organization, [...times(30, 'noise'), 'wanted'])
  const noise = sent.slice(0, 30)
  const wanted = sent[30]
  // Readable once the inbox lists them (both wait for older transactions on the server to end).
  await waitFor('the events to be listed', async () => (await request(app, organization, 'GET', '/api/inbox?limit=100')).json<{ count: number }>().count === 31)

  const typed = await lease(app, organization, subscription.id, { type: 'wanted', limit: 5 })
  t.same(idsOf(typed), [wanted], 'the first event of that type, behind 30 of another')
  t.same(await lease(app, organization, subscription.id, { type: 'wanted' }), NIL_LEASE)
  const rest = await lease(app, organization, subscription.id, { limit: 100 })
  t.same(idsOf(rest), noise, 'the other types are still there, in order')
})

t.test('ack acknowledges only what the lease still holds', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization)
  const [a, b, c] = await sendEvents(app, organization, times(3))
  const leased = await leaseSome(app, organization, subscription.id, { limit: 2 })

  t.same(await ack(app, organization, subscription.id, { lease_id: leased.lease_id, event_ids: [a, c] }), { acknowledged: [a], not_found: [c] }, 'c was never in this lease')
  t.same(await ack(app, organization, subscription.id, { lease_id: leased.lease_id }), { acknowledged: [b], not_found: [] })
  t.same(await ack(app, organization, subscription.id, { lease_id: leased.lease_id }), { acknowledged: [], not_found: [] }, 'acknowledging twice does nothing more')
  t.same(idsOf(await lease(app, organization, subscription.id)), [c], 'acked events are not leased again')
})

t.test('an expired lease\'s events are leased again with lease_count counting; the expired lease_id acts on nothing', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization)
  const sent = await sendEvents(app, organization, times(2))
  const stale = await leaseSome(app, organization, subscription.id, { lease_seconds: 1 })
  t.same(idsOf(stale), sent)

  const fresh = await leaseSome(app, organization, subscription.id, { lease_seconds: 600 })
  t.same(idsOf(fresh), sent, 'the events came back once the lease ran out')
  t.same(fresh.events.map((event) => event.lease_count), [2, 2])

  t.same(await ack(app, organization, subscription.id, { lease_id: stale.lease_id, event_ids: sent }), { acknowledged: [], not_found: sent }, 'a stale lease cannot acknowledge re-leased work')
  t.same(await release(app, organization, subscription.id, { lease_id: stale.lease_id }), { released: [] })
  const staleExtend = await request(app, organization, 'POST', `/api/subscriptions/${subscription.id}/extend`, { lease_id: stale.lease_id, lease_seconds: 60 })
  t.equal(staleExtend.statusCode, 404)
  t.equal(staleExtend.json<ErrorBody>().code, 'lease_not_found')
  t.same((await ack(app, organization, subscription.id, { lease_id: fresh.lease_id })).acknowledged, sent)
})

t.test('release returns events at once; extend keeps a lease longer; an unknown lease is 404 lease_not_found', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization)
  const [a, b] = await sendEvents(app, organization, times(2))

  const leased = await leaseSome(app, organization, subscription.id)
  t.same(await release(app, organization, subscription.id, { lease_id: leased.lease_id, event_ids: [b] }), { released: [b] })
  t.match(await getSubscription(app, organization, subscription.id), { pending: { in_flight: 1, available: 1, dead: 0 } })
  const relet = await lease(app, organization, subscription.id)
  t.same(idsOf(relet), [b], 'the released event is available at once')
  t.equal(relet.events[0]?.lease_count, 2)

  const extended = await request(app, organization, 'POST', `/api/subscriptions/${subscription.id}/extend`, { lease_id: leased.lease_id, lease_seconds: 3600 })
  t.equal(extended.statusCode, 200)
  const body = extended.json<{ lease_id: string, leased_until: string, event_ids: string[] }>()
  t.same(body.event_ids, [a], 'only what the lease still holds')
  t.equal(body.lease_id, leased.lease_id)
  t.ok(Date.parse(body.leased_until) > Date.parse(leased.leased_until ?? ''), 'leased_until moved forward')

  const unknown = await request(app, organization, 'POST', `/api/subscriptions/${subscription.id}/extend`, { lease_id: '00000000-0000-4000-8000-000000000000', lease_seconds: 10 })
  t.equal(unknown.statusCode, 404)
  t.equal(unknown.json<ErrorBody>().code, 'lease_not_found')
  t.same(await release(app, organization, subscription.id, { lease_id: '00000000-0000-4000-8000-000000000000' }), { released: [] })
})

t.test('at most max_in_flight events are leased and unacked at once, across lease calls', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization, { max_in_flight: 3 })
  const sent = await sendEvents(app, organization, times(8))

  const first = await leaseSome(app, organization, subscription.id, { limit: 2 })
  const second = await lease(app, organization, subscription.id, { limit: 2 })
  t.same([...idsOf(first), ...idsOf(second)], sent.slice(0, 3), 'the second lease gets only the room left')
  t.same(await lease(app, organization, subscription.id, { limit: 10 }), NIL_LEASE, 'no room: three in flight')
  t.match(await getSubscription(app, organization, subscription.id), { pending: { in_flight: 3 } })

  await ack(app, organization, subscription.id, { lease_id: first.lease_id })
  t.same(idsOf(await lease(app, organization, subscription.id, { limit: 10 })), sent.slice(3, 5), 'acking two makes room for two')
  await release(app, organization, subscription.id, { lease_id: second.lease_id })
  t.same(idsOf(await lease(app, organization, subscription.id, { limit: 10 })), sent.slice(2, 3), 'releasing makes room too')

  const raised = await request(app, organization, 'PATCH', `/api/subscriptions/${subscription.id}`, { max_in_flight: 6 })
  t.equal(raised.statusCode, 200)
  t.same(idsOf(await lease(app, organization, subscription.id, { limit: 10 })), sent.slice(5, 8), 'a raised max_in_flight applies to the next lease')
})

t.test('an event leased max_attempts times without an ack is dead-lettered, listed, and redriven with a fresh budget', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization, { max_attempts: 2 })
  const [a, b, c] = await sendEvents(app, organization, ['poison.a', 'poison.b', 'fine'])

  for (let attempt = 1; attempt <= 2; attempt++) {
    const leased = await leaseSome(app, organization, subscription.id, { limit: 2 })
    t.same(idsOf(leased), [a, b])
    t.same(leased.events.map((event) => event.lease_count), [attempt, attempt])
    await release(app, organization, subscription.id, { lease_id: leased.lease_id })
  }
  const fine = await lease(app, organization, subscription.id, { limit: 10 })
  t.same(idsOf(fine), [c], 'dead letters are not leased again')
  await ack(app, organization, subscription.id, { lease_id: fine.lease_id })
  t.match(await getSubscription(app, organization, subscription.id), { pending: { in_flight: 0, available: 0, dead: 2 } })

  const letters = await deadLetters(app, organization, subscription.id)
  t.same(letters.map((letter) => letter.event_id), [a, b], 'oldest position first')
  t.match(letters[0], { event_id: a, type: 'poison.a', payload: { n: 0 }, created_at: String, lease_count: 2, dead_at: String })
  t.ok(Date.parse(letters[0]?.dead_at ?? '') >= Date.parse(letters[0]?.created_at ?? ''), 'dead after it was created')
  t.same((await deadLetters(app, organization, subscription.id, '?limit=1')).map((letter) => letter.event_id), [a])

  t.same(await post(app, organization, `/api/subscriptions/${subscription.id}/dead-letters/redrive`, { event_ids: [b, c] }), { redriven: 1 }, 'c was acked, not dead')
  const again = await lease(app, organization, subscription.id, { limit: 10 })
  t.same(idsOf(again), [b])
  t.equal(again.events[0]?.lease_count, 1, 'a redriven event starts a fresh count')
  t.same((await deadLetters(app, organization, subscription.id)).map((letter) => letter.event_id), [a])

  t.same(await post(app, organization, `/api/subscriptions/${subscription.id}/dead-letters/redrive`, {}), { redriven: 1 }, 'no ids: all of them')
  t.same(await post(app, organization, `/api/subscriptions/${subscription.id}/dead-letters/redrive`, {}), { redriven: 0 })
  t.same(idsOf(await lease(app, organization, subscription.id, { limit: 10 })), [a])
  t.same(await deadLetters(app, organization, subscription.id), [])
})

t.test('an event whose last allowed lease runs out is dead-lettered too', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization, { max_attempts: 1 })
  const [poison, next] = await sendEvents(app, organization, times(2))
  t.same(idsOf(await leaseSome(app, organization, subscription.id, { limit: 1, lease_seconds: 1 })), [poison])

  await waitFor('the lease to run out', async () => (await deadLetters(app, organization, subscription.id)).length === 1)
  t.same((await deadLetters(app, organization, subscription.id)).map((letter) => letter.event_id), [poison])
  t.same(idsOf(await lease(app, organization, subscription.id, { limit: 10 })), [next], 'only the next event is leased')
})

t.test('dead-letter and redrive requests are validated', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization)
  for (const query of ['?limit=0', '?limit=101', '?limit=x', '?other=1']) {
    const response = await request(app, organization, 'GET', `/api/subscriptions/${subscription.id}/dead-letters${query}`)
    t.equal(response.statusCode, 400, query)
  }
  const tooMany = Array.from({ length: 1001 }, () => '00000000-0000-4000-8000-000000000000')
  for (const body of [{ event_ids: ['nope'] }, { event_ids: tooMany }, { extra: 1 }]) {
    const response = await request(app, organization, 'POST', `/api/subscriptions/${subscription.id}/dead-letters/redrive`, body)
    t.equal(response.statusCode, 400, JSON.stringify(body).slice(0, 60))
  }
})

t.test('a paused subscription answers leases with 409 subscription_paused and keeps its place; resumed, it leases again', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization)
  const [first, second] = await sendEvents(app, organization, times(2))
  const held = await leaseSome(app, organization, subscription.id, { limit: 1 })

  const paused = await request(app, organization, 'PATCH', `/api/subscriptions/${subscription.id}`, { paused: true })
  t.equal(paused.json<Subscription>().paused, true)
  for (const body of [{}, { wait_seconds: 5 }]) {
    const refused = await request(app, organization, 'POST', `/api/subscriptions/${subscription.id}/lease`, body)
    t.equal(refused.statusCode, 409, `lease ${JSON.stringify(body)}`)
    t.equal(refused.json<ErrorBody>().code, 'subscription_paused')
  }

  await request(app, organization, 'PATCH', `/api/subscriptions/${subscription.id}`, { paused: false })
  t.same(idsOf(await lease(app, organization, subscription.id, { limit: 10 })), [second], 'it goes on where it was')
  t.same(await ack(app, organization, subscription.id, { lease_id: held.lease_id }), { acknowledged: [first], not_found: [] }, 'the lease taken before the pause still holds')
})

/**
 * Counts the app's waits for arrivals and how they ended. A long poll starts waiting before its first look, so
 * `waiting` alone does not say the look is over; `looked` counts pool clients given back once a wait began.
 */
function watchWaits (t: Teardown, app: FastifyInstance) {
  let started = 0
  let woken = 0
  let notWoken = 0
  let looked = 0
  const nextArrival = app.wakeUps.nextArrival
  app.wakeUps.nextArrival = async (...args) => {
    started++
    const arrived = await nextArrival(...args)
    if (arrived) woken++
    else notWoken++
    return arrived
  }
  const onRelease = () => { if (started > 0) looked++ }
  app.pg.pool.on('release', onRelease)
  t.teardown(() => {
    app.wakeUps.nextArrival = nextArrival
    app.pg.pool.off('release', onRelease)
  })
  return {
    get woken () { return woken },
    // The first look's transaction has given its client back while the poll waits.
    waiting: () => waitFor('the long poll to look and wait', () => app.wakeUps.waiting === 1 && looked >= 1 && woken + notWoken === 0)
  }
}

t.test('a long poll on a subscription is woken by a new matching event, long before its deadline', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization, { event_types: ['wake.*'] })
  const watch = watchWaits(t, app)

  const polling = lease(app, organization, subscription.id, { wait_seconds: 20 })
  await watch.waiting()
  const [event] = await sendEvents(app, organization, ['wake.up'])
  const answer = await polling
  t.same(idsOf(answer), [event])
  // The second look found the event; its wait, no longer needed, ended unwoken.
  t.equal(watch.woken, 1, 'the first wait ended with the arrival, not at the 20 s deadline')
})

t.test('lease, ack, release and extend requests are validated', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization)
  const url = `/api/subscriptions/${subscription.id}`
  const bad = [{ limit: 0 }, { limit: 101 }, { lease_seconds: 0 }, { lease_seconds: 3601 }, { wait_seconds: 21 }, { wait_seconds: -1 }, { type: '' }, { extra: 1 }]
  for (const body of bad) t.equal((await request(app, organization, 'POST', `${url}/lease`, body)).statusCode, 400, `lease ${JSON.stringify(body)}`)
  t.equal((await request(app, organization, 'POST', `${url}/ack`, { lease_id: 'nope' })).statusCode, 400)
  t.equal((await request(app, organization, 'POST', `${url}/ack`, {})).statusCode, 400)
  t.equal((await request(app, organization, 'POST', `${url}/release`, { lease_id: '00000000-0000-4000-8000-000000000000', event_ids: [] })).statusCode, 400)
  t.equal((await request(app, organization, 'POST', `${url}/extend`, { lease_id: '00000000-0000-4000-8000-000000000000' })).statusCode, 400)
  t.equal((await request(app, organization, 'POST', `${url}/extend`, { lease_id: '00000000-0000-4000-8000-000000000000', lease_seconds: 3601 })).statusCode, 400)
  const anonymous = await app.inject({ method: 'POST', url: `${url}/lease`, payload: {} })
  t.equal(anonymous.statusCode, 401)
})

t.test('10 concurrent consumers share one subscription\'s 1 000 events: each handed out once, all acked', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization, { start: 'beginning' })
  const sent = await sendEvents(app, organization, times(1000, 'load'))
  const received: string[] = []
  let unackable = 0
  const consumer = async () => {
    while (received.length < sent.length) {
      // A short long poll: an empty answer can mean "not readable yet" (see leaseSome), not only "all taken".
      const leased = await lease(app, organization, subscription.id, { limit: 25, lease_seconds: 600, wait_seconds: 1 })
      if (leased.lease_id === null) continue
      received.push(...idsOf(leased))
      const acked = await ack(app, organization, subscription.id, { lease_id: leased.lease_id })
      if (acked.acknowledged.length !== leased.events.length) unackable++
    }
  }
  await Promise.all(Array.from({ length: 10 }, consumer))
  t.equal(unackable, 0, 'every lease acknowledged all its events')
  t.equal(received.length, 1000, 'no event was handed out twice')
  t.same(new Set(received), new Set(sent), 'every event was handed out')
  t.match(await getSubscription(app, organization, subscription.id), { pending: { in_flight: 0, available: 0, dead: 0 } })
  t.same(await lease(app, organization, subscription.id), NIL_LEASE)
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('a retry schedule holds a released or expired event back for its wait, and a waiting lease gets it when due', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization, { retry_schedule: [1, 3600] })
  t.same(subscription.retry_schedule, [1, 3600])
  const [event] = await sendEvents(app, organization, times(1))
  const first = await leaseSome(app, organization, subscription.id)
  t.same(idsOf(first), [event])
  await release(app, organization, subscription.id, { lease_id: first.lease_id })
  t.same(await lease(app, organization, subscription.id), NIL_LEASE, 'not at once after the first release: it waits 1 s')
  t.match(await getSubscription(app, organization, subscription.id), { pending: { in_flight: 0, available: 0, retrying: 1 } })

  // No event arrives while this lease waits: only the schedule's due time can end its wait with the event.
  const second = await lease(app, organization, subscription.id, { wait_seconds: 20 })
  t.same(idsOf(second), [event], 'handed out again once its wait is over')
  t.equal(second.events[0]?.lease_count, 2)

  // A lease that runs out counts as one ended unacked: after the second, the wait is an hour.
  await request(app, organization, 'POST', `/api/subscriptions/${subscription.id}/extend`, { lease_id: second.lease_id, lease_seconds: 1 })
  await waitFor('the lease to run out', async () => (await getSubscription(app, organization, subscription.id)).pending.retrying === 1)
  t.same(await lease(app, organization, subscription.id), NIL_LEASE, 'an hour to wait')
  const patched = await request(app, organization, 'PATCH', `/api/subscriptions/${subscription.id}`, { retry_schedule: [] })
  t.same(patched.json<Subscription>().retry_schedule, [])
  t.same(idsOf(await lease(app, organization, subscription.id)), [event], 'a new schedule applies to events already waiting')

  for (const retry_schedule of [[-1], [86401], Array.from({ length: 21 }, () => 1)]) {
    const refused = await request(app, organization, 'POST', '/api/subscriptions', { kind: 'pull', retry_schedule })
    t.equal(refused.statusCode, 400, `retry_schedule ${JSON.stringify(retry_schedule).slice(0, 20)} refused`)
  }
})

t.test('GET /api/events/{id} shows the event\'s state in each subscription it matches', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const orders = await createSubscription(app, organization, { name: 'orders', event_types: ['order.*'] })
  const all = await createSubscription(app, organization, { name: 'all', max_attempts: 1 })
  await createSubscription(app, organization, { name: 'others', event_types: ['other'] })
  const [event] = await sendEvents(app, organization, ['order.created'])
  const states = async () => {
    const response = await request(app, organization, 'GET', `/api/events/${event}`)
    t.equal(response.statusCode, 200)
    return response.json<{ subscriptions: Array<{ subscription_id: string, name: string, state: string, lease_count: number }> }>().subscriptions
  }
  t.same(await states(), [
    { subscription_id: orders.id, name: 'orders', state: 'waiting', lease_count: 0 },
    { subscription_id: all.id, name: 'all', state: 'waiting', lease_count: 0 }
  ], 'waiting in both that match, absent from the one that does not')

  const ordersLease = await leaseSome(app, organization, orders.id)
  const allLease = await leaseSome(app, organization, all.id)
  t.same((await states()).map((one) => [one.name, one.state, one.lease_count]), [['orders', 'in_flight', 1], ['all', 'in_flight', 1]])
  await ack(app, organization, orders.id, { lease_id: ordersLease.lease_id })
  await release(app, organization, all.id, { lease_id: allLease.lease_id })
  t.same((await states()).map((one) => [one.name, one.state]), [['orders', 'done'], ['all', 'dead']], 'acked in one, dead-lettered in the other (max_attempts 1)')
  await request(app, organization, 'POST', `/api/subscriptions/${all.id}/dead-letters/redrive`, {})
  t.same((await states()).map((one) => [one.name, one.state]), [['orders', 'done'], ['all', 'available']], 'redriven: available again')
})
