import t from 'tap'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { buildTestApp, checkedOutAfterSettling, createOrganization, sendEvent, taggedDatabaseUrl } from '../support/helpers.js'
import { inTransaction } from '../../db/transaction.js'
import { watchLongPolls } from '../support/long-polls.js'
import { testWorkerOptions } from '../support/worker.js'
import { DeliveryWorker } from '../../lib/webhooks/delivery-worker.js'
import { createWebhook, startReceiver, waitFor } from '../support/webhooks.js'

/**
 * What a database restart or failover does to a service: the server ends every connection with 57P01
 * ("terminating connection due to administrator command"). Done here to one app's connections only (found by
 * their application name), so the rest of the suite, sharing the server, is untouched.
 */
async function cutConnections (applicationName: string): Promise<number> {
  const admin = new pg.Client({ connectionString: directUrl })
  await admin.connect()
  try {
    const { rows } = await admin.query<{ n: number }>(
      'SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1', [applicationName])
    return rows[0]?.n ?? 0
  } finally {
    await admin.end()
  }
}

/**
 * The server itself, also when the suite runs through PgBouncer (.ci/pgbouncer.sh): a pooler's server
 * connections carry the application name of whichever client used them last, so cutting by name there could hit
 * other tests' clients, and the admin connection's own.
 */
const directUrl = process.env.DATABASE_DIRECT_URL ?? process.env.DATABASE_URL as string

/** The app's pool and listening connection, both directly to the server and named, so exactly they can be cut. */
function connectionsNamed (applicationName: string): Record<string, string> {
  const url = taggedDatabaseUrl(applicationName, directUrl)
  return { DATABASE_URL: url, DATABASE_DIRECT_URL: url }
}

t.test('the process survives its connections being cut, under load and again and again, and is woken by notifications after', async (t) => {
  const applicationName = `restart-test-${randomUUID()}`
  const app = await buildTestApp(t, {
    ...connectionsNamed(applicationName),
    WEBHOOK_ALLOW_PRIVATE_URLS: 'true'
  })
  // A worker on the app's pool and listener that polls once an hour: a delivery after the cuts was woken by a notification.
  const worker = new DeliveryWorker(testWorkerOptions(app, { pollIntervalMs: 3_600_000 }))
  worker.start()
  t.teardown(() => worker.stop())
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  await createWebhook(t, app, organization, { url: receiver.url, event_types: ['after.restart'] })

  for (let round = 0; round < 5; round++) {
    await waitFor('the listener to be connected', () => app.wakeUps.connected)
    const load = Array.from({ length: 40 }, (_, i) => sleep(i * 5).then(() => sendEvent(app, organization, { type: 'during.restart', payload: { round, i } })))
    await sleep(60)
    t.ok(await cutConnections(applicationName) > 0, `round ${round}: the app's connections were cut`)
    const statuses = (await Promise.all(load)).map((response) => response.statusCode)
    t.same(statuses.filter((status) => status !== 201 && status !== 503), [], `round ${round}: every answer is 201, or 503 while the database was away`)
  }

  await waitFor('the listener to reconnect', () => app.wakeUps.connected)
  const ready = await app.inject({ method: 'GET', url: '/health/ready' })
  t.equal(ready.statusCode, 200, 'ready again')

  const watch = watchLongPolls(t, app)
  const longPoll = app.inject({ method: 'POST', url: '/api/inbox/lease', headers: organization.headers, payload: { wait_seconds: 20, type: 'wake.me' } })
  await watch.waiting(1)
  t.equal((await sendEvent(app, organization, { type: 'wake.me', payload: {} })).statusCode, 201)
  const woken = (await longPoll).json<{ events: Array<{ type: string }> }>()
  t.same(woken.events.map((event) => event.type), ['wake.me'], 'a waiting long poll is woken by the new event')
  // Announcements of this organization's earlier events may wake it first (and find nothing of type wake.me).
  t.ok(watch.woken >= 1 && watch.looks === watch.woken + 1,
    `by its notification: each look after the first followed an arrival, none the deadline (${watch.woken} arrivals, ${watch.looks} looks)`)

  const { event_id: eventId } = (await sendEvent(app, organization, { type: 'after.restart', payload: {} })).json<{ event_id: string }>()
  await waitFor('the webhook delivery', () => receiver.received.some((request) => request.headers['webhook-id'] === eventId), 60_000)
  t.pass('the delivery worker was woken by a notification')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('a connection cut while a transaction holds it between statements fails that transaction only', async (t) => {
  const applicationName = `restart-test-${randomUUID()}`
  const app = await buildTestApp(t, connectionsNamed(applicationName))
  for (let round = 0; round < 10; round++) {
    // pg takes the pool's error listener off a checked-out client: without one of our own, this error would
    // be an uncaught exception that ends the process (and this test file).
    const outcome = inTransaction(app.pg.pool, async (client) => {
      await client.query('SELECT 1')
      await cutConnections(applicationName)
      await sleep(100)
      await client.query('SELECT 2')
    })
    await t.rejects(outcome, `round ${round}: the transaction fails`)
  }
  t.equal((await app.inject({ method: 'GET', url: '/health/ready' })).statusCode, 200, 'the app answers after')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})
