import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { DeliveryWorker } from '../../../lib/webhooks/delivery-worker.js'
import { EndpointLimits } from '../../../lib/webhooks/endpoint-limits.js'
import { parseRetrySchedule } from '../../../lib/webhooks/retry-schedule.js'
import { buildTestApp, checkedOutAfterSettling, createOrganization, type TestOrganization } from '../../support/helpers.js'
import { createWebhook, startReceiver, waitFor, type Receiver } from '../../support/webhooks.js'

const ok = { succeeded: true, congested: false, retryAfterSeconds: undefined }
const overloaded = { succeeded: false, congested: true, retryAfterSeconds: undefined }

t.test('endpoint concurrency halves on congestion, pauses for Retry-After, ignores plain refusals and grows back', async (t) => {
  const limits = new EndpointLimits({ initial: 16, max: 20 })
  const now = 1_000_000
  t.equal(limits.available('a', now), 16, 'a new endpoint starts at the initial window')
  for (let i = 0; i < 16; i++) limits.started('a', now)
  t.equal(limits.available('a', now), 0, 'no room while the window is in flight')
  limits.finished('a', overloaded, now)
  t.equal(limits.windowOf('a'), 8, 'a 5xx/timeout halves the window')
  limits.finished('a', overloaded, now + 10)
  t.equal(limits.windowOf('a'), 8, 'failures of the same congestion count once')
  limits.finished('a', { succeeded: false, congested: true, retryAfterSeconds: 3 }, now + 2000)
  t.equal(limits.windowOf('a'), 4)
  for (let i = 0; i < 13; i++) limits.finished('a', { succeeded: false, congested: false, retryAfterSeconds: undefined }, now + 2000)
  t.equal(limits.available('a', now + 2000), 0, 'paused by Retry-After')
  t.equal(limits.available('a', now + 4999), 0, 'still paused just before it ends')
  t.equal(limits.available('a', now + 5001), 4, 'room again after Retry-After, as wide as the window')
  t.same(limits.capacities(now + 2000), [['a', 0]], 'the claim is told this endpoint has no room')
  limits.finished('a', { succeeded: false, congested: false, retryAfterSeconds: undefined }, now + 6000)
  t.equal(limits.windowOf('a'), 4, 'a 4xx refusal says nothing about load')
  for (let i = 0; i < 200; i++) limits.finished('a', ok, now + 7000)
  t.equal(limits.windowOf('a'), 20, 'successes grow it back up to the maximum')
  t.equal(limits.available('b', now), 16, 'other endpoints are unaffected')
})

/** A worker of this test's own (not the app's), so the test can read its endpoint windows. */
function startWorker (t: Parameters<typeof buildTestApp>[0], app: FastifyInstance, settings: Partial<ConstructorParameters<typeof DeliveryWorker>[0]> = {}): DeliveryWorker {
  const worker = new DeliveryWorker({
    pool: app.pg.pool,
    wakeUps: app.wakeUps,
    log: { info: () => {}, warn: () => {} },
    schedule: parseRetrySchedule('0,1,1,1,1'),
    timeoutMs: 5000,
    allowPrivateUrls: true,
    disableAfterFailures: 0,
    endpointConcurrency: 8,
    endpointMaxConcurrency: 16,
    workerConcurrency: 64,
    claimSeconds: 30,
    pollIntervalMs: 200,
    secrets: app.webhookSecrets,
    ...settings
  })
  worker.start()
  t.teardown(() => worker.stop())
  return worker
}

async function queueEvents (app: FastifyInstance, organization: TestOrganization, count: number, type = 'engine.test'): Promise<string[]> {
  const ids: string[] = []
  for (let sent = 0; sent < count; sent += 100) {
    const events = Array.from({ length: Math.min(100, count - sent) }, (_, i) => ({ type, payload: { n: sent + i } }))
    const response = await app.inject({ method: 'POST', url: '/api/events/batch', headers: organization.headers, payload: { events } })
    ids.push(...response.json<{ results: Array<{ event_id: string }> }>().results.map((result) => result.event_id))
  }
  return ids
}

const receivedIds = (receiver: Receiver) => new Set(receiver.received.map((request) => String(request.headers['webhook-id'])))

t.test('an endpoint answering 429 with Retry-After is backed off, then recovers, and gets every event', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  let refusing = true
  receiver.respond = (_request, response) => {
    if (refusing) response.writeHead(429, { 'retry-after': '1' }).end()
    else response.writeHead(204).end()
  }
  const webhook = await createWebhook(t, app, organization, { url: receiver.url })
  const ids = await queueEvents(app, organization, 40)
  const worker = startWorker(t, app)
  await waitFor('the first 429s', () => receiver.received.length >= 8)
  t.ok(worker.endpointWindow(webhook.id) < 8, `the window shrank below its start of 8 (${worker.endpointWindow(webhook.id)})`)
  refusing = false
  await waitFor('every event delivered', () => receivedIds(receiver).size === ids.length)
  await waitFor('every event recorded as delivered', async () => {
    const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE id = ANY($1::uuid[]) AND delivery_status = \'delivered\'', [ids])
    return rows[0]?.n === ids.length
  })
  await waitFor('the window to grow back', async () => {
    await queueEvents(app, organization, 20)
    return worker.endpointWindow(webhook.id) >= 8
  })
  t.pass('recovered after the receiver stopped refusing')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('one organization\'s backlog does not delay another organization\'s new event', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const busy = await createOrganization(app)
  const quiet = await createOrganization(app)
  const slowReceiver = await startReceiver(t)
  slowReceiver.respond = (_request, response) => { setTimeout(() => response.writeHead(204).end(), 50) }
  const quietReceiver = await startReceiver(t)
  const busyHook = await createWebhook(t, app, busy, { url: slowReceiver.url })
  await createWebhook(t, app, quiet, { url: quietReceiver.url })
  await queueEvents(app, busy, 2000)
  // At most 4 sends at once to the busy endpoint: its backlog takes well over ten seconds to drain.
  startWorker(t, app, { endpointConcurrency: 4, endpointMaxConcurrency: 4 })
  await waitFor('the backlog to start draining', () => slowReceiver.received.length >= 10)
  const [quietEvent] = await queueEvents(app, quiet, 1)
  await waitFor('the quiet organization\'s event', () => receivedIds(quietReceiver).has(quietEvent ?? ''))
  const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM deliveries WHERE webhook_id = $1 AND status = \'pending\'', [busyHook.id])
  t.ok((rows[0]?.n ?? 0) > 1000, `delivered while the other organization still had ${rows[0]?.n} deliveries waiting`)
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('a slow endpoint does not hold back a fast one', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const slow = await startReceiver(t)
  slow.respond = (_request, response) => { setTimeout(() => response.writeHead(204).end(), 2000) }
  const fast = await startReceiver(t)
  await createWebhook(t, app, organization, { url: slow.url })
  await createWebhook(t, app, organization, { url: fast.url })
  const ids = await queueEvents(app, organization, 200)
  startWorker(t, app)
  await waitFor('every event at the fast endpoint', () => receivedIds(fast).size === ids.length)
  t.ok(slow.received.length < ids.length / 2, `the fast endpoint got all ${ids.length} while the slow one had ${slow.received.length}`)
  await waitFor('the slow endpoint catching up', () => receivedIds(slow).size === ids.length, 120_000)
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('retries go out when they come due, not at the next poll', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  receiver.respond = (_request, response) => { response.writeHead(500).end() }
  await createWebhook(t, app, organization, { url: receiver.url })
  const ids = await queueEvents(app, organization, 6)
  // Polling once a minute: every retry within the wait below was started by the worker's own due times.
  startWorker(t, app, { pollIntervalMs: 60_000, schedule: parseRetrySchedule('0,1,1') })
  await waitFor('three attempts of every event', () => receiver.received.length >= ids.length * 3, 30_000)
  await waitFor('every delivery recorded as failed', async () => {
    const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE id = ANY($1::uuid[]) AND delivery_status = \'failed\'', [ids])
    return rows[0]?.n === ids.length
  })
  t.equal(receiver.received.length, ids.length * 3, 'exactly the scheduled attempts')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})
