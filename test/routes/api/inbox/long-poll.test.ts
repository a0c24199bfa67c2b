import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, createOrganization, type TestOrganization } from '../../../support/helpers.js'
import { listen } from '../../../support/event-streams.js'
import { watchLongPolls } from '../../../support/long-polls.js'
import { waitFor } from '../../../support/webhooks.js'

function leaseOverHttp (baseUrl: string, organization: TestOrganization, body: object, signal?: AbortSignal) {
  return fetch(`${baseUrl}/api/inbox/lease`, {
    method: 'POST', headers: { ...organization.headers, 'content-type': 'application/json' }, body: JSON.stringify(body), signal
  })
}

function sendOverHttp (baseUrl: string, organization: TestOrganization, events: object[]) {
  return fetch(`${baseUrl}/api/events/batch`, {
    method: 'POST', headers: { ...organization.headers, 'content-type': 'application/json' }, body: JSON.stringify({ events })
  })
}

interface LeaseBody {
  lease_id: string | null
  events: Array<{ type: string }>
}

const HOUR_MS = 3_600_000

const checkedOut = (app: FastifyInstance) => app.pg.pool.totalCount - app.pg.pool.idleCount

t.test('a long poll is woken by a new event, long before its deadline', async (t) => {
  const app = await buildTestApp(t)
  const watch = watchLongPolls(t, app)
  const baseUrl = await listen(app)
  const organization = await createOrganization(app)
  const waiting = leaseOverHttp(baseUrl, organization, { wait_seconds: 20 })
  await watch.waiting(1)
  t.equal(watch.woken + watch.notWoken, 0, 'the poll found nothing and waits')
  await sendOverHttp(baseUrl, organization, [{ type: 'wake.up', payload: { n: 1 } }])
  const response = await waiting
  t.equal(response.status, 200)
  const body = await response.json() as LeaseBody
  t.equal(body.events.length, 1)
  t.equal(body.events[0]?.type, 'wake.up')
  t.equal(watch.woken, 1, 'answered by the notification, not by the 20 s deadline: its wait ended with an arrival')
  t.equal(watch.looks, 2, 'then it looked once more and found the event')
})

t.test('a long poll with nothing to lease ends empty at its deadline', async (t) => {
  const app = await buildTestApp(t)
  const watch = watchLongPolls(t, app)
  const baseUrl = await listen(app)
  const organization = await createOrganization(app)
  const other = await createOrganization(app)
  const waiting = leaseOverHttp(baseUrl, organization, { wait_seconds: 5 })
  await watch.waiting(1)
  // The other organization's arrival, heard here while the poll still waits (it has not ended yet).
  let heardWhileWaiting = false
  const unsubscribe = app.wakeUps.subscribe(other.id, () => { heardWhileWaiting ||= watch.notWoken === 0 })
  t.teardown(unsubscribe)
  await sendOverHttp(baseUrl, other, [{ type: 'not.yours', payload: {} }])
  const response = await waiting
  t.same(await response.json(), { lease_id: null, leased_until: null, events: [] }, 'another organization\'s event does not count')
  t.ok(heardWhileWaiting, 'its announcement came while the poll waited')
  t.equal(watch.woken, 0, 'and did not wake it: the wait ended at the deadline')
})

t.test('200 concurrent long polls hold no pool client, an aborted one frees its slot and listener, and all end on shutdown', async (t) => {
  const app = await buildTestApp(t, { INBOX_LONG_POLLS_PER_ORGANIZATION: '201' })
  // Each wait is given an hour instead of what is left of its poll's 20 s: no poll can end at its own deadline
  // during this test, so when they end, something else ended them (the client leaving, or the shutdown).
  const nextArrival = app.wakeUps.nextArrival
  app.wakeUps.nextArrival = async (organizationId, _timeoutMs, signal) => await nextArrival(organizationId, HOUR_MS, signal)
  t.teardown(() => { app.wakeUps.nextArrival = nextArrival })
  const watch = watchLongPolls(t, app)
  const baseUrl = await listen(app)
  const organization = await createOrganization(app)
  // Lets the test end its polls itself, should the shutdown not end them.
  const clients = new AbortController()
  const poll = (signal = clients.signal) => leaseOverHttp(baseUrl, organization, { wait_seconds: 20 }, signal).then(async (response) => ({
    status: response.status, body: await response.json() as LeaseBody
  }))
  const polls = Array.from({ length: 200 }, () => poll())
  // Every poll has made its first (empty) lease attempt and waits.
  await watch.waiting(200)
  t.equal(checkedOut(app), 0, 'waiting polls hold no pool client')
  t.equal(app.pg.pool.waitingCount, 0)

  const aborted = new AbortController()
  const gone = poll(aborted.signal).catch((error: Error) => error.name)
  await watch.waiting(201)
  aborted.abort()
  t.equal(await gone, 'AbortError')
  await waitFor('the aborted poll to stop waiting', () => app.wakeUps.waiting === 200)
  t.ok(watch.notWoken > 0 && watch.woken === 0, 'its wait ended without an arrival, when the client left')
  // Its slot is free again: one more poll is taken (and waits), the one after it is refused.
  polls.push(poll())
  await watch.waiting(201, 202)
  t.equal((await poll()).status, 429, 'the cap of 201 is full again')

  let closed = false
  const closing = app.close().then(() => { closed = true })
  // Bounds the wait only: with the polls' deadlines out of reach, nothing but the shutdown can let close() end.
  await waitFor('the shutdown to end the waiting polls (and close() to return)', () => closed)
    .catch(async (error: Error) => { clients.abort(); await Promise.allSettled([closing, ...polls]); throw error })
  const results = await Promise.all(polls)
  t.equal(results.length, 201)
  t.ok(results.every((result) => result.status === 200 && result.body.events.length === 0), 'every poll ended with an empty answer')
  t.equal(watch.woken, 0, 'none was woken: with its deadline out of reach and its client still there, each wait was ended by the shutdown')
  t.equal(app.wakeUps.waiting, 0, 'no poll waits after shutdown')
  t.equal(app.pg.pool.totalCount, 0, 'the pool is closed')
})
