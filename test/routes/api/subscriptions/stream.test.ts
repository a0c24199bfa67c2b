import t from 'tap'
import { buildTestApp, checkedOutAfterSettling, createOrganization } from '../../../support/helpers.js'
import { ack, createSubscription, getSubscription, idsOf, leaseSome, request, sendEvents, type ErrorBody } from '../../../support/subscriptions.js'
import { listen, openStream, type Frame } from '../../../support/event-streams.js'
import { waitFor } from '../../../support/webhooks.js'

const eventIdOf = (frame: Frame) => (JSON.parse(frame.data ?? '{}') as { event_id: string }).event_id

t.test('a subscription stream sends its events with ids, and a reconnect with Last-Event-ID loses and repeats nothing', async (t) => {
  const app = await buildTestApp(t)
  const baseUrl = await listen(app)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization, { start: 'beginning', event_types: ['order.*'] })
  const url = `${baseUrl}/api/subscriptions/${subscription.id}/stream`

  const first = await openStream(url, organization.headers)
  t.equal(first.response.status, 200)
  t.match(first.response.headers.get('content-type'), /text\/event-stream/)
  const [a, , b, , c] = await sendEvents(app, organization, ['order.a', 'user.x', 'order.b', 'user.y', 'order.c'])
  const got = await first.dataFrames(3)
  if (!got) throw new Error('the stream ended')
  t.same(got.map(eventIdOf), [a, b, c], 'the matching events, in log order')
  t.ok(got.every((frame) => typeof frame.id === 'string' && frame.id.length > 0), 'each with an id')
  t.equal(first.frames[0]?.retry, '2000', 'a retry hint first')
  t.match(JSON.parse(got[0]?.data ?? '{}'), { event_id: a, type: 'order.a', payload: { n: 0 }, created_at: String })
  first.close()

  // Sent while no stream is open: a reconnect from the last id gets them, and nothing it had.
  const [d, , e] = await sendEvents(app, organization, ['order.d', 'user.z', 'order.e'])
  const second = await openStream(url, { ...organization.headers, 'last-event-id': got[2]?.id ?? '' })
  const resumed = await second.dataFrames(2)
  if (!resumed) throw new Error('the stream ended')
  t.same(resumed.map(eventIdOf), [d, e], 'exactly the events after the last id')
  const [f] = await sendEvents(app, organization, ['order.f'])
  const live = await second.dataFrames(3)
  if (!live) throw new Error('the stream ended')
  t.same(live.map(eventIdOf), [d, e, f], 'then new ones as they arrive, none twice')
  second.close()

  // Read-only: the subscription still hands out every event to its leases.
  const leased = await leaseSome(app, organization, subscription.id, { limit: 100 })
  t.same(idsOf(leased), [a, b, c, d, e, f].slice(0, leased.events.length))
})

t.test('without Last-Event-ID a stream starts at the subscription\'s position, or after a given cursor', async (t) => {
  const app = await buildTestApp(t)
  const baseUrl = await listen(app)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization, { start: 'beginning' })
  const [a, b, c] = await sendEvents(app, organization, ['x', 'x', 'x'])
  const leased = await leaseSome(app, organization, subscription.id, { limit: 1 })
  t.same(idsOf(leased), [a])
  await ack(app, organization, subscription.id, { lease_id: leased.lease_id })
  const { position } = await getSubscription(app, organization, subscription.id)

  const fromPosition = await openStream(`${baseUrl}/api/subscriptions/${subscription.id}/stream`, organization.headers)
  const afterAck = await fromPosition.dataFrames(2)
  t.same(afterAck && afterAck.map(eventIdOf), [b, c], 'after the acked event')
  fromPosition.close()

  const fromCursor = await openStream(`${baseUrl}/api/subscriptions/${subscription.id}/stream?after=${afterAck ? afterAck[0]?.id ?? '' : ''}`, organization.headers)
  const afterB = await fromCursor.dataFrames(1)
  t.same(afterB && afterB.map(eventIdOf), [c], 'after the cursor given')
  fromCursor.close()
  t.ok(position.length > 0)
})

t.test('subscription streams refuse bad ids and other organizations, are capped, and give everything back when closed', async (t) => {
  const app = await buildTestApp(t, { INBOX_STREAMS_PER_ORGANIZATION: '2' })
  const baseUrl = await listen(app)
  const organization = await createOrganization(app)
  const other = await createOrganization(app)
  const subscription = await createSubscription(app, organization)
  const url = `/api/subscriptions/${subscription.id}/stream`

  const badId = await app.inject({ method: 'GET', url, headers: { ...organization.headers, 'last-event-id': 'not a cursor' } })
  t.equal(badId.statusCode, 400)
  t.equal(badId.json<ErrorBody>().code, 'invalid_cursor')
  const badAfter = await request(app, organization, 'GET', `${url}?after=%%%`)
  t.equal(badAfter.statusCode, 400)
  t.equal((await request(app, other, 'GET', url)).statusCode, 404, 'another organization\'s subscription')
  t.equal((await app.inject({ method: 'GET', url })).statusCode, 401, 'an API key is needed')

  const waitingBefore = app.wakeUps.waiting
  const open = [await openStream(`${baseUrl}${url}`, organization.headers), await openStream(`${baseUrl}${url}`, organization.headers)]
  const third = await fetch(`${baseUrl}${url}`, { headers: organization.headers })
  t.equal(third.status, 429)
  t.equal((await third.json() as ErrorBody).code, 'too_many_streams')
  const inbox = await fetch(`${baseUrl}/api/inbox/stream`, { headers: organization.headers })
  t.equal(inbox.status, 200, 'the inbox\'s streams are counted apart')
  await inbox.body?.cancel()
  for (const stream of open) stream.close()
  await waitFor('the streams to end', async () => app.wakeUps.waiting === waitingBefore)
  const again = await Promise.all([openStream(`${baseUrl}${url}`, organization.headers), openStream(`${baseUrl}${url}`, organization.headers)])
  t.same(again.map((stream) => stream.response.status), [200, 200], 'both slots came back')
  for (const stream of again) stream.close()
  await waitFor('the streams to end', async () => app.wakeUps.waiting === waitingBefore)
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client held')
})
