import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { request as httpRequest, Agent } from 'node:http'
import path from 'node:path'
import pg from 'pg'
import { buildApp } from '../../../app.js'
import { deliveryQueueState } from '../../../db/deliveries.js'
import { freePort } from '../../support/free-port.js'
import { WorkerMetrics } from '../../../lib/metrics.js'
import { serveMetrics } from '../../../lib/metrics-server.js'
import { buildTestApp, checkedOutAfterSettling, createOrganization, directDatabaseUrl, sendEvent, testConfig, type Teardown } from '../../support/helpers.js'
import { watchLongPolls } from '../../support/long-polls.js'
import { createWebhook, startReceiver, waitFor } from '../../support/webhooks.js'

const METRICS_TOKEN = 'metrics-token-for-tests-0123456789'

type Labels = Record<string, string>

/** Reads one sample of a Prometheus text exposition by name and exact label set; undefined when absent. */
function sampleOf (text: string, name: string, labels: Labels = {}): number | undefined {
  const wanted = JSON.stringify(Object.entries(labels).sort())
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!match || match[1] !== name) continue
    const found = [...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((pair) => [pair[1], pair[2]])
    if (JSON.stringify(found.sort()) === wanted) return Number(match[3])
  }
  return undefined
}

/** Every label set a metric has in the exposition. */
function labelSetsOf (text: string, name: string): Labels[] {
  return text.split('\n').filter((line) => line.startsWith(`${name}{`)).map((line) =>
    Object.fromEntries([...line.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((pair) => [pair[1], pair[2]])))
}

async function scrape (app: FastifyInstance, headers: Record<string, string> = {}): Promise<string> {
  const response = await app.inject({ method: 'GET', url: '/metrics', headers })
  if (response.statusCode !== 200) throw new Error(`scrape answered ${response.statusCode}: ${response.body}`)
  return response.body
}

/**
 * A database of the test's own on the suite's server, dropped when the test ends: the queue gauges count the
 * whole database, which other test files fill at the same time.
 */
async function ownDatabase (t: Teardown): Promise<string> {
  const suiteUrl = process.env.DATABASE_URL as string
  const name = `metrics_${randomUUID().replaceAll('-', '')}`
  const admin = new pg.Client({ connectionString: directDatabaseUrl(suiteUrl) })
  await admin.connect()
  try {
    await admin.query(`CREATE DATABASE ${name}`)
  } finally {
    await admin.end()
  }
  t.teardown(async () => {
    const dropper = new pg.Client({ connectionString: directDatabaseUrl(suiteUrl) })
    await dropper.connect()
    try {
      await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    } finally {
      await dropper.end()
    }
  })
  const url = new URL(suiteUrl)
  url.pathname = `/${name}`
  return url.toString()
}

/** An app on its own database; closed by the test itself, before the database is dropped. */
async function appOnOwnDatabase (t: Teardown, overrides: Record<string, string> = {}): Promise<FastifyInstance> {
  const databaseUrl = await ownDatabase(t)
  const app = await buildApp({ config: testConfig({ ...overrides, DATABASE_URL: databaseUrl }), databaseUrl })
  await app.ready()
  return app
}

t.test('ingest outcomes, group sizes and request durations are counted exactly, by route pattern', async (t) => {
  const app = await buildTestApp(t, { PAYLOAD_MAX_DEPTH: '3' })
  const organization = await createOrganization(app)
  const dedupId = `metrics-${randomUUID()}`

  const statuses = [
    (await sendEvent(app, organization, { type: 'm.one', payload: {}, dedup_id: dedupId })).statusCode,
    (await sendEvent(app, organization, { type: 'm.two', payload: {} })).statusCode,
    (await sendEvent(app, organization, { type: 'm.one', payload: {}, dedup_id: dedupId })).statusCode,
    (await sendEvent(app, organization, { payload: {} })).statusCode,
    (await sendEvent(app, organization, { type: 'm.deep', payload: { a: { b: { c: {} } } } })).statusCode,
    (await app.inject({ method: 'POST', url: '/api/events', headers: { ...organization.headers, 'content-type': 'text/plain' }, payload: 'hello' })).statusCode
  ]
  t.same(statuses, [201, 201, 200, 400, 400, 415])
  const batch = await app.inject({
    method: 'POST',
    url: '/api/events/batch',
    headers: organization.headers,
    payload: { events: [{ type: 'm.batch', payload: {} }, { type: 'm.one', payload: {}, dedup_id: dedupId }, { payload: {} }, { type: 'm.batch', payload: {} }] }
  })
  t.match(batch.json(), { accepted: 2, duplicates: 1, rejected: 1 })
  const refusedBatch = await app.inject({ method: 'POST', url: '/api/events/batch', headers: organization.headers, payload: { events: [] } })
  t.equal(refusedBatch.statusCode, 400, 'a batch refused as a whole')
  const eventId = (await sendEvent(app, organization, { type: 'm.read', payload: {} })).json<{ event_id: string }>().event_id
  t.equal((await app.inject({ method: 'GET', url: `/api/events/${eventId}`, headers: organization.headers })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: `/no/such/route/${eventId}` })).statusCode, 404)
  t.equal((await app.inject({ method: 'GET', url: '/no/such/route/either' })).statusCode, 404)

  const text = await scrape(app)
  const ingested = (outcome: string) => sampleOf(text, 'triggers_events_ingested_total', { outcome })
  t.equal(ingested('accepted'), 5, '2 single + 2 batch + 1 read back later')
  t.equal(ingested('duplicate'), 2, '1 single + 1 in the batch')
  t.equal(ingested('rejected'), 4, 'missing type, too deep, text/plain, 1 batch item; not the batch refused whole')

  const stats = (await app.inject({ method: 'GET', url: '/stats/ingest' })).json<{ groups: number, events: number }>()
  t.equal(sampleOf(text, 'triggers_ingest_group_size_count'), stats.groups, 'one observation per shared INSERT')
  t.equal(sampleOf(text, 'triggers_ingest_group_size_sum'), stats.events, 'summing the events they held')

  const requests = (method: string, route: string, status: string) =>
    sampleOf(text, 'http_request_duration_seconds_count', { method, route, status_code: status })
  t.equal(requests('POST', '/api/events', '201'), 3)
  t.equal(requests('POST', '/api/events', '200'), 1)
  t.equal(requests('POST', '/api/events', '400'), 2)
  t.equal(requests('POST', '/api/events', '415'), 1)
  t.equal(requests('POST', '/api/events/batch', '200'), 1)
  t.equal(requests('GET', '/api/events/:id', '200'), 1, 'the route pattern, not the URL')
  t.equal(requests('GET', 'unmatched', '404'), 2, 'unknown URLs share one label')
  t.equal(sampleOf(text, 'http_request_duration_seconds_bucket', { method: 'GET', route: '/api/events/:id', status_code: '200', le: '+Inf' }), 1)
  t.notOk(text.includes(eventId), 'no raw URL became a label')
  t.same([...new Set(labelSetsOf(text, 'http_request_duration_seconds_count').map((labels) => labels.route))].sort(),
    ['/api/events', '/api/events/:id', '/api/events/batch', '/api/keys/generate', 'unmatched'])

  t.ok((sampleOf(text, 'process_resident_memory_bytes') ?? 0) > 0, 'process metrics')
  t.ok(sampleOf(text, 'nodejs_eventloop_lag_seconds') !== undefined, 'Node metrics')
  t.equal(sampleOf(text, 'triggers_listener_connected'), 1)
  t.equal(sampleOf(text, 'triggers_inbox_waiting'), 0, 'no long poll or stream waits')
  t.match((await app.inject({ method: 'GET', url: '/metrics' })).headers['content-type'], /^text\/plain; version=0\.0\.4/)
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})

t.test('triggers_inbox_waiting counts the long polls waiting and the streams subscribed', async (t) => {
  const app = await buildTestApp(t)
  const watch = watchLongPolls(t, app)
  const organization = await createOrganization(app)
  const poll = app.inject({ method: 'POST', url: '/api/inbox/lease', headers: organization.headers, payload: { wait_seconds: 20 } })
  await watch.waiting(1)
  t.equal(sampleOf(await scrape(app), 'triggers_inbox_waiting'), 1, 'the waiting poll')
  // What an open stream holds: a subscription to its organization's arrivals.
  const unsubscribe = app.wakeUps.subscribe(organization.id, () => {})
  t.teardown(unsubscribe)
  t.equal(sampleOf(await scrape(app), 'triggers_inbox_waiting'), 2, 'and a stream')
  unsubscribe()
  t.equal((await sendEvent(app, organization, { type: 'm.wake', payload: {} })).statusCode, 201)
  t.equal((await poll).json<{ events: unknown[] }>().events.length, 1)
  t.equal(sampleOf(await scrape(app), 'triggers_inbox_waiting'), 0, 'none once the poll is answered and the stream gone')
})

t.test('a HEAD request is timed once, under its own method', async (t) => {
  const app = await buildTestApp(t)
  t.equal((await app.inject({ method: 'HEAD', url: '/health' })).statusCode, 200)
  const text = await scrape(app)
  t.equal(sampleOf(text, 'http_request_duration_seconds_count', { method: 'HEAD', route: '/health', status_code: '200' }), 1)
  t.equal(sampleOf(text, 'http_request_duration_seconds_count', { method: 'GET', route: '/health', status_code: '200' }), undefined)
})

t.test('requests refused by the rate limiter are counted by tier; /metrics itself is never limited', async (t) => {
  const app = await buildTestApp(t, { RATE_LIMIT_FREE: '2', RATE_LIMIT_ANONYMOUS: '2' })
  const organization = await createOrganization(app)
  const keyed = []
  for (let i = 0; i < 4; i++) keyed.push((await app.inject({ method: 'GET', url: '/api/keys', headers: organization.headers })).statusCode)
  t.same(keyed, [200, 200, 429, 429])
  const anonymous = []
  for (let i = 0; i < 3; i++) anonymous.push((await app.inject({ method: 'GET', url: '/api/inbox', remoteAddress: '192.0.2.20' })).statusCode)
  t.same(anonymous, [401, 401, 429], 'two per address without a key')
  const unknown = []
  for (let i = 0; i < 3; i++) unknown.push((await app.inject({ method: 'GET', url: '/nowhere', remoteAddress: '192.0.2.21' })).statusCode)
  t.same(unknown, [404, 404, 429], 'unknown routes are limited per address too')

  const scrapes = []
  for (let i = 0; i < 5; i++) scrapes.push((await app.inject({ method: 'GET', url: '/metrics', remoteAddress: '192.0.2.20' })).statusCode)
  t.same(scrapes, [200, 200, 200, 200, 200], 'scrapes from a spent address are answered')
  const text = await scrape(app)
  t.equal(sampleOf(text, 'triggers_rate_limited_total', { tier: 'free' }), 2)
  t.equal(sampleOf(text, 'triggers_rate_limited_total', { tier: 'anonymous' }), 2)
  t.equal(sampleOf(text, 'triggers_rate_limited_total', { tier: 'enterprise' }), 0, 'every tier has its series from the start')
})

t.test('with METRICS_TOKEN set, /metrics needs it as a Bearer token', async (t) => {
  const app = await buildTestApp(t, { METRICS_TOKEN, STATS_TOKEN: 'stats-token-for-tests-0123456789x' })
  const missing = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(missing.statusCode, 401)
  t.match(missing.json(), { statusCode: 401, code: 'invalid_metrics_token' })
  t.equal((await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: 'Bearer wrong-token-0123456789' } })).statusCode, 401)
  t.equal((await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${app.config.STATS_TOKEN ?? ''}` } })).statusCode, 401,
    'the statistics token is not the metrics token')
  t.match(await scrape(app, { authorization: `Bearer ${METRICS_TOKEN}` }), /triggers_events_ingested_total/)
  t.equal((await app.inject({ method: 'GET', url: '/stats/cache', headers: { authorization: `Bearer ${METRICS_TOKEN}` } })).statusCode, 401,
    'nor the other way round')
})

t.test('without METRICS_TOKEN /metrics is open, and the OpenAPI document describes it', async (t) => {
  const app = await buildTestApp(t)
  t.equal((await app.inject({ method: 'GET', url: '/metrics' })).statusCode, 200)
  const document = (await app.inject({ method: 'GET', url: '/openapi.json' })).json<{ paths: Record<string, Record<string, { operationId?: string, responses: Record<string, { content?: Record<string, unknown> }> }>> }>()
  const operation = document.paths['/metrics']?.get
  t.equal(operation?.operationId, 'getMetrics')
  t.ok(operation?.responses['200']?.content?.['text/plain'], '200 is text/plain')
  t.ok(operation?.responses['401'], '401 is documented')
})

t.test('the queue gauges count pending deliveries of enabled endpoints and the age of the oldest due one', async (t) => {
  const app = await appOnOwnDatabase(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  try {
    const empty = await scrape(app)
    t.equal(sampleOf(empty, 'triggers_webhook_queue_depth'), 0)
    t.equal(sampleOf(empty, 'triggers_webhook_oldest_pending_seconds'), 0)

    const organization = await createOrganization(app)
    const enabled = await createWebhook(t, app, organization, { url: 'http://127.0.0.1:9/enabled' })
    const disabled = await createWebhook(t, app, organization, { url: 'http://127.0.0.1:9/disabled' })
    const events = Array.from({ length: 7 }, (_, i) => ({ type: 'queued', payload: { i } }))
    t.equal((await app.inject({ method: 'POST', url: '/api/events/batch', headers: organization.headers, payload: { events } })).statusCode, 200)
    await app.pg.query('UPDATE webhooks SET enabled = false WHERE id = $1', [disabled.id])
    // Two of the enabled endpoint's deliveries wait for a retry; one has been due for 90 s.
    await app.pg.query(`UPDATE deliveries SET next_attempt_at = now() + interval '1 hour'
                        WHERE id IN (SELECT id FROM deliveries WHERE webhook_id = $1 LIMIT 2)`, [enabled.id])
    const madeDue = Date.now()
    await app.pg.query(`UPDATE deliveries SET next_attempt_at = now() - interval '90 seconds'
                        WHERE id IN (SELECT id FROM deliveries WHERE webhook_id = $1 AND next_attempt_at <= now() LIMIT 1)`, [enabled.id])
    // One due delivery has been delivered: no longer pending.
    await app.pg.query(`UPDATE deliveries SET status = 'delivered'
                        WHERE id IN (SELECT id FROM deliveries WHERE webhook_id = $1 AND next_attempt_at BETWEEN now() - interval '1 minute' AND now() LIMIT 1)`, [enabled.id])

    const text = await scrape(app)
    t.equal(sampleOf(text, 'triggers_webhook_queue_depth'), 6, '7 queued for the enabled endpoint, 1 delivered; the disabled endpoint\'s 7 not counted')
    // 90 s plus the time between that UPDATE and this scrape, whatever it was (a second for the clocks' granularity).
    const sinceMadeDue = (Date.now() - madeDue) / 1000
    const oldest = sampleOf(text, 'triggers_webhook_oldest_pending_seconds') ?? 0
    t.ok(oldest >= 90 && oldest <= 90 + sinceMadeDue + 1, `the delivery due 90 s ago (${oldest}, ${sinceMadeDue} s later)`)

    // Past the exact limit the count is PostgreSQL's estimate of the pending index (disabled endpoints included).
    await app.pg.query('ANALYZE deliveries')
    t.match(await deliveryQueueState(app.pg.pool, 3), { pending: 13, estimated: true })
    t.match(await deliveryQueueState(app.pg.pool, 100), { pending: 6, estimated: false })
    t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
  } finally {
    await app.close()
  }
})

/** Sources that a test controls: pool counts, the listener's state, and the answer of the queue query. */
function fakeSources (queue: () => Promise<object>) {
  const warnings: string[] = []
  let reads = 0
  let releases = 0
  const client = {
    query: async (query: string | { name?: string }) => typeof query === 'object' && query.name === 'delivery-queue-state' ? { rows: [await queue()] } : { rows: [] },
    release: () => { releases++ }
  }
  const sources = {
    pool: {
      totalCount: 7,
      idleCount: 3,
      waitingCount: 2,
      connect: async () => {
        reads++
        return client
      }
    },
    wakeUps: { connected: false },
    log: { warn: (_details: object, message: string) => { warnings.push(message) } }
  }
  // A pool-shaped stub: the metrics read its counts and run one transaction per queue read.
  return { sources: sources as unknown as ConstructorParameters<typeof WorkerMetrics>[0], fake: sources, warnings, reads: () => reads, releases: () => releases }
}

t.test('pool and listener gauges read their sources; the queue is read once per scrape, and a failed read does not fail the scrape', async (t) => {
  let failing = false
  const fake = fakeSources(async () => {
    if (failing) throw new Error('database down')
    return { counted: 4, index_rows: 4, oldest_due_seconds: 12.5 }
  })
  const metrics = new WorkerMetrics(fake.sources)
  const text = await metrics.scrape()
  t.equal(sampleOf(text, 'triggers_db_pool_connections', { state: 'total' }), 7)
  t.equal(sampleOf(text, 'triggers_db_pool_connections', { state: 'idle' }), 3)
  t.equal(sampleOf(text, 'triggers_db_pool_connections', { state: 'waiting' }), 2)
  t.equal(sampleOf(text, 'triggers_listener_connected'), 0)
  t.equal(sampleOf(text, 'triggers_webhook_queue_depth'), 4)
  t.equal(sampleOf(text, 'triggers_webhook_oldest_pending_seconds'), 12.5)
  t.equal(fake.reads(), 1, 'both queue gauges from one read')
  t.equal(fake.releases(), 1, 'which gave its client back')
  await Promise.all([metrics.scrape(), metrics.scrape()])
  t.equal(fake.reads(), 2, 'concurrent scrapes share one read')
  t.equal(fake.releases(), 2)

  fake.fake.wakeUps.connected = true
  failing = true
  const degraded = await metrics.scrape()
  t.equal(sampleOf(degraded, 'triggers_listener_connected'), 1)
  t.ok(Number.isNaN(sampleOf(degraded, 'triggers_webhook_queue_depth')), 'NaN while the queue cannot be read')
  t.ok(Number.isNaN(sampleOf(degraded, 'triggers_webhook_oldest_pending_seconds')))
  t.same(fake.warnings, ['metrics: could not read the delivery queue'])
  t.equal(fake.reads(), 3)
  t.equal(fake.releases(), 3, 'a failed read gives its client back too')
  t.equal(sampleOf(degraded, 'http_request_duration_seconds_count'), undefined, 'a worker has no request metrics')
})

t.test('the worker\'s metrics server: token, 404, and close() drops kept-alive scrapers', async (t) => {
  const fake = fakeSources(async () => ({ counted: 0, index_rows: 0, oldest_due_seconds: null }))
  const metrics = new WorkerMetrics(fake.sources)
  const server = await serveMetrics(metrics, { host: '127.0.0.1', port: 0, token: METRICS_TOKEN, log: fake.fake.log })
  const agent = new Agent({ keepAlive: true })
  t.teardown(() => agent.destroy())
  const get = (urlPath: string, headers: Record<string, string> = {}) => new Promise<{ status: number, body: string }>((resolve, reject) => {
    const request = httpRequest({ host: '127.0.0.1', port: server.port, path: urlPath, headers, agent }, (response) => {
      let body = ''
      response.on('data', (chunk: Buffer) => { body += chunk.toString() })
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }))
    })
    request.on('error', reject)
    request.end()
  })
  t.match(await get('/metrics'), { status: 401, body: /invalid_metrics_token/ })
  t.match(await get('/other', { authorization: `Bearer ${METRICS_TOKEN}` }), { status: 404, body: /not_found/ })
  const scraped = await get('/metrics', { authorization: `Bearer ${METRICS_TOKEN}` })
  t.equal(scraped.status, 200)
  t.equal(sampleOf(scraped.body, 'triggers_webhook_queue_depth'), 0)
  t.ok(sampleOf(scraped.body, 'process_resident_memory_bytes'), 'process metrics too')
  const [kept] = Object.values(agent.freeSockets).flat()
  t.ok(kept, 'the scraper keeps its connection')
  const dropped = kept ? once(kept, 'close') : Promise.resolve()
  await server.close()
  // The agent's idle socket does not hold the process open; a timer does, while the server's FIN arrives.
  const guard = setTimeout(() => {}, 10_000)
  await dropped
  clearTimeout(guard)
  t.pass('close() dropped it')
  await t.rejects(fetch(`http://127.0.0.1:${server.port}/metrics`), 'nothing listens after close()')
})

t.test('a separate worker serves its attempts, latency and queue on WORKER_METRICS_PORT and stops on SIGTERM', async (t) => {
  const app = await appOnOwnDatabase(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  try {
    const organization = await createOrganization(app)
    const receiver = await startReceiver(t)
    // Answers by the event's payload: 2xx, 500, or never (a timeout).
    receiver.respond = (request, response) => {
      const mode = (JSON.parse(request.body) as { data: { mode: string } }).data.mode
      if (mode === 'ok') response.writeHead(204).end()
      else if (mode === 'fail') response.writeHead(500).end()
    }
    await createWebhook(t, app, organization, { url: receiver.url })
    const port = await freePort()
    const worker = spawn(process.execPath, [...process.execArgv, path.resolve('worker.ts')], {
      env: {
        ...process.env,
        DATABASE_URL: app.config.DATABASE_URL,
        DATABASE_DIRECT_URL: app.config.DATABASE_DIRECT_URL ?? '',
        WEBHOOK_SECRET_KEYS: app.config.WEBHOOK_SECRET_KEYS,
        WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
        WEBHOOK_RETRY_SCHEDULE: '0',
        WEBHOOK_TIMEOUT_MS: '1000',
        WEBHOOK_POLL_INTERVAL_MS: '200',
        WORKER_METRICS_PORT: String(port),
        METRICS_TOKEN,
        LOG_LEVEL: 'warn'
      },
      stdio: ['ignore', 'inherit', 'inherit']
    })
    const exited = once(worker, 'exit')
    t.teardown(() => { worker.kill('SIGKILL') })
    const workerScrape = async (headers: Record<string, string> = { authorization: `Bearer ${METRICS_TOKEN}` }) => {
      const response = await fetch(`http://127.0.0.1:${port}/metrics`, { headers })
      return { status: response.status, body: await response.text() }
    }
    await waitFor('the worker\'s metrics server', async () => (await workerScrape().catch(() => undefined))?.status === 200, 120_000)

    const modes = ['ok', 'ok', 'ok', 'fail', 'fail', 'hang']
    const events = modes.map((mode) => ({ type: 'worker.metrics', payload: { mode } }))
    t.equal((await app.inject({ method: 'POST', url: '/api/events/batch', headers: organization.headers, payload: { events } })).statusCode, 200)
    await waitFor('every delivery finished', async () => {
      const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM deliveries WHERE status <> \'pending\'')
      return rows[0]?.n === modes.length
    })

    t.equal((await workerScrape({})).status, 401, 'the token is required here too')
    const text = (await workerScrape()).body
    t.equal(sampleOf(text, 'triggers_webhook_attempts_total', { outcome: 'succeeded' }), 3)
    t.equal(sampleOf(text, 'triggers_webhook_attempts_total', { outcome: 'failed' }), 2)
    t.equal(sampleOf(text, 'triggers_webhook_attempts_total', { outcome: 'timeout' }), 1)
    t.equal(sampleOf(text, 'triggers_webhook_delivery_latency_seconds_count'), 3, 'one latency per 2xx')
    t.ok((sampleOf(text, 'triggers_webhook_delivery_latency_seconds_sum') ?? -1) >= 0)
    t.equal(sampleOf(text, 'triggers_webhook_queue_depth'), 0, 'nothing left pending')
    t.equal(sampleOf(text, 'triggers_listener_connected'), 1)
    t.ok((sampleOf(text, 'triggers_db_pool_connections', { state: 'total' }) ?? 0) >= 1)
    t.ok(sampleOf(text, 'nodejs_eventloop_lag_seconds') !== undefined)

    worker.kill('SIGTERM')
    t.same(await exited, [0, null], 'the worker stops cleanly')
    await t.rejects(fetch(`http://127.0.0.1:${port}/metrics`), 'its metrics port is closed')
    t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
  } finally {
    await app.close()
  }
})
