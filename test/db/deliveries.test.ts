import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { claimDeliveries, recordAttempts, redeliverEvent, type AttemptOutcome } from '../../db/deliveries.js'
import { inTransaction } from '../../db/transaction.js'
import { buildTestApp, checkedOutAfterSettling, createOrganization, sendEvent, type TestOrganization } from '../support/helpers.js'
import { attemptOutcome } from '../support/deliveries.js'
import { createWebhook, deliveryStatus } from '../support/webhooks.js'

// Straight at db/deliveries.ts: claims and recorded outcomes with no worker or receiver, so each step's effect on
// the event's delivery_status is checked on its own.

interface DeliveryRow {
  id: string
  event_id: string
  event_created_at: string
  webhook_id: string
  attempts: number
}

async function pendingDeliveries (app: FastifyInstance, eventId: string): Promise<DeliveryRow[]> {
  const { rows } = await app.pg.query<DeliveryRow>(
    `SELECT id, event_id, event_created_at::text AS event_created_at, webhook_id, attempts FROM deliveries
     WHERE event_id = $1 AND status = 'pending' ORDER BY created_at`, [eventId])
  return rows
}


const record = async (app: FastifyInstance, outcomes: AttemptOutcome[]) =>
  await inTransaction(app.pg.pool, (client) => recordAttempts(client, outcomes, 0))

async function eventWithTwoEndpoints (t: Parameters<typeof buildTestApp>[0], app: FastifyInstance, organization: TestOrganization): Promise<{ eventId: string, a: DeliveryRow, b: DeliveryRow }> {
  const hookA = await createWebhook(t, app, organization, { url: 'http://127.0.0.1:9/a' })
  await createWebhook(t, app, organization, { url: 'http://127.0.0.1:9/b' })
  const { event_id: eventId } = (await sendEvent(app, organization, { type: 'two.endpoints', payload: { n: 1 } })).json<{ event_id: string }>()
  const rows = await pendingDeliveries(app, eventId)
  const a = rows.find((row) => row.webhook_id === hookA.id)
  const b = rows.find((row) => row.webhook_id !== hookA.id)
  if (a === undefined || b === undefined) throw new Error(`expected a delivery per endpoint, found ${rows.length}`)
  return { eventId, a, b }
}

t.test('an event\'s delivery_status follows each endpoint\'s latest delivery, batch by batch', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const { eventId, a, b } = await eventWithTwoEndpoints(t, app, organization)
  t.equal(await deliveryStatus(app, organization, eventId), 'pending')

  await record(app, [attemptOutcome(a, 'succeeded'), attemptOutcome(b, 'retry')])
  t.equal(await deliveryStatus(app, organization, eventId), 'pending', 'one endpoint delivered, the other retrying')

  await record(app, [attemptOutcome({ ...b, attempts: 1 }, 'succeeded')])
  t.equal(await deliveryStatus(app, organization, eventId), 'delivered', 'the second endpoint finished in a later batch')

  t.equal(await redeliverEvent(app.pg, organization.id, eventId, a.webhook_id), 1)
  t.equal(await deliveryStatus(app, organization, eventId), 'pending', 'a redelivery reopens it')
  const [again] = await pendingDeliveries(app, eventId)
  if (again === undefined) throw new Error('no redelivery queued')
  await record(app, [attemptOutcome(again, 'failed')])
  t.equal(await deliveryStatus(app, organization, eventId), 'failed', 'the newest delivery to an endpoint decides, not its earlier success')

  await record(app, [attemptOutcome(again, 'succeeded')])
  t.equal(await deliveryStatus(app, organization, eventId), 'failed', 'an outcome for a delivery already finished changes nothing')
  const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM delivery_attempts WHERE event_id = $1', [eventId])
  t.equal(rows[0]?.n, 4, 'one attempt logged per recorded outcome of a pending delivery')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('finishing both endpoints\' deliveries in one batch, and an endpoint failing while the other succeeds', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const together = await eventWithTwoEndpoints(t, app, organization)
  const mixed = await eventWithTwoEndpoints(t, app, organization)
  await record(app, [attemptOutcome(together.a, 'succeeded'), attemptOutcome(together.b, 'succeeded'), attemptOutcome(mixed.a, 'succeeded'), attemptOutcome(mixed.b, 'failed')])
  t.equal(await deliveryStatus(app, organization, together.eventId), 'delivered')
  t.equal(await deliveryStatus(app, organization, mixed.eventId), 'failed')
})

t.test('a claim rewrites its rows in place (HOT updates: no new index entries)', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const webhook = await createWebhook(t, app, organization, { url: 'http://127.0.0.1:9/hot' })
  for (let i = 0; i < 20; i++) await sendEvent(app, organization, { type: 'hot.claim', payload: { i } })
  const client = await app.pg.pool.connect()
  try {
    await client.query('BEGIN')
    // Counted before and after within this transaction: PostgreSQL 15 also shows counts a pooled backend has not
    // flushed from earlier transactions (other tests', through PgBouncer), and nothing else touches them meanwhile.
    const counts = async () => (await client.query<{ updated: number, hot: number }>(
      `SELECT coalesce(sum(n_tup_upd), 0)::int AS updated, coalesce(sum(n_tup_hot_upd), 0)::int AS hot
       FROM pg_stat_xact_user_tables WHERE relid IN (SELECT relid FROM pg_partition_tree('deliveries') WHERE isleaf)`)).rows[0]
    const before = await counts()
    // Only this endpoint's rows: the database is shared with the tests running beside this one.
    const claimed = await claimDeliveries(client, { limit: 20, claimSeconds: 30, capacities: [[webhook.id, 20]], defaultCapacity: 0 })
    t.equal(claimed.length, 20, 'all 20 claimed')
    const after = await counts()
    const options = await client.query<{ options: string[] | null }>(
      'SELECT reloptions AS options FROM pg_class WHERE oid = (SELECT tableoid FROM deliveries WHERE id = $1)', [claimed[0]?.id])
    t.same(options.rows[0]?.options, ['fillfactor=50'], 'the day partition leaves room on its pages')
    // Summed over the day partitions: the events may straddle midnight.
    t.equal((after?.updated ?? 0) - (before?.updated ?? 0), 20, 'one update per claimed row')
    t.equal((after?.hot ?? 0) - (before?.hot ?? 0), 20, 'every one of them a HOT update')
  } finally {
    await client.query('ROLLBACK')
    client.release()
  }
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('a claim smaller than the due work takes every endpoint\'s first before anyone\'s second, in each organization and across them', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const busy = await createOrganization(app)
  const other = await createOrganization(app)
  const a = await createWebhook(t, app, busy, { url: 'http://127.0.0.1:9/a', event_types: ['backlog.*'] })
  const c = await createWebhook(t, app, busy, { url: 'http://127.0.0.1:9/c', event_types: ['late.*'] })
  const b = await createWebhook(t, app, other, { url: 'http://127.0.0.1:9/b' })
  // The busy endpoint's four deliveries are the oldest due; the other two endpoints' come after them.
  for (let i = 0; i < 4; i++) await sendEvent(app, busy, { type: 'backlog.item', payload: { i } })
  await sendEvent(app, other, { type: 'late.other', payload: {} })
  await sendEvent(app, busy, { type: 'late.busy', payload: {} })
  const capacities: Array<[string, number]> = [[a.id, 10], [b.id, 10], [c.id, 10]]
  const client = await app.pg.pool.connect()
  try {
    await client.query('BEGIN')
    // Only these endpoints' rows (defaultCapacity 0): the database is shared with the tests running beside this one.
    const claimOf = async (limit: number, organizationCapacities: Array<[string, number]> = []) => {
      await client.query('SAVEPOINT claim')
      const claimed = await claimDeliveries(client, { limit, claimSeconds: 30, capacities, defaultCapacity: 0, organizationCapacities })
      await client.query('ROLLBACK TO SAVEPOINT claim')
      return claimed.map((row) => row.webhook_id).sort()
    }
    t.same(await claimOf(6), [a.id, a.id, a.id, a.id, b.id, c.id].sort(), 'control: room for all, all six are claimed')
    t.same(await claimOf(3), [a.id, b.id, c.id].sort(), 'room for three: one each, though the busy endpoint\'s are the oldest')
    t.same(await claimOf(4), [a.id, a.id, b.id, c.id].sort(), 'room for four: then the oldest second')
    t.same(await claimOf(6, [[busy.id, 1]]), [a.id, b.id].sort(), 'an organization with room for one: its endpoints\' oldest first, the other organization unaffected')
  } finally {
    await client.query('ROLLBACK')
    client.release()
  }
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})
