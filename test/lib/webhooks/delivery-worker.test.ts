import t from 'tap'
import type { FastifyInstance } from 'fastify'
import type { Pool } from 'pg'
import { DeliveryWorker } from '../../../lib/webhooks/delivery-worker.js'
import { EndpointLimits } from '../../../lib/webhooks/endpoint-limits.js'
import { parseRetrySchedule } from '../../../lib/webhooks/retry-schedule.js'
import type { SecretBox } from '../../../lib/webhooks/secret-box.js'
import { lastFirst, ownDatabase } from '../../support/databases.js'
import { buildTestApp, checkedOutAfterSettling, createOrganization, type Teardown, type TestOrganization } from '../../support/helpers.js'
import { testWorkerOptions } from '../../support/worker.js'
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
function startWorker (t: Teardown, app: FastifyInstance, settings: Partial<ConstructorParameters<typeof DeliveryWorker>[0]> = {}): DeliveryWorker {
  const worker = new DeliveryWorker(testWorkerOptions(app, settings))
  worker.start()
  // Stopped once, by the test (to check what it left) or at its end.
  const stopWorker = worker.stop.bind(worker)
  let stopped: Promise<void> | undefined
  worker.stop = async () => { await (stopped ??= stopWorker()) }
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

const HOUR_MS = 3_600_000

/** Makes `receiver` hold every answer until release(), then answer `status` (held ones at once). */
function holdAnswers (receiver: Receiver, status: number): { answered: () => number, release: () => void } {
  let answered = 0
  let release: () => void = () => {}
  const released = new Promise<void>((resolve) => { release = resolve })
  receiver.respond = (_request, response) => {
    void released.then(() => {
      answered++
      response.writeHead(status).end()
    })
  }
  return { answered: () => answered, release }
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
  // The busy endpoint answers nothing until the quiet organization's event has arrived: order, not speed.
  const busyAnswers = holdAnswers(slowReceiver, 204)
  const quietReceiver = await startReceiver(t)
  const busyHook = await createWebhook(t, app, busy, { url: slowReceiver.url })
  await createWebhook(t, app, quiet, { url: quietReceiver.url })
  await queueEvents(app, busy, 2000)
  // At most 4 sends at once to the busy endpoint, none of which times out during the test.
  const worker = startWorker(t, app, { endpointConcurrency: 4, endpointMaxConcurrency: 4, timeoutMs: 120_000 })
  await waitFor('the backlog to start draining', () => slowReceiver.received.length >= 4)
  const [quietEvent] = await queueEvents(app, quiet, 1)
  await waitFor('the quiet organization\'s event', () => receivedIds(quietReceiver).has(quietEvent ?? ''))
  t.equal(busyAnswers.answered(), 0, 'delivered before any of the backlog\'s sends was answered')
  t.equal(slowReceiver.received.length, 4, 'with the busy endpoint holding its 4 sends')
  const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM deliveries WHERE webhook_id = $1 AND status = \'pending\'', [busyHook.id])
  t.ok((rows[0]?.n ?? 0) > 1000, `delivered while the other organization still had ${rows[0]?.n} deliveries waiting`)
  busyAnswers.release()
  await waitFor('the backlog to drain further', () => slowReceiver.received.length > 8)
  // Checked once the worker has stopped: while it drains the backlog it holds clients by design.
  await worker.stop()
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('a slow endpoint does not hold back a fast one', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const slow = await startReceiver(t)
  // The slow endpoint answers nothing until the fast one has every event: order, not speed.
  const slowAnswers = holdAnswers(slow, 204)
  const fast = await startReceiver(t)
  await createWebhook(t, app, organization, { url: slow.url })
  await createWebhook(t, app, organization, { url: fast.url })
  const ids = await queueEvents(app, organization, 200)
  startWorker(t, app, { timeoutMs: 120_000 })
  await waitFor('every event at the fast endpoint', () => receivedIds(fast).size === ids.length)
  t.equal(slowAnswers.answered(), 0, 'all delivered while the slow endpoint had answered nothing')
  t.ok(slow.received.length < ids.length / 2, `the fast endpoint got all ${ids.length} while the slow one had ${slow.received.length}`)
  slowAnswers.release()
  await waitFor('the slow endpoint catching up', () => receivedIds(slow).size === ids.length, 120_000)
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

/**
 * An app on a database of the test's own, whose worker is stopped before the app closes: there no other test's
 * NOTIFY wakes a worker, so what wakes it is this test's doing.
 */
async function appAlone (t: Teardown): Promise<{ app: FastifyInstance, scope: Teardown }> {
  const scope = lastFirst(t)
  const app = await buildTestApp(scope, { DATABASE_URL: await ownDatabase(scope, 'delivery_worker'), WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  return { app, scope }
}

t.test('the worker is woken by new deliveries (events and redeliveries), not by its poll', async (t) => {
  const { app, scope } = await appAlone(t)
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  await createWebhook(t, app, organization, { url: receiver.url })
  // Polling once an hour, on a database of the test's own: only the NOTIFY after each commit can explain a delivery.
  startWorker(scope, app, { pollIntervalMs: HOUR_MS })
  const [eventId] = await queueEvents(app, organization, 1)
  await waitFor('the first delivery', () => receiver.received.length === 1)
  await waitFor('the delivery recorded', async () => (await pendingState(app, [eventId ?? '']))[0]?.status === 'delivered')
  const redelivered = await app.inject({ method: 'POST', url: `/api/events/${eventId ?? ''}/redeliver`, headers: organization.headers, payload: {} })
  t.equal(redelivered.statusCode, 202)
  await waitFor('the redelivery', () => receiver.received.length === 2)
  t.same(receiver.received.map((request) => request.headers['webhook-id']), [eventId, eventId])
})

t.test('retries go out when they come due, not at the next poll', async (t) => {
  const { app, scope } = await appAlone(t)
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  receiver.respond = (_request, response) => { response.writeHead(500).end() }
  await createWebhook(t, app, organization, { url: receiver.url })
  const ids = await queueEvents(app, organization, 6)
  // Polling once an hour: every retry was started by the worker's own due times.
  const { warnings, log } = recordingLog()
  startWorker(scope, app, { pollIntervalMs: HOUR_MS, schedule: parseRetrySchedule('0,1,1'), log })
  await waitFor('three attempts of every event', () => receiver.received.length >= ids.length * 3, 30_000)
    // What the worker warned of explains a wait that gives up.
    .catch((error: Error) => { throw new Error(`${error.message}; worker warnings: ${JSON.stringify(warnings)}`) })
  await waitFor('every delivery recorded as failed', async () => {
    const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE id = ANY($1::uuid[]) AND delivery_status = \'failed\'', [ids])
    return rows[0]?.n === ids.length
  })
  t.equal(receiver.received.length, ids.length * 3, 'exactly the scheduled attempts')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

/** The worker's log, kept for the test to read. */
function recordingLog () {
  const warnings: Array<{ details: object, message: string }> = []
  return { warnings, log: { info: () => {}, warn: (details: object, message: string) => { warnings.push({ details, message }) } } }
}

const pendingState = async (app: FastifyInstance, ids: string[]) => {
  const { rows } = await app.pg.query<{ status: string, attempts: number, claimed: boolean }>(
    'SELECT status, attempts, claimed_until IS NOT NULL AS claimed FROM deliveries WHERE event_id = ANY($1::uuid[])', [ids])
  return rows
}

t.test('stopping the worker with sends in flight aborts them, gives their claims back and records nothing', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  let closed = 0
  // Holds every request; counts the connections the worker drops.
  receiver.respond = (_request, response) => { response.once('close', () => { closed++ }) }
  await createWebhook(t, app, organization, { url: receiver.url })
  const ids = await queueEvents(app, organization, 5)
  const attempts: string[] = []
  const worker = new DeliveryWorker({
    pool: app.pg.pool,
    wakeUps: app.wakeUps,
    log: { info: () => {}, warn: () => {} },
    schedule: parseRetrySchedule('0,1'),
    timeoutMs: 120_000,
    allowPrivateUrls: true,
    disableAfterFailures: 0,
    endpointConcurrency: 8,
    endpointMaxConcurrency: 8,
    workerConcurrency: 64,
    claimSeconds: 300,
    pollIntervalMs: HOUR_MS,
    secrets: app.webhookSecrets,
    onAttempt: (outcome) => { attempts.push(outcome.error ?? 'ok') }
  })
  worker.start()
  await waitFor('every send to be in flight', () => receiver.received.length === ids.length)
  t.same((await pendingState(app, ids)).map((row) => row.claimed), [true, true, true, true, true], 'each delivery is claimed while it is sent')
  await worker.stop()
  t.same(await pendingState(app, ids), ids.map(() => ({ status: 'pending', attempts: 0, claimed: false })),
    'claims given back: pending, no attempt counted, claimable again at once')
  t.same(attempts, [], 'sends cut short are not attempts')
  const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM delivery_attempts WHERE event_id = ANY($1::uuid[])', [ids])
  t.equal(rows[0]?.n, 0, 'and nothing was logged')
  await waitFor('the receiver to see each aborted send\'s connection close', () => closed === ids.length)
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

interface Faults {
  /** An error for a statement (by name) of a client the pool hands out, or undefined to run it. */
  statement: (name: string) => Promise<Error | undefined> | Error | undefined
  /** Hears of every pool.query statement (by name) answered. */
  answered?: (name: string) => void
}

const nameOf = (config: unknown) => {
  const name = typeof config === 'object' && config !== null ? (config as { name?: unknown }).name : undefined
  return typeof name === 'string' ? name : ''
}

/**
 * The app's pool with faults: statements of the clients it hands out (pool.connect, as transactions use) fail
 * as `faults.statement` says; the app's other users are untouched.
 */
function faultyPool (pool: Pool, faults: Faults): Pool {
  const bound = (target: object, property: string | symbol) => {
    const value = Reflect.get(target, property, target) as unknown
    return typeof value === 'function' ? value.bind(target) as unknown : value
  }
  return new Proxy(pool, {
    get (target, property) {
      if (property === 'query') {
        return async (config: unknown, ...rest: unknown[]) => {
          const result = await (target.query as (...args: unknown[]) => Promise<unknown>).call(target, config, ...rest)
          faults.answered?.(nameOf(config))
          return result
        }
      }
      if (property !== 'connect') return bound(target, property)
      return async () => {
        const client = await target.connect()
        return new Proxy(client, {
          get (clientTarget, clientProperty) {
            if (clientProperty !== 'query') return bound(clientTarget, clientProperty)
            return async (config: unknown, ...rest: unknown[]) => {
              const error = await faults.statement(nameOf(config))
              if (error !== undefined) throw error
              return (clientTarget.query as (...args: unknown[]) => Promise<unknown>).call(clientTarget, config, ...rest)
            }
          }
        })
      }
    }
  })
}

const serializationFailure = () => Object.assign(new Error('could not serialize access due to concurrent update'), { code: '40001' })

t.test('a recording that collides (serialization failure) is tried again and records the attempt once', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  await createWebhook(t, app, organization, { url: receiver.url })
  const ids = await queueEvents(app, organization, 1)
  let collisions = 0
  const { warnings, log } = recordingLog()
  startWorker(t, app, {
    log,
    pollIntervalMs: HOUR_MS,
    pool: faultyPool(app.pg.pool, { statement: (name) => name === 'update-deliveries' && collisions++ === 0 ? serializationFailure() : undefined })
  })
  await waitFor('the delivery recorded', async () => (await pendingState(app, ids))[0]?.status === 'delivered')
  t.equal(collisions, 2, 'the first recording failed, the second went through')
  t.equal(receiver.received.length, 1, 'the webhook was sent once')
  t.same(await pendingState(app, ids), [{ status: 'delivered', attempts: 1, claimed: false }], 'recorded once: one attempt')
  t.same(warnings, [], 'nothing to warn about')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('a recording that keeps failing is given up after 3 tries; the claim lapses and the worker sends again by itself', async (t) => {
  const { app, scope } = await appAlone(t)
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  await createWebhook(t, app, organization, { url: receiver.url })
  const ids = await queueEvents(app, organization, 1)
  let failing = true
  let tries = 0
  let claims = 0
  const { warnings, log } = recordingLog()
  startWorker(scope, app, {
    log,
    // The claim lapses 6 s after it was taken (the timeout plus 5 s); the worker has no poll to find it by.
    timeoutMs: 1000,
    claimSeconds: 1,
    pollIntervalMs: HOUR_MS,
    pool: faultyPool(app.pg.pool, {
      answered: (name) => { if (name === 'claim-deliveries-per-organization') claims++ },
      statement: async (name) => {
        if (name !== 'update-deliveries' || !failing) return undefined
        // Fails once the worker, woken by the finished send, has claimed again and gone back to sleep.
        if (tries++ === 0) await waitFor('the worker to claim after the send', () => claims >= 2)
        return serializationFailure()
      }
    })
  })
  await waitFor('the recording to be given up', () => warnings.length > 0)
  t.equal(tries, 3, 'tried 3 times')
  t.match(warnings, [{ message: 'recording delivery attempts failed', details: { attempts: 1 } }])
  t.same(await pendingState(app, ids), [{ status: 'pending', attempts: 0, claimed: true }], 'nothing recorded; the claim still holds')
  t.equal(await checkedOutAfterSettling(app), 0, 'the failed transactions gave their clients back')
  failing = false
  await waitFor('the delivery sent again and recorded', async () => (await pendingState(app, ids))[0]?.status === 'delivered')
  t.same(receiver.received.map((request) => request.headers['webhook-id']), [ids[0], ids[0]], 'sent again (at least once), with the same webhook-id')
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('a send that fails before it goes out frees its endpoint\'s room; the delivery goes out once it can', async (t) => {
  const { app, scope } = await appAlone(t)
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  await createWebhook(t, app, organization, { url: receiver.url })
  const ids = await queueEvents(app, organization, 1)
  const box = app.webhookSecrets
  let keyMissing = true
  // As when the key that sealed the signing secret is not configured: signing throws.
  const secrets: SecretBox = {
    seal: (secret) => box.seal(secret),
    open: (stored) => {
      if (keyMissing) throw new Error('no key to open this secret')
      return box.open(stored)
    },
    isCurrent: (stored) => box.isCurrent(stored),
    get currentPrefix () { return box.currentPrefix }
  }
  const { warnings, log } = recordingLog()
  // One send at a time to the endpoint: a failed send that kept its room would block the endpoint for good.
  // Polling once an hour, on a database of the test's own: only the worker's look when the failed delivery's
  // claim lapses can find it again.
  const worker = startWorker(scope, app, { log, secrets, timeoutMs: 1000, claimSeconds: 1, endpointConcurrency: 1, endpointMaxConcurrency: 1, pollIntervalMs: HOUR_MS })
  await waitFor('the failure before sending', () => warnings.length > 0)
  t.match(warnings[0], { message: 'delivering failed before sending', details: { delivery_id: String } })
  t.equal(receiver.received.length, 0, 'nothing went out')
  t.same(await pendingState(app, ids), [{ status: 'pending', attempts: 0, claimed: true }], 'not an attempt; the claim lapses by itself')
  keyMissing = false
  await waitFor('the delivery', async () => (await pendingState(app, ids))[0]?.status === 'delivered')
  t.same(receiver.received.map((request) => request.headers['webhook-id']), [ids[0]])
  t.equal(worker.endpointWindow((await app.pg.query<{ id: string }>('SELECT webhook_id AS id FROM deliveries WHERE event_id = $1', [ids[0]])).rows[0]?.id ?? ''), 1)
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})
