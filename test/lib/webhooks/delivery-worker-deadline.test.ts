import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { randomUUID } from 'node:crypto'
import type { LookupAddress } from 'node:dns'
import pg from 'pg'
import { DeliveryWorker, type DeliveryWorkerOptions } from '../../../lib/webhooks/delivery-worker.js'
import { OrganizationSlots, organizationSlotLimit } from '../../../lib/webhooks/endpoint-limits.js'
import { parseRetrySchedule } from '../../../lib/webhooks/retry-schedule.js'
import type { SendOutcome } from '../../../lib/webhooks/send.js'
import type { Resolver } from '../../../lib/webhooks/url-guard.js'
import { buildTestApp, checkedOutAfterSettling, createOrganization, directDatabaseUrl, type Teardown, type TestOrganization } from '../../support/helpers.js'
import { testWorkerOptions } from '../../support/worker.js'
import { OK_HEAD, answerOk, endlessBody, startScriptedReceiver, trickle, type ScriptedRequest } from '../../support/scripted-receiver.js'
import { createWebhook, deliveryStatus, waitFor } from '../../support/webhooks.js'

type Test = Parameters<typeof buildTestApp>[0]

/**
 * A database of this file's own on the suite's server, dropped when the file is done: the workers here claim
 * whatever is due in their database, and other test files (and other checkouts' runs) fill the suite's at the
 * same time, with receivers that hang on purpose.
 */
async function ownDatabase (t: Teardown): Promise<string> {
  const suiteUrl = process.env.DATABASE_URL as string
  const name = `deadline_${randomUUID().replaceAll('-', '')}`
  const admin = async (sql: string) => {
    const client = new pg.Client({ connectionString: directDatabaseUrl(suiteUrl) })
    await client.connect()
    try {
      await client.query(sql)
    } finally {
      await client.end()
    }
  }
  await admin(`CREATE DATABASE ${name}`)
  t.teardown(() => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  const url = new URL(suiteUrl)
  url.pathname = `/${name}`
  return url.toString()
}

const DATABASE_URL = await ownDatabase(t)
/** An app on this file's database (it runs no worker of its own: each test starts its own). */
const appFor = (t: Test) => buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true', DATABASE_URL })

// Receivers trickle one byte per 100 ms: an answer's head takes OK_HEAD.length × 100 ms, far past every
// deadline below, so only an abort ends such an attempt.
const TRICKLE_EVERY_MS = 100

/** A worker of the test's own (the app runs none), stopped when the test ends unless the test stopped it. */
function startWorker (t: Test, app: FastifyInstance, settings: Partial<DeliveryWorkerOptions> = {}): DeliveryWorker {
  const worker = new DeliveryWorker(testWorkerOptions(app, {
    schedule: parseRetrySchedule('0'), endpointConcurrency: 4, endpointMaxConcurrency: 4, pollIntervalMs: 100, ...settings
  }))
  worker.start()
  // Stopped once, by the test or at its end, whichever comes first.
  const stopOnce = worker.stop.bind(worker)
  let stopped: Promise<void> | undefined
  worker.stop = () => { stopped ??= stopOnce(); return stopped }
  t.teardown(() => worker.stop())
  return worker
}

async function queueEvents (app: FastifyInstance, organization: TestOrganization, count: number, type: string): Promise<string[]> {
  const events = Array.from({ length: count }, (_, n) => ({ type, payload: { n } }))
  const response = await app.inject({ method: 'POST', url: '/api/events/batch', headers: organization.headers, payload: { events } })
  return response.json<{ results: Array<{ event_id: string }> }>().results.map((result) => result.event_id)
}

interface AttemptRow { delivery_id: string, event_id: string, attempt: number, status: string, response_status: number | null, error: string | null }

async function attemptRows (app: FastifyInstance, webhookId: string): Promise<AttemptRow[]> {
  const { rows } = await app.pg.query<AttemptRow>(
    'SELECT delivery_id, event_id, attempt, status, response_status, error FROM delivery_attempts WHERE webhook_id = $1 ORDER BY id', [webhookId])
  return rows
}

const requestsTo = (requests: ScriptedRequest[], path: string) => requests.filter((request) => request.path === path)

t.test('an organization holds at most half of a worker\'s slots', async (t) => {
  t.same([1, 2, 3, 4, 5, 64, 256].map(organizationSlotLimit), [1, 1, 1, 2, 2, 32, 128])
  const slots = new OrganizationSlots(2)
  t.same(slots.capacities(), [], 'organizations with nothing in flight get the whole limit by default')
  slots.started('a')
  slots.started('a')
  slots.started('b')
  t.same(slots.capacities(), [['a', 0], ['b', 1]])
  slots.finished('a')
  slots.finished('b')
  t.same(slots.capacities(), [['a', 1]], 'and are forgotten once nothing is in flight')
})

t.test('trickling receivers are cut off within the deadline and never sent twice while their sends run', async (t) => {
  const app = await appFor(t)
  const organization = await createOrganization(app)
  const receiver = await startScriptedReceiver(t)
  const body = 'x'.repeat(1000)
  receiver.answer = (request) => {
    // One trickles its status line and headers; the other sends its headers at once and then its body a byte
    // at a time (the receiver of the hardening issue, which held each send 80 s).
    if (request.path === '/trickle') trickle(request, OK_HEAD, TRICKLE_EVERY_MS)
    else {
      request.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`)
      trickle(request, body, TRICKLE_EVERY_MS)
    }
  }
  const trickling = await createWebhook(t, app, organization, { url: receiver.url('/trickle') })
  const tricklingBody = await createWebhook(t, app, organization, { url: receiver.url('/trickle-body') })
  // Two workers polling often, with claims as short as allowed (the timeout + 5 s): had a send outlived its
  // claim (either answer would take over 10 s to arrive), the other worker would have claimed and sent it again.
  const settings = { timeoutMs: 1500, claimSeconds: 1 }
  startWorker(t, app, settings)
  startWorker(t, app, settings)
  const [eventId = ''] = await queueEvents(app, organization, 1, 'slow.event')

  await waitFor('the trickling attempt to be recorded', async () => (await attemptRows(app, trickling.id)).length === 1)
  t.equal(requestsTo(receiver.requests, '/trickle').length, 1, 'sent once while its send was running')
  t.match(await attemptRows(app, trickling.id), [{ event_id: eventId, attempt: 1, status: 'failed', response_status: null, error: 'timed out after 1500 ms' }],
    'aborted and recorded as a timeout')
  const [trickled] = requestsTo(receiver.requests, '/trickle')
  t.ok(trickled !== undefined && trickled.written < OK_HEAD.length, `its status line was not complete when it was aborted (${trickled?.written} of ${OK_HEAD.length} bytes)`)
  await waitFor('the trickling connection to close', () => trickled?.closed === true)
  t.ok(trickled?.closedBySender, 'closed by the worker, not the receiver')

  // The status line decides: the body trickling after a 200 is cut off, and the attempt is a success.
  await waitFor('the body-trickling attempt to be recorded', async () => (await attemptRows(app, tricklingBody.id)).length === 1)
  t.match(await attemptRows(app, tricklingBody.id), [{ event_id: eventId, attempt: 1, status: 'succeeded', response_status: 200, error: null }],
    'a 200 whose body trickles is recorded as a success')
  const [bodyTrickled] = requestsTo(receiver.requests, '/trickle-body')
  await waitFor('the body-trickling connection to close', () => bodyTrickled?.closed === true)
  t.ok(bodyTrickled !== undefined && bodyTrickled.closedBySender && bodyTrickled.written < body.length,
    'its connection closed by the worker while the body was still trickling')

  await waitFor('the event failed (one attempt scheduled)', async () => await deliveryStatus(app, organization, eventId) === 'failed')
  t.equal(requestsTo(receiver.requests, '/trickle').length, 1, 'the trickling receiver was never sent the event again')
  t.equal(requestsTo(receiver.requests, '/trickle-body').length, 1, 'nor the body-trickling one')
})

t.test('another organization\'s delivery is not held behind a trickling send on the same host', async (t) => {
  const app = await appFor(t)
  const slow = await createOrganization(app)
  const other = await createOrganization(app)
  // One receiver for both, so both endpoints share an origin (as many organizations' endpoints on one SaaS host do).
  const receiver = await startScriptedReceiver(t)
  receiver.answer = (request) => { if (request.path === '/trickle') trickle(request, OK_HEAD, TRICKLE_EVERY_MS); else answerOk(request) }
  const trickling = await createWebhook(t, app, slow, { url: receiver.url('/trickle') })
  await createWebhook(t, app, other, { url: receiver.url('/healthy') })
  // One worker, one send per endpoint: a cap of connections per origin would make one wait for the other.
  startWorker(t, app, { timeoutMs: 3000, endpointConcurrency: 1, endpointMaxConcurrency: 1 })

  const [slowEvent = ''] = await queueEvents(app, slow, 1, 'slow.event')
  await waitFor('the trickling receiver to get its request', () => requestsTo(receiver.requests, '/trickle').length === 1)
  const [trickled] = requestsTo(receiver.requests, '/trickle')
  const [otherEvent = ''] = await queueEvents(app, other, 1, 'other.event')
  await waitFor('the other organization\'s event', () => requestsTo(receiver.requests, '/healthy').length === 1)
  t.notOk(trickled?.closed, 'it arrived while the trickling send was still open')
  t.same(await attemptRows(app, trickling.id), [], 'and before the trickling attempt had ended')
  await waitFor('the other organization\'s event delivered', async () => await deliveryStatus(app, other, otherEvent) === 'delivered')
  await waitFor('the trickling event failed', async () => await deliveryStatus(app, slow, slowEvent) === 'failed')
  t.match(await attemptRows(app, trickling.id), [{ status: 'failed', error: 'timed out after 3000 ms' }])
})

t.test('a 200 without Content-Length is recorded as a success at once, while the receiver still holds the connection', async (t) => {
  const app = await appFor(t)
  const organization = await createOrganization(app)
  const receiver = await startScriptedReceiver(t)
  // The receiver never ends these answers nor closes their connections.
  receiver.answer = endlessBody
  const webhook = await createWebhook(t, app, organization, { url: receiver.url('/endless') })
  // A deadline (and claim) longer than waitFor's limit: only the status line can have decided these attempts.
  startWorker(t, app, { timeoutMs: 60_000, endpointConcurrency: 1, endpointMaxConcurrency: 1 })
  const ids = await queueEvents(app, organization, 3, 'endless.body')

  await waitFor('the first success recorded', async () => (await attemptRows(app, webhook.id)).length > 0)
  const [first] = receiver.requests
  t.ok(first !== undefined && !first.answered && !(first.closed && !first.closedBySender),
    'when the first success row appeared, its answer had not ended and the receiver still held its connection')
  await waitFor('three successes recorded', async () => (await attemptRows(app, webhook.id)).filter((row) => row.status === 'succeeded').length === 3)
  t.match(await attemptRows(app, webhook.id), ids.map((id) => ({ event_id: id, attempt: 1, status: 'succeeded', response_status: 200, error: null })))
  t.equal(receiver.requests.length, 3, 'each sent once')
  t.ok(receiver.requests.every((request) => !request.answered), 'no answer ever ended on the receiver\'s side')
  await waitFor('the connections to close', () => receiver.requests.every((request) => request.closed))
  t.ok(receiver.requests.every((request) => request.closedBySender), 'each connection was closed by the worker (its body could never end)')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('a webhook deleted while its delivery is claimed is not sent, and its outcome is dropped', async (t) => {
  const app = await appFor(t)
  const organization = await createOrganization(app)
  const receiver = await startScriptedReceiver(t)
  const port = new URL(receiver.origin).port
  // DNS that does not answer until the test says so: the worker claims both deliveries and starts their sends,
  // which wait for their connections (as they would behind a slow resolver or a full connection queue).
  const questions: string[] = []
  const unanswered: Array<() => void> = []
  let answering = false
  const resolve: Resolver = (hostname, _options, callback) => {
    const answer = () => callback(null, [{ address: '127.0.0.1', family: 4 } satisfies LookupAddress])
    questions.push(hostname)
    if (answering) answer()
    else unanswered.push(answer)
  }
  const gone = await createWebhook(t, app, organization, { url: `http://gone.gated.test:${port}/gone` })
  const kept = await createWebhook(t, app, organization, { url: `http://kept.gated.test:${port}/kept` })
  const outcomes: SendOutcome[] = []
  // A retry at once after a failure: the kept endpoint's shows what the deleted one would have had.
  const worker = startWorker(t, app, { timeoutMs: 800, schedule: parseRetrySchedule('0,0'), resolve, onAttempt: (outcome) => outcomes.push(outcome) })
  const [eventId] = await queueEvents(app, organization, 1, 'gated.event')

  await waitFor('both sends to be waiting for their connections', () => questions.includes('gone.gated.test') && questions.includes('kept.gated.test'))
  const { rows: claimed } = await app.pg.query<{ id: string, webhook_id: string }>(
    'SELECT id, webhook_id FROM deliveries WHERE event_id = $1 AND claimed_until > now()', [eventId])
  t.equal(claimed.length, 2, 'both deliveries are claimed')
  const goneDelivery = claimed.find((row) => row.webhook_id === gone.id)?.id
  const deleted = await app.inject({ method: 'DELETE', url: `/api/webhooks/${gone.id}`, headers: organization.headers })
  t.equal(deleted.statusCode, 204, 'deleted while its delivery was claimed')

  await waitFor('both attempts to reach their deadline', () => outcomes.length === 2)
  t.ok(outcomes.every((outcome) => outcome.timedOut), 'both timed out waiting for their connections')
  // Now the connections can be made: a request given up on must not be written on them.
  answering = true
  for (const answer of unanswered.splice(0)) answer()
  await waitFor('the kept endpoint\'s retry delivered', async () => (await attemptRows(app, kept.id)).some((row) => row.status === 'succeeded'))
  await worker.stop()

  t.same(requestsTo(receiver.requests, '/gone'), [], 'the deleted webhook\'s delivery was never sent')
  t.equal(requestsTo(receiver.requests, '/kept').length, 1, 'the kept one\'s first attempt was not written either; its retry was')
  t.match(await attemptRows(app, kept.id), [
    { attempt: 1, status: 'failed', response_status: null, error: 'timed out after 800 ms' },
    { attempt: 2, status: 'succeeded', response_status: 200 }
  ])
  const { rows: left } = await app.pg.query<{ n: number }>(
    'SELECT (SELECT count(*) FROM deliveries WHERE id = $1)::int + (SELECT count(*) FROM delivery_attempts WHERE delivery_id = $1)::int AS n', [goneDelivery])
  t.equal(left[0]?.n, 0, 'nothing recorded for the deleted webhook\'s delivery: its outcome was dropped')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('one organization with many stuck endpoints cannot take all of a worker\'s slots', async (t) => {
  const app = await appFor(t)
  const crowded = await createOrganization(app)
  const other = await createOrganization(app)
  const receiver = await startScriptedReceiver(t)
  const held: ScriptedRequest[] = []
  let holding = true
  let open = 0
  let mostOpen = 0
  receiver.answer = (request) => {
    if (!request.path.startsWith('/stuck')) return answerOk(request)
    open++
    mostOpen = Math.max(mostOpen, open)
    request.response.once('close', () => { open-- })
    if (holding) held.push(request)
    else answerOk(request)
  }
  const stuck: Array<{ id: string }> = []
  for (let i = 0; i < 6; i++) stuck.push(await createWebhook(t, app, crowded, { url: receiver.url(`/stuck/${i}`) }))
  await createWebhook(t, app, other, { url: receiver.url('/other') })
  // Four slots, so an organization may hold 2; a deadline past waitFor's limit, so no stuck send ends by itself.
  const worker = startWorker(t, app, { workerConcurrency: 4, endpointConcurrency: 1, endpointMaxConcurrency: 1, timeoutMs: 60_000 })
  const [crowdedEvent = ''] = await queueEvents(app, crowded, 1, 'crowded.event')

  await waitFor('the stuck endpoints to hold their share', () => held.length === 2)
  t.equal(worker.organizationInFlight(crowded.id), 2, 'two sends in flight for the crowded organization')
  const [otherEvent = ''] = await queueEvents(app, other, 1, 'other.event')
  await waitFor('the other organization\'s event', () => requestsTo(receiver.requests, '/other').length === 1)
  t.equal(held.length, 2, 'the crowded organization still had only its two')
  t.ok(held.every((request) => !request.closed && !request.answered), 'and both were still held open when the other organization\'s event went out')
  await waitFor('the other organization\'s event delivered', async () => await deliveryStatus(app, other, otherEvent) === 'delivered')

  holding = false
  for (const request of held) answerOk(request)
  await waitFor('every stuck endpoint served', async () => await deliveryStatus(app, crowded, crowdedEvent) === 'delivered')
  t.equal(receiver.requests.filter((request) => request.path.startsWith('/stuck')).length, stuck.length, 'one request per endpoint')
  t.equal(mostOpen, 2, 'never more than two of its sends open at once')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('50 attempts cut off at the deadline leave no socket, timer or pool client behind', async (t) => {
  const app = await appFor(t)
  const organization = await createOrganization(app)
  const receiver = await startScriptedReceiver(t)
  receiver.answer = (request) => trickle(request, OK_HEAD, TRICKLE_EVERY_MS)
  // Five trickling endpoints with ten events each; connections idle for 200 ms are closed, so the test can see
  // every one go while the worker runs.
  const webhooks: Array<{ id: string }> = []
  for (let i = 0; i < 5; i++) webhooks.push(await createWebhook(t, app, organization, { url: receiver.url(`/trickle/${i}`), event_types: [`trickle.${i}`] }))
  const worker = startWorker(t, app, { timeoutMs: 300, keepAliveTimeoutMs: 200 })
  await checkedOutAfterSettling(app)
  const timersBefore = process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length
  const eventIds: string[] = []
  for (let i = 0; i < 5; i++) eventIds.push(...await queueEvents(app, organization, 10, `trickle.${i}`))

  await waitFor('50 attempts recorded', async () => {
    const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM delivery_attempts WHERE webhook_id = ANY($1::uuid[])', [webhooks.map((webhook) => webhook.id)])
    return rows[0]?.n === 50
  }, 60_000)
  const rows = (await Promise.all(webhooks.map((webhook) => attemptRows(app, webhook.id)))).flat()
  t.ok(rows.every((row) => row.status === 'failed' && row.response_status === null && row.error === 'timed out after 300 ms'), 'every one a timeout')
  t.same(new Set(rows.map((row) => row.event_id)), new Set(eventIds), 'one per event')
  t.equal(receiver.requests.length, 50, 'each sent once')
  t.ok(receiver.requests.every((request) => request.written < OK_HEAD.length), 'each cut off before its status line was complete')

  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
  await waitFor('every connection closed on the receiver\'s side', () => receiver.openSockets() === 0)
  t.ok(receiver.requests.every((request) => request.closedBySender), 'each closed by the worker')
  await waitFor('the attempts\' timers gone', () => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length <= timersBefore)
  t.pass(`timers back to ${timersBefore} or fewer while the worker still runs`)
  await worker.stop()
})
