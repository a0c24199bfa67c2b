import t from 'tap'
import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import type { PoolClient, QueryConfig } from 'pg'
import {
  finishedEvents, lockEvents, logAttempts, planKeyLookups, recordAttempts, settleEventStates, updateDeliveries, updateFailureStreaks,
  type DeliveryRowStatus, type EventKey, type RecordedAttempt
} from '../../db/deliveries.js'
import type { Queryable } from '../../db/queryable.js'
import { inTransaction } from '../../db/transaction.js'
import { buildTestApp, checkedOutAfterSettling, createOrganization, sendEvent, type TestOrganization } from '../support/helpers.js'
import { attemptOutcome } from '../support/deliveries.js'
import { createWebhook } from '../support/webhooks.js'

// Each statement of recordAttempts on its own: it does its one thing and leaves every other table alone. The
// whole recording is covered by test/db/deliveries.test.ts and the worker's tests.

interface DeliveryRow {
  id: string
  event_id: string
  event_created_at: string
  webhook_id: string
  status: DeliveryRowStatus
  attempts: number
  next_attempt_at: Date
  claimed_until: Date | null
}

interface Fixture {
  app: FastifyInstance
  organization: TestOrganization
}

async function fixture (t: Parameters<typeof buildTestApp>[0], overrides: Record<string, string> = {}): Promise<Fixture> {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true', ...overrides })
  return { app, organization: await createOrganization(app) }
}

/** An endpoint of the fixture's organization; every event of the organization goes to every endpoint it has then. */
async function addWebhook (t: Parameters<typeof buildTestApp>[0], { app, organization }: Fixture, consecutiveFailures = 0): Promise<string> {
  const { id } = await createWebhook(t, app, organization, { url: `http://127.0.0.1:9/${randomUUID()}` })
  if (consecutiveFailures > 0) await app.pg.query('UPDATE webhooks SET consecutive_failures = $2 WHERE id = $1', [id, consecutiveFailures])
  return id
}

/** Sends one event; returns its key and its deliveries to the given endpoints, in their order. */
async function eventTo ({ app, organization }: Fixture, webhookIds: string[]): Promise<{ event: EventKey, deliveries: DeliveryRow[] }> {
  const response = await sendEvent(app, organization, { type: 'recording.test', payload: { at: Date.now() } })
  const { event_id: eventId } = response.json<{ event_id: string }>()
  const all = await deliveriesOf(app, eventId)
  const deliveries = webhookIds.flatMap((webhookId) => all.filter((delivery) => delivery.webhook_id === webhookId))
  const first = deliveries[0]
  if (first === undefined || deliveries.length !== webhookIds.length) throw new Error(`expected a delivery per endpoint, found ${all.length}`)
  return { event: { id: eventId, created_at: first.event_created_at }, deliveries }
}

async function deliveriesOf (app: FastifyInstance, eventId: string): Promise<DeliveryRow[]> {
  const { rows } = await app.pg.query<DeliveryRow>(
    `SELECT id, event_id, event_created_at::text AS event_created_at, webhook_id, status, attempts, next_attempt_at, claimed_until
     FROM deliveries WHERE event_id = $1 ORDER BY created_at, id`, [eventId])
  return rows
}

async function eventState (app: FastifyInstance, event: EventKey): Promise<{ delivery_status: string, version: string }> {
  const { rows } = await app.pg.query<{ delivery_status: string, version: string }>(
    'SELECT delivery_status, xmin::text AS version FROM events WHERE id = $1 AND created_at = $2', [event.id, event.created_at])
  const row = rows[0]
  if (row === undefined) throw new Error(`no event ${event.id}`)
  return row
}

interface WebhookState {
  enabled: boolean
  disabled_reason: string | null
  consecutive_failures: number
  /** The row version: unchanged when the row was not written. */
  version: string
}

async function webhookState (app: FastifyInstance, id: string): Promise<WebhookState> {
  const { rows } = await app.pg.query<WebhookState>(
    'SELECT enabled, disabled_reason, consecutive_failures, xmin::text AS version FROM webhooks WHERE id = $1', [id])
  const row = rows[0]
  if (row === undefined) throw new Error(`no webhook ${id}`)
  return row
}

interface AttemptLogRow {
  delivery_id: string
  webhook_id: string
  event_created_at: string
  attempt: number
  status: string
  response_status: number | null
  error: string | null
  duration_ms: number
  attempted_at: Date
  next_attempt_at: Date | null
}

async function attemptsOf (app: FastifyInstance, eventId: string): Promise<AttemptLogRow[]> {
  const { rows } = await app.pg.query<AttemptLogRow>(
    `SELECT delivery_id, webhook_id, event_created_at::text AS event_created_at, attempt, status, response_status, error, duration_ms, attempted_at, next_attempt_at
     FROM delivery_attempts WHERE event_id = $1 ORDER BY id`, [eventId])
  return rows
}


/** An attempt as updateDeliveries hands it on, for the statements after it. */
function recorded (delivery: DeliveryRow, result: 'succeeded' | 'retry' | 'failed', attemptedAt = new Date()): RecordedAttempt {
  const status: DeliveryRowStatus = result === 'succeeded' ? 'delivered' : result === 'retry' ? 'pending' : 'failed'
  return { ...attemptOutcome(delivery, result, attemptedAt), webhook_id: delivery.webhook_id, status }
}

/** A delivery row for an endpoint that needs no real delivery (the failure streaks read only the endpoint). */
function deliveryFor (webhookId: string): DeliveryRow {
  return { id: randomUUID(), event_id: randomUUID(), event_created_at: new Date().toISOString(), webhook_id: webhookId, status: 'pending', attempts: 0, next_attempt_at: new Date(), claimed_until: null }
}

t.test('finishedEvents: the events of outcomes with no retry, once each', async (t) => {
  const now = new Date()
  const delivery = (eventId: string): DeliveryRow => ({ ...deliveryFor(randomUUID()), event_id: eventId, event_created_at: '2026-12-04 10:00:00.123456+00' })
  const [a, b, c] = [randomUUID(), randomUUID(), randomUUID()]
  const events = finishedEvents([
    attemptOutcome(delivery(a), 'succeeded', now), attemptOutcome(delivery(a), 'failed', now), attemptOutcome(delivery(b), 'retry', now), attemptOutcome(delivery(c), 'failed', now)
  ])
  t.same(events, [{ id: a, created_at: '2026-12-04 10:00:00.123456+00' }, { id: c, created_at: '2026-12-04 10:00:00.123456+00' }])
  t.same(finishedEvents([]), [])
})

t.test('planKeyLookups: no hash or merge joins and no JIT, until the transaction ends', async (t) => {
  const { app } = await fixture(t)
  const client = await app.pg.pool.connect()
  const settings = async () => (await client.query<{ hashjoin: string, mergejoin: string, jit: string }>(
    'SELECT current_setting(\'enable_hashjoin\') AS hashjoin, current_setting(\'enable_mergejoin\') AS mergejoin, current_setting(\'jit\') AS jit')).rows[0]
  try {
    const before = await settings()
    await client.query('BEGIN')
    await planKeyLookups(client)
    t.same(await settings(), { hashjoin: 'off', mergejoin: 'off', jit: 'off' })
    const plan = await client.query<{ 'QUERY PLAN': string }>('EXPLAIN SELECT * FROM generate_series(1, 100000) a JOIN generate_series(1, 100000) b ON a = b')
    t.match(plan.rows[0]?.['QUERY PLAN'], /^Nested Loop/, 'a join the planner would hash is a nested loop')
    await client.query('COMMIT')
    t.same(await settings(), before, 'the session\'s settings are back after the transaction')
  } catch (error) {
    await client.query('ROLLBACK')
    throw error
  } finally {
    client.release()
  }
})

t.test('lockEvents: locks exactly the events given, for the rest of the transaction, and writes nothing', async (t) => {
  const f = await fixture(t)
  const webhook = await addWebhook(t, f)
  const locked = await eventTo(f, [webhook])
  const other = await eventTo(f, [webhook])
  const before = await eventState(f.app, locked.event)
  const tryLock = async (event: EventKey) => await f.app.pg.query('SELECT 1 FROM events WHERE id = $1 AND created_at = $2 FOR NO KEY UPDATE NOWAIT', [event.id, event.created_at])
  await inTransaction(f.app.pg.pool, async (client) => {
    await lockEvents(client, [locked.event])
    await t.rejects(tryLock(locked.event), { code: '55P03' }, 'another transaction cannot take the event\'s lock')
    await t.resolves(tryLock(other.event), 'an event not given is not locked')
  })
  await t.resolves(tryLock(locked.event), 'the lock ends with the transaction')
  t.same(await eventState(f.app, locked.event), before, 'the event row is not written')
  await t.resolves(inTransaction(f.app.pg.pool, (client) => lockEvents(client, [])), 'no events: nothing to lock')
})

t.test('updateDeliveries: moves pending deliveries to their outcome, returns them, and touches nothing else', async (t) => {
  const f = await fixture(t)
  const [hookA, hookB, hookC] = [await addWebhook(t, f), await addWebhook(t, f), await addWebhook(t, f)]
  const { event, deliveries } = await eventTo(f, [hookA, hookB, hookC])
  const [a, b, c] = deliveries
  if (a === undefined || b === undefined || c === undefined) throw new Error('three deliveries expected')
  await f.app.pg.query('UPDATE deliveries SET claimed_until = now() + interval \'1 minute\' WHERE event_id = $1', [event.id])
  const outcomes = [attemptOutcome(a, 'succeeded'), attemptOutcome(b, 'retry'), attemptOutcome(c, 'failed'), attemptOutcome({ ...a, id: randomUUID() }, 'succeeded')]

  const taken = await inTransaction(f.app.pg.pool, (client) => updateDeliveries(client, outcomes))
  t.same(taken.map(({ delivery_id, webhook_id, status }) => ({ delivery_id, webhook_id, status })).sort((x, y) => x.webhook_id.localeCompare(y.webhook_id)),
    [{ delivery_id: a.id, webhook_id: hookA, status: 'delivered' }, { delivery_id: b.id, webhook_id: hookB, status: 'pending' }, { delivery_id: c.id, webhook_id: hookC, status: 'failed' }]
      .sort((x, y) => x.webhook_id.localeCompare(y.webhook_id)),
    'the three deliveries, not the unknown one')
  for (const attempt of taken) t.same(attempt, { ...outcomes.find((o) => o.delivery_id === attempt.delivery_id), webhook_id: attempt.webhook_id, status: attempt.status }, 'each with its outcome')

  const after = await deliveriesOf(f.app, event.id)
  const row = (id: string) => {
    const delivery = after.find((candidate) => candidate.id === id)
    return delivery === undefined ? undefined : { status: delivery.status, attempts: delivery.attempts, claimed_until: delivery.claimed_until, next_attempt_at: delivery.next_attempt_at.getTime() }
  }
  t.same(row(a.id), { status: 'delivered', attempts: 1, claimed_until: null, next_attempt_at: a.next_attempt_at.getTime() }, 'delivered, claim given up')
  t.same(row(b.id), { status: 'pending', attempts: 1, claimed_until: null, next_attempt_at: outcomes[1]?.next_attempt_at?.getTime() }, 'pending until its retry')
  t.same(row(c.id), { status: 'failed', attempts: 1, claimed_until: null, next_attempt_at: c.next_attempt_at.getTime() }, 'failed, with its last retry time kept')

  t.same(await attemptsOf(f.app, event.id), [], 'no attempt logged')
  t.equal((await eventState(f.app, event)).delivery_status, 'pending', 'the event\'s state is not set')
  for (const hook of [hookA, hookB, hookC]) t.match(await webhookState(f.app, hook), { enabled: true, consecutive_failures: 0 }, 'no endpoint\'s streak moves')

  const again = await inTransaction(f.app.pg.pool, (client) => updateDeliveries(client, [attemptOutcome({ ...a, attempts: 1 }, 'failed'), attemptOutcome({ ...c, attempts: 1 }, 'succeeded')]))
  t.same(again, [], 'finished deliveries take no further outcome')
  t.same(await deliveriesOf(f.app, event.id), after, 'and stay as they were')
})

t.test('logAttempts: one attempt row per attempt given, unless the attempt log has expired, and nothing else', async (t) => {
  const f = await fixture(t)
  const [hookA, hookB] = [await addWebhook(t, f), await addWebhook(t, f)]
  const { event, deliveries } = await eventTo(f, [hookA, hookB])
  const [a, b] = deliveries
  if (a === undefined || b === undefined) throw new Error('two deliveries expected')
  const attempts = [recorded(a, 'succeeded'), recorded(b, 'retry')]
  const before = await deliveriesOf(f.app, event.id)

  const client = await f.app.pg.pool.connect()
  try {
    await client.query('BEGIN')
    await client.query('UPDATE retention_horizon SET attempts_from = $1::timestamptz + interval \'1 microsecond\'', [event.created_at])
    await logAttempts(client, attempts)
    const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM delivery_attempts WHERE event_id = $1', [event.id])
    t.equal(rows[0]?.n, 0, 'nothing is logged for an event older than the attempt log keeps')
  } finally {
    // Back to the suite's horizon.
    await client.query('ROLLBACK')
    client.release()
  }

  await inTransaction(f.app.pg.pool, (client) => logAttempts(client, attempts))
  t.same(await attemptsOf(f.app, event.id), attempts.map((attempt) => ({
    delivery_id: attempt.delivery_id,
    webhook_id: attempt.webhook_id,
    event_created_at: attempt.event_created_at,
    attempt: attempt.attempt,
    status: attempt.succeeded ? 'succeeded' : 'failed',
    response_status: attempt.response_status,
    error: attempt.error,
    duration_ms: attempt.duration_ms,
    attempted_at: attempt.attempted_at,
    next_attempt_at: attempt.next_attempt_at
  })))
  t.same(await deliveriesOf(f.app, event.id), before, 'the deliveries are not written')
  t.equal((await eventState(f.app, event)).delivery_status, 'pending', 'nor the event')
  for (const hook of [hookA, hookB]) t.match(await webhookState(f.app, hook), { consecutive_failures: 0 }, 'nor the endpoints')
})

t.test('updateFailureStreaks: finished deliveries move their endpoints\' streaks, and disable past the limit', async (t) => {
  const f = await fixture(t)
  const reachesLimit = await addWebhook(t, f, 1)
  const recovers = await addWebhook(t, f, 3)
  const healthy = await addWebhook(t, f, 0)
  const retrying = await addWebhook(t, f, 1)
  const before = await Promise.all([healthy, retrying].map((id) => webhookState(f.app, id)))
  const at = (ms: number) => new Date(Date.now() - 10_000 + ms)
  const recover = deliveryFor(recovers)

  await inTransaction(f.app.pg.pool, (client) => updateFailureStreaks(client, [
    recorded(deliveryFor(reachesLimit), 'failed'),
    // A success restarts the streak: only the failure after it counts.
    recorded(recover, 'failed', at(1)), recorded(recover, 'succeeded', at(2)), recorded(recover, 'failed', at(3)),
    recorded(deliveryFor(healthy), 'succeeded'),
    recorded(deliveryFor(retrying), 'retry')
  ], 2))

  t.match(await webhookState(f.app, reachesLimit), { enabled: false, disabled_reason: 'disabled after 2 consecutive failed deliveries', consecutive_failures: 2 })
  t.match(await webhookState(f.app, recovers), { enabled: true, disabled_reason: null, consecutive_failures: 1 })
  t.same(await webhookState(f.app, healthy), before[0], 'a success with no streak does not write the endpoint')
  t.same(await webhookState(f.app, retrying), before[1], 'an attempt to be retried does not count')

  const neverDisabled = await addWebhook(t, f, 5)
  await inTransaction(f.app.pg.pool, (client) => updateFailureStreaks(client, [recorded(deliveryFor(neverDisabled), 'failed')], 0))
  t.match(await webhookState(f.app, neverDisabled), { enabled: true, disabled_reason: null, consecutive_failures: 6 }, 'a limit of 0 never disables')

  const { event, deliveries } = await eventTo(f, [healthy])
  const [delivery] = deliveries
  if (delivery === undefined) throw new Error('a delivery expected')
  const rowsBefore = await deliveriesOf(f.app, event.id)
  await inTransaction(f.app.pg.pool, (client) => updateFailureStreaks(client, [recorded(delivery, 'failed')], 2))
  t.equal((await webhookState(f.app, healthy)).consecutive_failures, 1)
  t.same(await deliveriesOf(f.app, event.id), rowsBefore, 'the deliveries are not written')
  t.equal((await eventState(f.app, event)).delivery_status, 'pending', 'nor its event')
  t.same(await attemptsOf(f.app, event.id), [], 'and no attempt is logged')
})

t.test('settleEventStates: each endpoint\'s latest delivery decides the event\'s delivery_status', async (t) => {
  const f = await fixture(t)
  const [hookA, hookB] = [await addWebhook(t, f), await addWebhook(t, f)]
  const setStatus = async (delivery: DeliveryRow, status: DeliveryRowStatus) => await f.app.pg.query('UPDATE deliveries SET status = $2 WHERE id = $1', [delivery.id, status])
  const scenario = async (statuses: [DeliveryRowStatus, DeliveryRowStatus]) => {
    const { event, deliveries } = await eventTo(f, [hookA, hookB])
    for (const [i, delivery] of deliveries.entries()) await setStatus(delivery, statuses[i] ?? 'pending')
    return { event, deliveries: await deliveriesOf(f.app, event.id) }
  }
  const delivered = await scenario(['delivered', 'delivered'])
  const pending = await scenario(['delivered', 'pending'])
  const failed = await scenario(['failed', 'pending'])
  // An older failed delivery to endpoint A, a newer delivered one (a redelivery): the newer decides.
  const redelivered = await scenario(['delivered', 'delivered'])
  await f.app.pg.query(`INSERT INTO deliveries (event_id, event_created_at, webhook_id, status, created_at)
                        VALUES ($1, $2, $3, 'failed', now() - interval '1 hour')`, [redelivered.event.id, redelivered.event.created_at, hookA])
  redelivered.deliveries = await deliveriesOf(f.app, redelivered.event.id)
  const untouched = await scenario(['failed', 'failed'])
  const unchanged = await scenario(['pending', 'pending'])
  const unchangedBefore = await eventState(f.app, unchanged.event)
  const untouchedBefore = await eventState(f.app, untouched.event)

  await inTransaction(f.app.pg.pool, (client) => settleEventStates(client, [delivered, pending, failed, redelivered, unchanged].map((scenario) => scenario.event)))

  t.equal((await eventState(f.app, delivered.event)).delivery_status, 'delivered', 'every endpoint delivered')
  t.equal((await eventState(f.app, pending.event)).delivery_status, 'pending', 'an endpoint still pending')
  t.equal((await eventState(f.app, failed.event)).delivery_status, 'failed', 'an endpoint failed, whatever the others')
  t.equal((await eventState(f.app, redelivered.event)).delivery_status, 'delivered', 'an endpoint\'s latest delivery decides')
  t.same(await eventState(f.app, unchanged.event), unchangedBefore, 'an event already in its state is not written')
  t.same(await eventState(f.app, untouched.event), untouchedBefore, 'an event not given is left alone')
  for (const scenario of [delivered, pending, failed, redelivered]) {
    t.same(await deliveriesOf(f.app, scenario.event.id), scenario.deliveries, 'its deliveries are not written')
    t.same(await attemptsOf(f.app, scenario.event.id), [], 'and no attempt is logged')
  }
  for (const hook of [hookA, hookB]) t.match(await webhookState(f.app, hook), { enabled: true, consecutive_failures: 0 }, 'no endpoint\'s streak moves')
})

/**
 * The client, except that the statement named `failing` fails in the database (after `beforeFailing`, which
 * sees the transaction's earlier writes).
 */
function failingOn (client: PoolClient, failing: string, beforeFailing: () => Promise<void>): Queryable {
  const query = async (config: QueryConfig) => {
    if (config.name !== failing) return await client.query(config)
    await beforeFailing()
    return await client.query('SELECT 1 / 0')
  }
  return { query: query as Queryable['query'] }
}

t.test('recordAttempts: a failing last statement rolls back the earlier ones, and the pool client goes back', async (t) => {
  const f = await fixture(t, { DATABASE_POOL_MAX: '3' })
  const webhook = await addWebhook(t, f, 1)
  const { event, deliveries } = await eventTo(f, [webhook])
  const [delivery] = deliveries
  if (delivery === undefined) throw new Error('a delivery expected')
  const outcomes = [attemptOutcome(delivery, 'failed')]
  const webhookBefore = await webhookState(f.app, webhook)
  const eventBefore = await eventState(f.app, event)

  let checkedEarlierWrites = false
  const repeats = 50
  for (let i = 0; i < repeats; i++) {
    await t.rejects(inTransaction(f.app.pg.pool, (client) => recordAttempts(failingOn(client, 'settle-event-states', async () => {
      if (checkedEarlierWrites) return
      checkedEarlierWrites = true
      // The transaction's own view, just before its last statement fails.
      const row = await client.query<{ status: string, attempts: number }>('SELECT status, attempts FROM deliveries WHERE id = $1', [delivery.id])
      t.same(row.rows[0], { status: 'failed', attempts: 1 }, 'the delivery was updated')
      const logged = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM delivery_attempts WHERE delivery_id = $1', [delivery.id])
      t.equal(logged.rows[0]?.n, 1, 'the attempt was logged')
      const hook = await client.query<{ enabled: boolean, consecutive_failures: number }>('SELECT enabled, consecutive_failures FROM webhooks WHERE id = $1', [webhook])
      t.same(hook.rows[0], { enabled: false, consecutive_failures: 2 }, 'the endpoint was disabled')
    }), outcomes, 2)), { code: '22012' }, 'the forced error (division by zero) reaches the caller')
  }
  t.ok(checkedEarlierWrites)

  t.same(await deliveriesOf(f.app, event.id), deliveries, 'the delivery update is rolled back')
  t.same(await attemptsOf(f.app, event.id), [], 'so is the attempt log')
  t.same(await webhookState(f.app, webhook), webhookBefore, 'and the endpoint\'s streak and disabling')
  t.same(await eventState(f.app, event), eventBefore, 'the event is as it was')
  t.equal(await checkedOutAfterSettling(f.app), 0, `no pool client checked out after ${repeats} failed recordings`)
  t.equal(f.app.pg.pool.waitingCount, 0, 'nothing waits for a client')
  t.ok(f.app.pg.pool.totalCount <= 3, 'the pool never grew past its maximum')

  await inTransaction(f.app.pg.pool, (client) => recordAttempts(client, outcomes, 2))
  t.match(await deliveriesOf(f.app, event.id), [{ status: 'failed', attempts: 1 }], 'the same batch records once nothing fails')
  t.equal((await eventState(f.app, event)).delivery_status, 'failed')
  t.match(await webhookState(f.app, webhook), { enabled: false, consecutive_failures: 2 })
  t.equal((await attemptsOf(f.app, event.id)).length, 1)
})
