import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { spawn } from 'node:child_process'
import path from 'node:path'
import { Webhook } from 'standardwebhooks'
import { buildTestApp, checkedOutAfterSettling, createOrganization, sendEvent, type TestOrganization } from '../../support/helpers.js'
import { createWebhook, deliveryStatus, startReceiver, waitFor } from '../../support/webhooks.js'

// Every app in this file runs a delivery worker with these settings, so whichever worker claims a delivery
// treats it the same way.
const WORKER_SETTINGS = {
  WEBHOOK_WORKER: 'on',
  WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
  WEBHOOK_RETRY_SCHEDULE: '0,1,1',
  WEBHOOK_TIMEOUT_MS: '500',
  WEBHOOK_POLL_INTERVAL_MS: '200',
  WEBHOOK_DISABLE_AFTER_FAILURES: '2',
  // Long enough that a loaded CI machine never lets a claim lapse mid-send (which would allow a second send).
  WEBHOOK_CLAIM_SECONDS: '30'
}

const workerApp = (t: Parameters<typeof buildTestApp>[0], extra: Record<string, string> = {}) => buildTestApp(t, { ...WORKER_SETTINGS, ...extra })

async function attempts (app: FastifyInstance, organization: TestOrganization, webhookId: string, query = '') {
  const response = await app.inject({ method: 'GET', url: `/api/webhooks/${webhookId}/deliveries${query}`, headers: organization.headers })
  return response.json<{ deliveries: Array<{ event_id: string, attempt: number, status: string, response_status: number | null, error: string | null, next_attempt_at: string | null }>, next_cursor: string | null }>()
}

t.test('a delivery is signed per Standard Webhooks and marks the event delivered', async (t) => {
  const app = await workerApp(t)
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  const webhook = await createWebhook(t, app, organization, { url: receiver.url })
  const payload = { order_id: 42, note: 'Grüße 🎉' }
  const { event_id: eventId } = (await sendEvent(app, organization, { type: 'order.created', payload })).json()

  await waitFor('the delivery', () => receiver.received.length === 1)
  await waitFor('event delivery_status delivered', async () => await deliveryStatus(app, organization, eventId) === 'delivered')
  const [request] = receiver.received
  if (!request) throw new Error('nothing received')
  t.equal(request.headers['content-type'], 'application/json')
  t.equal(request.headers['webhook-id'], eventId)
  t.match(request.headers['webhook-timestamp'], /^\d{10}$/)
  t.match(request.headers['webhook-signature'], /^v1,[A-Za-z0-9+/=]+$/)
  t.match(request.headers['user-agent'], /triggers-api/)
  const verified = new Webhook(webhook.secret).verify(request.body, {
    'webhook-id': String(request.headers['webhook-id']),
    'webhook-timestamp': String(request.headers['webhook-timestamp']),
    'webhook-signature': String(request.headers['webhook-signature'])
  })
  t.match(verified, { type: 'order.created', timestamp: String, data: payload }, 'the standardwebhooks verifier accepts it')
  const list = await attempts(app, organization, webhook.id)
  t.match(list.deliveries, [{ event_id: eventId, attempt: 1, status: 'succeeded', response_status: 200, error: null, next_attempt_at: null }])
})

t.test('a receiver that fails twice then succeeds gets exactly 3 attempts with one webhook-id', async (t) => {
  const app = await workerApp(t)
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  receiver.respond = (_request, response, index) => { response.writeHead(index < 2 ? 500 : 204).end() }
  const webhook = await createWebhook(t, app, organization, { url: receiver.url })
  const { event_id: eventId } = (await sendEvent(app, organization, { type: 'retry.me', payload: {} })).json()

  await waitFor('event delivery_status delivered', async () => await deliveryStatus(app, organization, eventId) === 'delivered')
  t.equal(receiver.received.length, 3)
  t.same(new Set(receiver.received.map((request) => request.headers['webhook-id'])), new Set([eventId]))
  const list = await attempts(app, organization, webhook.id)
  t.same(list.deliveries.map((attempt) => [attempt.attempt, attempt.status, attempt.response_status]), [[3, 'succeeded', 204], [2, 'failed', 500], [1, 'failed', 500]])
  t.type(list.deliveries[2]?.next_attempt_at, 'string', 'a failed attempt says when the next one is due')
  const failedOnly = await attempts(app, organization, webhook.id, '?status=failed&limit=1')
  t.equal(failedOnly.deliveries.length, 1)
  t.equal(failedOnly.deliveries[0]?.attempt, 2)
  const nextPage = await attempts(app, organization, webhook.id, `?status=failed&limit=1&cursor=${failedOnly.next_cursor}`)
  t.equal(nextPage.deliveries[0]?.attempt, 1, 'cursor paging')
})

t.test('a receiver that always fails exhausts the schedule, fails the event and gets disabled', async (t) => {
  const app = await workerApp(t)
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  receiver.respond = (_request, response) => { response.writeHead(503, { 'retry-after': '1' }).end() }
  const webhook = await createWebhook(t, app, organization, { url: receiver.url })
  const first = (await sendEvent(app, organization, { type: 'doomed', payload: { n: 1 } })).json().event_id
  await waitFor('first event failed', async () => await deliveryStatus(app, organization, first) === 'failed')
  t.equal(receiver.received.length, 3, 'one attempt per schedule entry')
  const failedPush = (await app.inject({ method: 'GET', url: '/api/inbox?delivery_status=failed', headers: organization.headers })).json()
  t.match(failedPush.events, [{ event_id: first, status: 'pending', delivery_status: 'failed' }], 'listed by its push state, still pending in the inbox')
  const leased = (await app.inject({ method: 'POST', url: '/api/inbox/lease', headers: organization.headers, payload: { limit: 10, lease_seconds: 1 } })).json()
  t.match(leased.events, [{ event_id: first, status: 'pending', delivery_status: 'failed' }], 'a failed push leaves the event leasable')
  const second = (await sendEvent(app, organization, { type: 'doomed', payload: { n: 2 } })).json().event_id
  await waitFor('second event failed', async () => await deliveryStatus(app, organization, second) === 'failed')

  const disabled = (await app.inject({ method: 'GET', url: `/api/webhooks/${webhook.id}`, headers: organization.headers })).json()
  t.match(disabled, { enabled: false, disabled_reason: /2 consecutive/ }, 'disabled after 2 exhausted deliveries')

  const third = (await sendEvent(app, organization, { type: 'doomed', payload: { n: 3 } })).json().event_id
  t.equal(await deliveryStatus(app, organization, third), 'none', 'a disabled endpoint gets no deliveries')
  receiver.respond = (_request, response) => { response.writeHead(200).end() }
  const enabled = await app.inject({ method: 'PATCH', url: `/api/webhooks/${webhook.id}`, headers: organization.headers, payload: { enabled: true } })
  t.match(enabled.json(), { enabled: true, disabled_reason: null })
  await app.inject({ method: 'POST', url: `/api/events/${first}/redeliver`, headers: organization.headers })
  await waitFor('redelivered event delivered', async () => await deliveryStatus(app, organization, first) === 'delivered')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('a receiver that hangs past the timeout is a failed attempt and the worker keeps going', async (t) => {
  const app = await workerApp(t)
  const organization = await createOrganization(app)
  const slow = await startReceiver(t)
  slow.respond = () => {}
  const fast = await startReceiver(t)
  const slowHook = await createWebhook(t, app, organization, { url: slow.url, event_types: ['slow'] })
  await createWebhook(t, app, organization, { url: fast.url, event_types: ['fast'] })
  const slowEvent = (await sendEvent(app, organization, { type: 'slow', payload: {} })).json().event_id
  const fastEvent = (await sendEvent(app, organization, { type: 'fast', payload: {} })).json().event_id
  await waitFor('fast event delivered', async () => await deliveryStatus(app, organization, fastEvent) === 'delivered')
  await waitFor('slow event failed', async () => await deliveryStatus(app, organization, slowEvent) === 'failed')
  const list = await attempts(app, organization, slowHook.id)
  t.equal(list.deliveries.length, 3)
  t.ok(list.deliveries.every((attempt) => attempt.status === 'failed' && /timed out/.test(attempt.error ?? '')))
})

t.test('type filters, tenant isolation and the rotate-secret overlap', async (t) => {
  const app = await workerApp(t)
  const organization = await createOrganization(app)
  const other = await createOrganization(app)
  const receiver = await startReceiver(t)
  const otherReceiver = await startReceiver(t)
  const webhook = await createWebhook(t, app, organization, { url: receiver.url, event_types: ['order.*'] })
  await createWebhook(t, app, other, { url: otherReceiver.url })
  await sendEvent(app, organization, { type: 'user.created', payload: {} })
  const rotated = (await app.inject({ method: 'POST', url: `/api/webhooks/${webhook.id}/rotate-secret`, headers: organization.headers })).json()
  const order = (await sendEvent(app, organization, { type: 'order.paid', payload: { total: 10 } })).json().event_id
  await waitFor('order delivered', async () => await deliveryStatus(app, organization, order) === 'delivered')
  t.equal(receiver.received.length, 1, 'only the matching type was delivered')
  t.equal(otherReceiver.received.length, 0, 'another organization\'s endpoint got nothing')

  const [request] = receiver.received
  if (!request) throw new Error('nothing received')
  const signatures = String(request.headers['webhook-signature']).split(' ')
  t.equal(signatures.length, 2, 'new and old secret both sign during the overlap')
  const headers = {
    'webhook-id': String(request.headers['webhook-id']),
    'webhook-timestamp': String(request.headers['webhook-timestamp']),
    'webhook-signature': String(request.headers['webhook-signature'])
  }
  t.doesNotThrow(() => new Webhook(rotated.secret).verify(request.body, headers), 'verifies with the new secret')
  t.doesNotThrow(() => new Webhook(webhook.secret).verify(request.body, headers), 'and still with the old one')
})

t.test('two workers and an API deliver 500 events to 5 endpoints exactly once each', async (t) => {
  // At least once: a send that outlives the timeout (three apps and five receivers share this process's
  // event loop) is retried, and the receiver sees it twice. A generous timeout keeps this test about claims.
  const patient = { WEBHOOK_TIMEOUT_MS: '10000' }
  const api = await workerApp(t, patient)
  await workerApp(t, patient)
  await workerApp(t, patient)
  const organization = await createOrganization(api)
  const receivers = await Promise.all(Array.from({ length: 5 }, () => startReceiver(t)))
  for (const receiver of receivers) await createWebhook(t, api, organization, { url: receiver.url })
  const eventIds: string[] = []
  for (let batch = 0; batch < 5; batch++) {
    const events = Array.from({ length: 100 }, (_, i) => ({ type: 'load', payload: { n: batch * 100 + i } }))
    const response = await api.inject({ method: 'POST', url: '/api/events/batch', headers: organization.headers, payload: { events } })
    eventIds.push(...response.json<{ results: Array<{ event_id: string }> }>().results.map((result) => result.event_id))
  }
  await waitFor('all 2 500 deliveries', () => receivers.every((receiver) => receiver.received.length >= 500), 120_000)
  for (const receiver of receivers) {
    const ids = receiver.received.map((request) => String(request.headers['webhook-id']))
    t.equal(ids.length, 500, 'no event was sent twice to an endpoint')
    t.same(new Set(ids), new Set(eventIds))
  }
  await waitFor('all events delivered', async () => {
    const { rows } = await api.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE id = ANY($1::uuid[]) AND delivery_status = \'delivered\'', [eventIds])
    return rows[0]?.n === 500
  })
})

t.test('two worker processes beside the API deliver every event to each of 5 endpoints exactly once', async (t) => {
  const app = await buildTestApp(t, { ...WORKER_SETTINGS, WEBHOOK_WORKER: 'off' })
  const organization = await createOrganization(app)
  const receivers = await Promise.all(Array.from({ length: 5 }, () => startReceiver(t)))
  for (const receiver of receivers) await createWebhook(t, app, organization, { url: receiver.url })
  const workers = Array.from({ length: 2 }, () => spawn(process.execPath, [...process.execArgv, path.resolve('worker.ts')], {
    // A generous timeout: nothing here should be retried, so every receiver sees each event once.
    env: { ...process.env, ...WORKER_SETTINGS, WEBHOOK_SECRET_KEYS: app.config.WEBHOOK_SECRET_KEYS, WEBHOOK_TIMEOUT_MS: '10000', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'inherit', 'inherit']
  }))
  const exits = workers.map((worker) => new Promise<number | null>((resolve) => worker.once('exit', (code) => resolve(code))))
  t.teardown(() => { for (const worker of workers) worker.kill('SIGKILL') })
  const eventIds: string[] = []
  for (let batch = 0; batch < 3; batch++) {
    const events = Array.from({ length: 100 }, (_, i) => ({ type: 'two.workers', payload: { n: batch * 100 + i } }))
    const response = await app.inject({ method: 'POST', url: '/api/events/batch', headers: organization.headers, payload: { events } })
    eventIds.push(...response.json<{ results: Array<{ event_id: string }> }>().results.map((result) => result.event_id))
  }
  await waitFor('all 1 500 deliveries', () => receivers.every((receiver) => receiver.received.length >= eventIds.length), 120_000)
  await waitFor('every event recorded as delivered', async () => {
    const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE id = ANY($1::uuid[]) AND delivery_status = \'delivered\'', [eventIds])
    return rows[0]?.n === eventIds.length
  })
  for (const receiver of receivers) {
    const ids = receiver.received.map((request) => String(request.headers['webhook-id']))
    t.equal(ids.length, eventIds.length, 'no event was sent twice to an endpoint')
    t.same(new Set(ids), new Set(eventIds), 'and none was lost')
  }
  for (const worker of workers) worker.kill('SIGTERM')
  t.same(await Promise.all(exits), [0, 0], 'both workers stop cleanly on SIGTERM')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('deliveries claimed by a worker killed with SIGKILL are completed by another', async (t) => {
  const app = await buildTestApp(t, { ...WORKER_SETTINGS, WEBHOOK_WORKER: 'off' })
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  // The doomed worker's requests hang, so it holds its claims when it dies.
  receiver.respond = () => {}
  await createWebhook(t, app, organization, { url: receiver.url })
  const child = spawn(process.execPath, [...process.execArgv, path.resolve('worker.ts')], {
    // Short claims so the killed worker's deliveries come back soon (timeout + 5 s).
    // The test apps' secret keys, so the worker can decrypt the signing secrets they stored.
    env: { ...process.env, ...WORKER_SETTINGS, WEBHOOK_SECRET_KEYS: app.config.WEBHOOK_SECRET_KEYS, WEBHOOK_TIMEOUT_MS: '3000', WEBHOOK_CLAIM_SECONDS: '1', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'inherit', 'inherit']
  })
  // If the test fails before it kills the worker, the worker must not outlive it.
  t.teardown(() => { child.kill('SIGKILL') })
  const eventIds: string[] = []
  for (let i = 0; i < 10; i++) eventIds.push((await sendEvent(app, organization, { type: 'killed', payload: { i } })).json().event_id)
  await waitFor('the worker to start sending', () => receiver.received.length >= 4)
  child.kill('SIGKILL')
  await new Promise((resolve) => child.once('exit', resolve))
  const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM deliveries WHERE event_id = ANY($1::uuid[]) AND claimed_until > now()', [eventIds])
  t.ok((rows[0]?.n ?? 0) > 0, 'the killed worker left claimed deliveries behind')

  receiver.respond = (_request, response) => { response.writeHead(200).end() }
  await workerApp(t)
  await waitFor('every event delivered by the surviving worker', async () => {
    const statuses = await Promise.all(eventIds.map((id) => deliveryStatus(app, organization, id)))
    return statuses.every((status) => status === 'delivered')
  }, 120_000)
  t.pass('all 10 events delivered after the kill')
})

t.test('hundreds of failed attempts leave no pool client checked out', async (t) => {
  const app = await workerApp(t)
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  receiver.respond = (_request, response) => { response.writeHead(500).end() }
  const webhook = await createWebhook(t, app, organization, { url: receiver.url })
  for (let batch = 0; batch < 2; batch++) {
    const events = Array.from({ length: 100 }, (_, i) => ({ type: 'fail', payload: { i } }))
    await app.inject({ method: 'POST', url: '/api/events/batch', headers: organization.headers, payload: { events } })
  }
  await waitFor('the endpoint to be disabled', async () =>
    (await app.inject({ method: 'GET', url: `/api/webhooks/${webhook.id}`, headers: organization.headers })).json().enabled === false, 60_000)
  await waitFor('no delivery of this endpoint still claimed', async () => {
    const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM deliveries WHERE webhook_id = $1 AND claimed_until > now()', [webhook.id])
    return rows[0]?.n === 0
  })
  const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM delivery_attempts WHERE webhook_id = $1 AND status = \'failed\'', [webhook.id])
  t.ok((rows[0]?.n ?? 0) >= 200, `${rows[0]?.n} failed attempts recorded`)
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
  t.equal((await app.inject({ method: 'GET', url: '/health/ready' })).statusCode, 200)
})
