import t from 'tap'
import { randomUUID } from 'node:crypto'
import pg from 'pg'
import { poolConfig, type PoolSettings } from '../../db/pool.js'
import { buildTestApp, createOrganization, sendEvent, taggedDatabaseUrl } from '../support/helpers.js'
import { watchLongPolls } from '../support/long-polls.js'

// Under .ci/pgbouncer.sh DATABASE_URL is PgBouncer in transaction mode and DATABASE_DIRECT_URL the server itself;
// otherwise both name the suite's server, and the tests tell the two apart by application_name.
const databaseUrl = process.env.DATABASE_URL as string
const directUrl = process.env.DATABASE_DIRECT_URL ?? databaseUrl

const settings = (overrides: Partial<PoolSettings>): PoolSettings => ({
  connectionString: directUrl,
  applicationName: 'pooler-test',
  max: 1,
  connectTimeoutMs: 5000,
  statementTimeoutMs: 30000,
  preparedStatements: true,
  pooled: false,
  ...overrides
})

/** Runs two queries under one name on the pool's single connection and counts that session's prepared statements. */
async function preparedOnServer (preparedStatements: boolean): Promise<number> {
  const pool = new pg.Pool(poolConfig(settings({ preparedStatements })))
  try {
    await pool.query({ name: 'pooler-probe', text: 'SELECT 1 AS n' })
    await pool.query({ name: 'pooler-probe', text: 'SELECT 1 AS n' })
    const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_prepared_statements')
    return rows[0]?.n ?? -1
  } finally {
    await pool.end()
  }
}

t.test('DATABASE_PREPARED_STATEMENTS=false: the queries of db/ keep their names but none is prepared on the server', async (t) => {
  t.equal(await preparedOnServer(true), 1, 'by default a named query is prepared once per connection')
  t.equal(await preparedOnServer(false), 0, 'with the setting off it goes out unnamed')
})

t.test('through a pooler no statement_timeout startup parameter is sent (PgBouncer refuses the connection)', async (t) => {
  t.equal(poolConfig(settings({})).statement_timeout, 30000, 'directly, every connection gets the limit')
  t.notOk('statement_timeout' in poolConfig(settings({ pooled: true })), 'through a pooler it is not sent')
})

t.test('LISTEN uses DATABASE_DIRECT_URL while queries use DATABASE_URL, and a long poll is woken through it', async (t) => {
  const run = randomUUID()
  const app = await buildTestApp(t, {
    DATABASE_URL: taggedDatabaseUrl(`pooled-${run}`),
    DATABASE_DIRECT_URL: taggedDatabaseUrl(`direct-${run}`, directUrl),
    DATABASE_PREPARED_STATEMENTS: 'false'
  })
  const watch = watchLongPolls(t, app)
  const organization = await createOrganization(app)
  const waiting = app.inject({ method: 'POST', url: '/api/inbox/lease', headers: organization.headers, payload: { wait_seconds: 20, type: 'wake.direct' } })
  await watch.waiting(1)
  t.equal((await sendEvent(app, organization, { type: 'wake.direct', payload: {} })).statusCode, 201)
  const woken = (await waiting).json<{ events: Array<{ type: string }> }>()
  t.same(woken.events.map((event) => event.type), ['wake.direct'], 'the long poll got the event')
  t.equal(watch.woken, 1, 'woken by the notification heard over the direct connection, not at its deadline')

  const admin = new pg.Client({ connectionString: directUrl })
  await admin.connect()
  try {
    const { rows } = await admin.query<{ application_name: string, query: string }>(
      'SELECT application_name, query FROM pg_stat_activity WHERE application_name = ANY($1)', [[`pooled-${run}`, `direct-${run}`]])
    const listening = rows.filter((row) => row.query.startsWith('LISTEN'))
    t.ok(listening.length > 0, 'a connection has LISTENed')
    t.ok(listening.every((row) => row.application_name === `direct-${run}`), 'only over the direct connection')
    // Through PgBouncer a server connection shows the name of whichever client used it last, so only when direct.
    if (directUrl === databaseUrl) t.ok(rows.some((row) => row.application_name === `pooled-${run}`), 'the pool connects through DATABASE_URL')
  } finally {
    await admin.end()
  }
})
