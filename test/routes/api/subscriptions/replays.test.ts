import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildTestApp, createOrganization, type TestOrganization } from '../../../support/helpers.js'
import {
  ack, createSubscription, getSubscription, idsOf, lease, leaseSome, NIL_LEASE, request, sendEvents, take, times,
  type ErrorBody
} from '../../../support/subscriptions.js'
import { waitFor } from '../../../support/webhooks.js'

interface Replay {
  replay_id: string
  subscription_id: string
  from: string
  to: string
  total: number
  done: number
  status: 'running' | 'finished' | 'cancelled'
  created_at: string
}

async function startReplay (app: FastifyInstance, organization: TestOrganization, id: string, range: { from: Date, to: Date }): Promise<Replay> {
  const response = await request(app, organization, 'POST', `/api/subscriptions/${id}/replay`, { from: range.from.toISOString(), to: range.to.toISOString() })
  if (response.statusCode !== 202) throw new Error(`replay answered ${response.statusCode}: ${response.body}`)
  return response.json<Replay>()
}

async function getReplay (app: FastifyInstance, organization: TestOrganization, id: string, replayId: string): Promise<Replay> {
  const response = await request(app, organization, 'GET', `/api/subscriptions/${id}/replays/${replayId}`)
  if (response.statusCode !== 200) throw new Error(`GET replay answered ${response.statusCode}: ${response.body}`)
  return response.json<Replay>()
}

/** A cursor's place, comparable: "<txid>.<seq>" inside. */
function positionOf (cursor: string): bigint {
  const [txid, seq] = Buffer.from(cursor, 'base64url').toString().split('.')
  return BigInt(txid ?? 0) * 2n ** 64n + BigInt(seq ?? 0)
}

/**
 * Three runs of events apart in time; the range holds exactly the middle one. The pauses only separate the runs'
 * times (an event's created_at is its transaction's start); nothing is asserted about durations.
 */
async function threeRuns (app: FastifyInstance, organization: TestOrganization, sizes: [number, number, number]) {
  const before = await sendEvents(app, organization, times(sizes[0]))
  await sleep(30)
  const from = new Date()
  const inside = await sendEvents(app, organization, times(sizes[1]))
  await sleep(30)
  const to = new Date()
  await sleep(30)
  const after = await sendEvents(app, organization, times(sizes[2]))
  return { before, inside, after, range: { from, to } }
}

t.test('a replay hands a range out again, in order, without moving the position; its progress counts the acks', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization, { start: 'beginning' })
  const { before, inside, after, range } = await threeRuns(app, organization, [5, 12, 5])
  t.same(await take(app, organization, subscription.id, 22), [...before, ...inside, ...after], 'everything consumed once')
  const position = (await getSubscription(app, organization, subscription.id)).position

  const replay = await startReplay(app, organization, subscription.id, range)
  t.match(replay, { subscription_id: subscription.id, total: 12, done: 0, status: 'running', from: range.from.toISOString(), to: range.to.toISOString() })
  const first = await lease(app, organization, subscription.id, { limit: 5 })
  t.same(idsOf(first), inside.slice(0, 5), 'the range\'s first events, oldest first')
  await ack(app, organization, subscription.id, { lease_id: first.lease_id })
  t.match(await getReplay(app, organization, subscription.id, replay.replay_id), { total: 12, done: 5, status: 'running' })

  const rest = await lease(app, organization, subscription.id, { limit: 100 })
  t.same(idsOf(rest), inside.slice(5), 'the rest of the range and nothing outside it')
  t.match(await getReplay(app, organization, subscription.id, replay.replay_id), { done: 5, status: 'running' }, 'leased is not done')
  await ack(app, organization, subscription.id, { lease_id: rest.lease_id })
  t.match(await getReplay(app, organization, subscription.id, replay.replay_id), { total: 12, done: 12, status: 'finished' })
  t.same(await lease(app, organization, subscription.id, { limit: 100 }), NIL_LEASE, 'each once')
  t.ok(positionOf((await getSubscription(app, organization, subscription.id)).position) >= positionOf(position), 'the live position did not move back')

  const listed = await request(app, organization, 'GET', `/api/subscriptions/${subscription.id}/replays`)
  t.same(listed.json<{ replays: Replay[] }>().replays.map((one) => one.replay_id), [replay.replay_id])
})

t.test('a replay covers what the subscription has read; what it has not comes once, from the live read', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization, { start: 'beginning' })
  const { inside, after, range } = await threeRuns(app, organization, [3, 150, 3])
  const first = await leaseSome(app, organization, subscription.id, { limit: 50 })
  await ack(app, organization, subscription.id, { lease_id: first.lease_id })
  const insideRead = idsOf(first).filter((id) => inside.includes(id))

  const replay = await startReplay(app, organization, subscription.id, range)
  t.equal(replay.total, insideRead.length, 'the range\'s events the subscription had read')
  const seen = await take(app, organization, subscription.id, inside.length + after.length)
  t.same([...seen].sort(), [...inside, ...after].sort(), 'the read part once more, the unread part and later events once')
  t.match(await getReplay(app, organization, subscription.id, replay.replay_id), { total: insideRead.length, done: insideRead.length, status: 'finished' })
})

t.test('a replay follows the subscription\'s types, and gives dead letters of its range a fresh budget', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization, { start: 'beginning', event_types: ['wanted'], max_attempts: 1 })
  await sleep(30)
  const from = new Date()
  const [wanted, , other] = await sendEvents(app, organization, ['wanted', 'noise', 'wanted'])
  await sleep(30)
  const to = new Date()
  // Leased once and released: with max_attempts 1, dead-lettered.
  const leased = await leaseSome(app, organization, subscription.id, { limit: 10 })
  t.same(idsOf(leased), [wanted, other])
  await request(app, organization, 'POST', `/api/subscriptions/${subscription.id}/release`, { lease_id: leased.lease_id })
  t.match(await getSubscription(app, organization, subscription.id), { pending: { dead: 2 } })

  const replay = await startReplay(app, organization, subscription.id, { from, to })
  t.equal(replay.total, 2, 'only the matching types count')
  const again = await lease(app, organization, subscription.id, { limit: 10 })
  t.same(idsOf(again), [wanted, other], 'the dead letters are handed out again')
  t.same(again.events.map((event) => event.lease_count), [1, 1], 'with a fresh attempt budget')
  await ack(app, organization, subscription.id, { lease_id: again.lease_id })
  t.match(await getSubscription(app, organization, subscription.id), { pending: { dead: 0, in_flight: 0 } })
  t.match(await getReplay(app, organization, subscription.id, replay.replay_id), { done: 2, status: 'finished' })
})

t.test('a cancelled replay reads no more of its range; a seek cancels the subscription\'s replays', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = await createSubscription(app, organization, { start: 'beginning' })
  const { before, inside, after, range } = await threeRuns(app, organization, [2, 4, 2])
  await take(app, organization, subscription.id, 8)

  const replay = await startReplay(app, organization, subscription.id, range)
  const cancelled = await request(app, organization, 'DELETE', `/api/subscriptions/${subscription.id}/replays/${replay.replay_id}`)
  t.equal(cancelled.statusCode, 200)
  t.match(cancelled.json<Replay>(), { replay_id: replay.replay_id, status: 'cancelled', done: 0 })
  t.same(await lease(app, organization, subscription.id, { limit: 100 }), NIL_LEASE, 'nothing of the range is handed out')

  const second = await startReplay(app, organization, subscription.id, range)
  const sought = await request(app, organization, 'POST', `/api/subscriptions/${subscription.id}/seek`, { to: 'beginning' })
  t.equal(sought.statusCode, 200)
  t.equal((await getReplay(app, organization, subscription.id, second.replay_id)).status, 'cancelled')
  t.same(await take(app, organization, subscription.id, 8), [...before, ...inside, ...after], 'the seek hands everything out once, not the range twice')
})

t.test('replays refuse bad ranges, too many at once, too large a range and other organizations\' subscriptions', async (t) => {
  const app = await buildTestApp(t, { EVENT_RETENTION_DAYS: '7', SUBSCRIPTION_REPLAYS_READING: '2', SUBSCRIPTION_REPLAY_MAX_EVENTS: '10' })
  const organization = await createOrganization(app)
  const other = await createOrganization(app)
  const subscription = await createSubscription(app, organization)
  const url = `/api/subscriptions/${subscription.id}/replay`
  const hourAgo = new Date(Date.now() - 3600_000).toISOString()
  const now = new Date().toISOString()

  const refused = async (body: object, status: number, code: string) => {
    const response = await request(app, organization, 'POST', url, body)
    t.equal(response.statusCode, status, `${JSON.stringify(body)} → ${status}`)
    t.equal(response.json<ErrorBody>().code, code)
    return response
  }
  await refused({ from: hourAgo }, 400, 'validation_failed')
  await refused({ from: 'yesterday', to: now }, 400, 'invalid_range')
  await refused({ from: now, to: hourAgo }, 400, 'invalid_range')
  await refused({ from: new Date(Date.now() + 60_000).toISOString(), to: new Date(Date.now() + 120_000).toISOString() }, 400, 'invalid_range')
  const tooOld = await refused({ from: new Date(Date.now() - 9 * 24 * 3600_000).toISOString(), to: now }, 400, 'start_before_retention')
  t.match(tooOld.json<ErrorBody>().message, 'Events are kept from')

  const few = await createSubscription(app, organization, { start: 'beginning', event_types: ['few'] })
  await sendEvents(app, organization, [...times(11), 'few', 'few'])
  await take(app, organization, subscription.id, 11)
  await take(app, organization, few.id, 2)
  await refused({ from: hourAgo, to: new Date(Date.now() + 1000).toISOString() }, 400, 'replay_too_large')

  // Not leased from, these replays keep reading their range.
  const range = { from: new Date(Date.now() - 3600_000), to: new Date() }
  const fewUrl = `/api/subscriptions/${few.id}`
  const first = await startReplay(app, organization, few.id, range)
  t.match(first, { total: 2, status: 'running' })
  await startReplay(app, organization, few.id, range)
  const tooMany = await request(app, organization, 'POST', `${fewUrl}/replay`, { from: range.from.toISOString(), to: range.to.toISOString() })
  t.equal(tooMany.statusCode, 409)
  t.equal(tooMany.json<ErrorBody>().code, 'too_many_replays')
  await request(app, organization, 'DELETE', `${fewUrl}/replays/${first.replay_id}`)
  t.ok(await startReplay(app, organization, few.id, range), 'a cancelled replay no longer counts')
  const empty = await startReplay(app, organization, few.id, { from: new Date(Date.now() - 7200_000), to: range.from })
  t.match(empty, { total: 0, done: 0, status: 'finished' }, 'a range without events has finished at once (and does not count)')

  for (const [method, path] of [['POST', url], ['GET', `/api/subscriptions/${subscription.id}/replays`], ['GET', `/api/subscriptions/${subscription.id}/replays/${first.replay_id}`], ['DELETE', `/api/subscriptions/${subscription.id}/replays/${first.replay_id}`]] as const) {
    const response = await request(app, other, method, path, method === 'POST' ? { from: hourAgo, to: now } : undefined)
    t.equal(response.statusCode, 404, `${method} ${path} as another organization`)
  }
  const unknown = await request(app, organization, 'GET', `/api/subscriptions/${subscription.id}/replays/00000000-0000-4000-8000-000000000000`)
  t.equal(unknown.statusCode, 404)
})

t.test('a rate cap bounds what leases hand out, and a waiting lease looks again when a token is due', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const started = Date.now()
  const subscription = await createSubscription(app, organization, { start: 'beginning', rate_limit_per_second: 20 })
  t.equal(subscription.rate_limit_per_second, 20)
  const sent = await sendEvents(app, organization, times(200))
  await waitFor('the events to be listed', async () => (await request(app, organization, 'GET', '/api/inbox?limit=1')).json<{ count: number }>().count > 0)

  // No event arrives while these leases wait: only the cap's refill can end their waits with events.
  const seen: string[] = []
  for (let i = 0; i < 4; i++) {
    const leased = await lease(app, organization, subscription.id, { limit: 100, wait_seconds: 10 })
    t.ok(leased.events.length > 0, `lease ${i + 1} got events once tokens were due`)
    seen.push(...idsOf(leased))
    await ack(app, organization, subscription.id, { lease_id: leased.lease_id })
  }
  // The bucket starts empty and refills at 20/s up to 20: never more than that many since the start.
  const bound = 20 * (Date.now() - started) / 1000
  t.ok(seen.length <= bound, `${seen.length} handed out, at most ${bound.toFixed(1)} allowed by the cap`)
  t.same(seen, sent.slice(0, seen.length), 'in order')

  const uncapped = await request(app, organization, 'PATCH', `/api/subscriptions/${subscription.id}`, { rate_limit_per_second: null })
  t.equal(uncapped.json<{ rate_limit_per_second: number | null }>().rate_limit_per_second, null)
  const rest = [...idsOf(await lease(app, organization, subscription.id, { limit: 100 })), ...idsOf(await lease(app, organization, subscription.id, { limit: 100 }))]
  t.same(rest, sent.slice(seen.length), 'without the cap the rest comes at once')
})
