import t from 'tap'
import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { lastFirst, ownDatabase } from '../support/databases.js'
import { buildTestApp, checkedOutAfterSettling, createOrganization, type TestOrganization } from '../support/helpers.js'

const TOTAL_REQUESTS = 10_000
const CONCURRENCY = 50

/** One request of the mix, chosen by its number: successes, duplicates, invalid bodies, unknown ids, database errors. */
function mixedRequest (app: FastifyInstance, organization: TestOrganization, n: number, seenDedupIds: string[]) {
  const post = (payload: object) => app.inject({ method: 'POST', url: '/api/events', headers: organization.headers, payload })
  switch (n % 8) {
    case 0: return post({ type: 'mix.new', payload: { n }, dedup_id: `mix-${randomUUID()}` })
    case 1: return post({ type: 'mix.dup', payload: { n }, dedup_id: seenDedupIds[n % seenDedupIds.length] })
    case 2: return post({ type: 'mix bad', payload: {} })
    case 3: return app.inject({ method: 'GET', url: `/api/events/${randomUUID()}`, headers: organization.headers })
    // PostgreSQL itself rejects \u0000 in jsonb: a statement that fails inside the database.
    case 4: return post({ type: 'mix.nul', payload: { text: `nul\u0000${n}` } })
    case 5: return app.inject({ method: 'POST', url: `/api/ack/${randomUUID()}`, headers: organization.headers })
    case 6: return app.inject({ method: 'GET', url: '/api/inbox?limit=5', headers: organization.headers })
    default: return app.inject({ method: 'GET', url: '/api/inbox', headers: { 'x-api-key': 'sk_invalid' } })
  }
}

const EXPECTED_STATUS = [201, 200, 400, 404, 400, 404, 200, 401]

t.test(`${TOTAL_REQUESTS} mixed requests leave no pool client checked out`, async (t) => {
  const app = await buildTestApp(t, { DATABASE_POOL_MAX: '10' })
  const organization = await createOrganization(app)
  const seenDedupIds = Array.from({ length: 20 }, () => `seed-${randomUUID()}`)
  for (const dedupId of seenDedupIds) {
    await app.inject({ method: 'POST', url: '/api/events', headers: organization.headers, payload: { type: 'seed', payload: {}, dedup_id: dedupId } })
  }

  const unexpected: string[] = []
  let next = 0
  const worker = async () => {
    while (next < TOTAL_REQUESTS) {
      const n = next++
      const response = await mixedRequest(app, organization, n, seenDedupIds)
      if (response.statusCode !== EXPECTED_STATUS[n % 8]) unexpected.push(`#${n}: ${response.statusCode} ${response.body}`)
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))

  t.same(unexpected.slice(0, 5), [], 'every request got its expected status')
  t.equal(await checkedOutAfterSettling(app), 0, 'no client is checked out')
  t.equal(app.pg.pool.waitingCount, 0, 'nothing waits for a client')
  t.ok(app.pg.pool.totalCount <= 10, 'the pool never grew past its maximum')
  const ready = await app.inject({ method: 'GET', url: '/health/ready' })
  t.equal(ready.statusCode, 200, 'the service still answers')
  t.same(ready.json().pool, { total: app.pg.pool.totalCount, idle: app.pg.pool.idleCount, waiting: 0 })
})

t.test('an exhausted pool makes readiness fail with 503, and it recovers', async (t) => {
  const app = await buildTestApp(t, { DATABASE_POOL_MAX: '1', DATABASE_CONNECT_TIMEOUT_MS: '200' })
  const held = await app.pg.connect()
  try {
    const notReady = await app.inject({ method: 'GET', url: '/health/ready' })
    t.equal(notReady.statusCode, 503)
    t.match(notReady.json(), { statusCode: 503, error: 'Service Unavailable', code: 'database_unavailable', message: String, pool: { total: 1, idle: 0 } })
    const organization = await app.inject({ method: 'GET', url: '/api/inbox', headers: { 'x-api-key': 'sk_x' } })
    t.equal(organization.statusCode, 503, 'a request that needs the database gets 503, not 500')
    t.equal(organization.json().code, 'database_unavailable')
    const health = await app.inject({ method: 'GET', url: '/health', headers: { 'x-api-key': 'sk_anything' } })
    t.equal(health.statusCode, 200, '/health needs no database, even when a key is sent')
    t.equal(await checkedOutAfterSettling(app, 500), 1, 'the leak check sees a client that is not given back')
  } finally {
    held.release()
  }
  t.equal((await app.inject({ method: 'GET', url: '/health/ready' })).statusCode, 200)
  t.equal(await checkedOutAfterSettling(app), 0)
})

t.test('a 5xx never shows SQL or stack traces, and its client is released', async (t) => {
  const scope = lastFirst(t)
  const databaseUrl = await ownDatabase(scope, 'pool_safety')
  const app = await buildTestApp(scope, { DATABASE_URL: databaseUrl, WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const webhook = await app.inject({ method: 'POST', url: '/api/webhooks', headers: organization.headers, payload: { url: 'http://127.0.0.1:9/kept' } })
  t.equal(webhook.statusCode, 201)
  // This database only: its statements now fail inside PostgreSQL. Listing webhooks is one pool query; creating
  // one is a transaction (limit check, then the INSERT a trigger refuses) that must roll back.
  await app.pg.query('ALTER TABLE webhooks RENAME COLUMN url TO url_moved')
  await app.pg.query(`CREATE FUNCTION refuse_webhooks () RETURNS trigger LANGUAGE plpgsql AS $$
                      BEGIN RAISE EXCEPTION 'no new webhooks today'; END $$`)
  await app.pg.query('CREATE TRIGGER refuse_webhooks BEFORE INSERT ON webhooks FOR EACH ROW EXECUTE FUNCTION refuse_webhooks()')
  const broken = [
    () => app.inject({ method: 'GET', url: '/api/webhooks', headers: organization.headers }),
    () => app.inject({ method: 'POST', url: '/api/webhooks', headers: organization.headers, payload: { url: 'http://127.0.0.1:9/refused' } })
  ]
  for (let i = 0; i < 200; i++) {
    for (const [n, request] of broken.entries()) {
      const response = await request()
      if (response.statusCode !== 500) t.fail(`request ${n}: ${response.statusCode} ${response.body}`)
      if (i === 0) {
        t.same(response.json(), {
          statusCode: 500, error: 'Internal Server Error', code: 'internal_error', message: 'Something went wrong on our side; it has been logged'
        })
        t.notMatch(response.body, /url_moved|no new webhooks|webhooks|SELECT|INSERT|\.ts:|node_modules/)
      }
    }
  }
  t.equal(await checkedOutAfterSettling(app), 0, 'failed queries and rolled-back transactions returned their clients')
  t.equal((await app.inject({ method: 'GET', url: '/health/ready' })).statusCode, 200)
  await app.pg.query('ALTER TABLE webhooks RENAME COLUMN url_moved TO url')
  t.equal((await app.inject({ method: 'GET', url: '/api/webhooks', headers: organization.headers })).statusCode, 200, 'and they work again once the schema is back')
})
