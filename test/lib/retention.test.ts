import t from 'tap'
import type { FastifyInstance } from 'fastify'
import pg from 'pg'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { runner } from 'node-pg-migrate'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { recordAttempts, type AttemptOutcome } from '../../db/deliveries.js'
import { runMigrations } from '../../db/migrate.js'
import type { Queryable } from '../../db/queryable.js'
import { inTransaction } from '../../db/transaction.js'
import { createPartitions, DAY_PARTITIONED_TABLES, listPartitions } from '../../db/partitions.js'
import { expiredPartitions, keptFrom, maintainPartitions, type RetentionSettings } from '../../lib/retention.js'
import { loadConfig } from '../../lib/config.js'
import { buildTestApp, createOrganization, directDatabaseUrl, sendEvent, type Teardown, type TestOrganization } from '../support/helpers.js'
import { createSubscription, getSubscription, request, sendEvents, take, times } from '../support/subscriptions.js'

const DAY_MS = 86_400_000
const quiet = { info: () => {} }
const compact = (time: number) => new Date(time).toISOString().slice(0, 10).replaceAll('-', '')
const startOfToday = () => Date.parse(`${new Date().toISOString().slice(0, 10)}T00:00:00Z`)

/** Teardowns run last-registered first: the app and pools close before their database is dropped. */
function scope (t: Teardown): Teardown {
  const stack: Array<() => unknown> = []
  t.teardown(async () => {
    for (const fn of stack.reverse()) await fn()
  })
  return { teardown: (fn) => { stack.push(fn) } }
}

/** A database of its own on the suite's server (its clock is moved, its partitions dropped), dropped after the test. */
async function freshDatabase (t: Teardown, migrate = true): Promise<string> {
  const name = `retention_${randomUUID().replaceAll('-', '')}`
  const admin = new pg.Client({ connectionString: directDatabaseUrl(process.env.DATABASE_URL as string) })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  await admin.end()
  t.teardown(async () => {
    const client = new pg.Client({ connectionString: directDatabaseUrl(process.env.DATABASE_URL as string) })
    await client.connect()
    await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await client.end()
  })
  const url = new URL(process.env.DATABASE_URL as string)
  url.pathname = `/${name}`
  if (migrate) await runMigrations(directDatabaseUrl(url.toString()), quiet)
  return url.toString()
}

function poolFor (t: Teardown, url: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 4 })
  t.teardown(() => pool.end())
  return pool
}

async function count (db: pg.Pool, sql: string, values: unknown[] = []): Promise<number> {
  const { rows } = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM (${sql}) AS counted`, values)
  return rows[0]?.n ?? 0
}

async function partitionNames (db: pg.Pool, parent: string): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    'SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass ORDER BY 1', [parent])
  return rows.map((row) => row.name)
}

/** SQL's dedup_period() of `at`: the one definition of a period. */
async function dedupPeriod (db: Queryable, at: Date | number): Promise<number> {
  const { rows } = await db.query<{ period: number }>('SELECT dedup_period($1::timestamptz) AS period', [new Date(at)])
  return rows[0]?.period as number
}

async function addWebhook (db: pg.Pool, organization: TestOrganization): Promise<string> {
  const { rows } = await db.query<{ id: string }>('INSERT INTO webhooks (organization_id, url, secret) VALUES ($1, $2, $3) RETURNING id',
    [organization.id, 'http://127.0.0.1:9/hook', 'whsec_test'])
  return (rows[0] as { id: string }).id
}

/** One failed attempt, with a retry, for each pending delivery of the events, recorded as the worker does. */
async function recordFailedAttempts (db: pg.Pool, eventIds: string[]): Promise<void> {
  const { rows } = await db.query<{ id: string, event_id: string, event_created_at: string }>(
    'SELECT id, event_id, event_created_at::text FROM deliveries WHERE event_id = ANY($1::uuid[])', [eventIds])
  const outcomes: AttemptOutcome[] = rows.map((row) => ({
    delivery_id: row.id,
    event_id: row.event_id,
    event_created_at: row.event_created_at,
    attempt: 1,
    succeeded: false,
    response_status: 500,
    error: null,
    duration_ms: 3,
    attempted_at: new Date(),
    next_attempt_at: new Date(Date.now() + 60_000)
  }))
  await inTransaction(db, (client) => recordAttempts(client, outcomes, 0))
}

/** Stores an event as if it had been accepted at `createdAt`, with its dedup key in that time's dedup period. */
async function storeEventAt (db: pg.Pool, organization: TestOrganization, createdAt: Date, dedupId: string | null, writer: Queryable = db): Promise<string> {
  const id = randomUUID()
  if (dedupId !== null) await db.query('SELECT create_dedup_partition(dedup_period($1))', [createdAt])
  await writer.query('INSERT INTO events (id, organization_id, type, payload, dedup_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)',
    [id, organization.id, 'retention.test', { at: createdAt.toISOString() }, dedupId, createdAt])
  if (dedupId !== null) {
    await writer.query(`INSERT INTO event_dedup_keys (organization_id, dedup_id, period, event_id, type, created_at)
                    VALUES ($1, $2, dedup_period($4), $3, 'retention.test', $4)`, [organization.id, dedupId, id, createdAt])
  }
  return id
}

const settings = (eventDays: number, attemptDays = 0): RetentionSettings => ({ eventDays, attemptDays, aheadDays: 7, lockTimeoutMs: 2000 })

t.test('expiry: a partition goes once its whole range is older than the retention; one without an end never', async (t) => {
  const now = new Date('2026-03-10T15:00:00Z')
  t.equal(keptFrom(now, 0), undefined, '0 keeps forever')
  const partition = (name: string, endsAt: string | null) => ({ name, endsAt: endsAt === null ? null : new Date(endsAt) })
  const partitions = [
    partition('events_before_20260301', '2026-03-01T00:00:00Z'),
    partition('events_p20260306', '2026-03-07T00:00:00Z'),
    partition('events_p20260307', '2026-03-08T00:00:00Z'),
    partition('events_default', null)
  ]
  t.same(expiredPartitions(partitions, keptFrom(now, 3)), ['events_before_20260301', 'events_p20260306'])
  t.same(expiredPartitions(partitions, undefined), [])
})

t.test('partition ends are read from their bounds, and maintenance drops by them, whatever the name', async (t) => {
  const t_ = scope(t)
  const url = await freshDatabase(t_)
  const pool = poolFor(t_, url)
  const today = startOfToday()
  const day = (offset: number) => new Date(today + offset * DAY_MS).toISOString().slice(0, 10)
  await maintainPartitions(pool, settings(3), new Date(today))
  const ends = async (table: string) => new Map(((await listPartitions(pool, [table])).get(table) ?? []).map(({ name, endsAt }) => [name, endsAt?.getTime() ?? null]))

  const events = await ends('events')
  t.equal(events.get(`events_p${compact(today)}`), today + DAY_MS, "a day partition ends at the next day's start")
  t.equal(events.get(`events_before_${compact(today)}`), today, 'the partition of rows from before the migration ends where the days begin')
  const period = await dedupPeriod(pool, today)
  const periodEnd = (await ends('event_dedup_keys')).get(`event_dedup_keys_period_${period}`) as number
  t.equal(periodEnd, (period + 1) * 30 * DAY_MS, 'a dedup period ends 30 days on')
  t.same([await dedupPeriod(pool, periodEnd - 1), await dedupPeriod(pool, periodEnd)], [period, period + 1],
    'a dedup keys partition ends where dedup_period() starts the next period')

  // Made by hand, under names maintenance does not make: a range of its own beyond the partitions made ahead,
  // and the table's DEFAULT partition.
  await pool.query(`CREATE TABLE events_archived_by_hand PARTITION OF events FOR VALUES FROM ('${day(20)}') TO ('${day(21)}')`)
  await pool.query('CREATE TABLE deliveries_default PARTITION OF deliveries DEFAULT')
  t.equal((await ends('events')).get('events_archived_by_hand'), today + 21 * DAY_MS)
  t.equal((await ends('deliveries')).get('deliveries_default'), null, 'a DEFAULT partition has no end')
  await pool.query(`CREATE TABLE events_open_ended PARTITION OF events FOR VALUES FROM ('${day(40)}') TO ('infinity')`)
  t.equal((await ends('events')).get('events_open_ended'), null, 'nor does a range up to infinity')

  // Bounds are printed in the session's DateStyle and TimeZone: other settings must read the same ends.
  const otherSession = new pg.Client({ connectionString: url })
  await otherSession.connect()
  try {
    await otherSession.query("SET DateStyle = 'German'; SET TimeZone = 'Asia/Kolkata'")
    const seenThere = (await listPartitions(otherSession, ['events', 'event_dedup_keys'])).values()
    const here = await listPartitions(pool, ['events', 'event_dedup_keys'])
    t.same([...seenThere], [...here.values()], 'the same ends under DateStyle German and TimeZone Asia/Kolkata')
  } finally {
    await otherSession.end()
  }

  const run = await maintainPartitions(pool, settings(3), new Date(today + 25 * DAY_MS))
  t.ok(run.dropped.includes('events_archived_by_hand'), 'a range made by hand goes once it is older than the retention')
  t.notOk(run.dropped.includes('deliveries_default'), 'the DEFAULT partition stays')
  t.ok((await ends('deliveries')).has('deliveries_default'))
})

t.test('createPartitions answers exactly the partitions it created, and none when all exist', async (t) => {
  const t_ = scope(t)
  const pool = poolFor(t_, await freshDatabase(t_))
  const today = startOfToday()
  const period = await dedupPeriod(pool, today)
  // Today's day partitions and this period's dedup keys partition exist since the migrations.
  const wanted = {
    tables: DAY_PARTITIONED_TABLES,
    days: [today, today + 100 * DAY_MS, today + 101 * DAY_MS].map((time) => new Date(time).toISOString().slice(0, 10)),
    dedupPeriods: [period, period + 10]
  }
  const expected = [
    ...DAY_PARTITIONED_TABLES.flatMap((table) => [100, 101].map((ahead) => `${table}_p${compact(today + ahead * DAY_MS)}`)),
    `event_dedup_keys_period_${period + 10}`
  ]
  const existing = (await Promise.all([...DAY_PARTITIONED_TABLES, 'event_dedup_keys'].map((parent) => partitionNames(pool, parent)))).flat()
  t.same(expected.filter((name) => existing.includes(name)), [], 'none of them existed')

  const created = await createPartitions(pool, wanted)
  t.same([...created].sort(), [...expected].sort(), 'the names of the new partitions, not those that existed')
  const now = (await Promise.all([...DAY_PARTITIONED_TABLES, 'event_dedup_keys'].map((parent) => partitionNames(pool, parent)))).flat()
  t.same(now.filter((name) => !existing.includes(name)).sort(), [...expected].sort(), 'and those are the partitions that appeared')
  const { rows } = await pool.query<{ options: string[] | null }>('SELECT reloptions AS options FROM pg_class WHERE oid = $1::regclass', [`deliveries_p${compact(today + 100 * DAY_MS)}`])
  t.same(rows[0]?.options, ['fillfactor=50'], 'a deliveries day partition still leaves half of each page free (migration 011)')
  t.same(await createPartitions(pool, wanted), [], 'a second call creates nothing and answers no name')
  t.same(await createPartitions(pool, { tables: DAY_PARTITIONED_TABLES, days: [], dedupPeriods: [] }), [], 'nor does asking for nothing')
})

t.test('attempts cannot be kept longer than their events', async (t) => {
  t.throws(() => loadConfig({ EVENT_RETENTION_DAYS: '7', DELIVERY_ATTEMPT_RETENTION_DAYS: '8' }), /DELIVERY_ATTEMPT_RETENTION_DAYS \(8\) cannot exceed EVENT_RETENTION_DAYS \(7\)/)
  t.equal(loadConfig({ EVENT_RETENTION_DAYS: '0', DELIVERY_ATTEMPT_RETENTION_DAYS: '8' }).DELIVERY_ATTEMPT_RETENTION_DAYS, 8, 'with events kept forever, any attempt retention')
  t.equal(loadConfig({}).EVENT_RETENTION_DAYS, 30)
})

t.test('maintenance creates partitions ahead and drops expired days of events with their deliveries and attempts', async (t) => {
  const t_ = scope(t)
  const url = await freshDatabase(t_)
  const app = await buildTestApp(t_, { DATABASE_URL: url, EVENT_RETENTION_DAYS: '3' })
  const db = app.pg.pool
  const today = startOfToday()
  const startup = await partitionNames(db, 'events')
  t.ok(startup.includes(`events_p${compact(today + 7 * DAY_MS)}`), 'start-up made a week of partitions ahead')

  const organization = await createOrganization(app)
  await addWebhook(db, organization)
  const sent = await app.inject({ method: 'POST', url: '/api/events/batch', headers: organization.headers, payload: { events: [{ type: 'a', payload: {} }, { type: 'b', payload: {} }] } })
  const eventIds = sent.json<{ results: Array<{ event_id: string }> }>().results.map((result) => result.event_id)
  await recordFailedAttempts(db, eventIds)
  const ofEvents = (table: string) => count(db, `SELECT 1 FROM ${table} WHERE event_id = ANY($1::uuid[])`, [eventIds])
  t.equal(await count(db, 'SELECT 1 FROM events WHERE id = ANY($1::uuid[])', [eventIds]), 2)
  t.equal(await ofEvents('deliveries'), 2)
  t.equal(await ofEvents('delivery_attempts'), 2)

  // Three days on, today is still within the retention: nothing of it goes, partitions reach further ahead.
  const later = await app.maintainPartitions(new Date(today + 3 * DAY_MS + 3600_000))
  t.ok(later.ran)
  t.ok(later.created.includes(`events_p${compact(today + 10 * DAY_MS)}`))
  t.ok(later.created.includes(`delivery_attempts_p${compact(today + 10 * DAY_MS)}`))
  t.notOk(later.dropped.includes(`events_p${compact(today)}`))
  t.same(later.dropped.filter((name) => !name.startsWith('event_dedup_keys')).sort(), [`delivery_attempts_before_${compact(today)}`, `deliveries_before_${compact(today)}`, `events_before_${compact(today)}`].sort(),
    'the partition of rows from before the migration has left the window')
  t.equal(await ofEvents('delivery_attempts'), 2)

  // Four days on, today has left the window: its three partitions are dropped together.
  const expired = await app.maintainPartitions(new Date(today + 4 * DAY_MS + 60_000))
  t.same(expired.dropped.filter((name) => !name.startsWith('event_dedup_keys')), [`delivery_attempts_p${compact(today)}`, `deliveries_p${compact(today)}`, `events_p${compact(today)}`])
  t.equal(await count(db, 'SELECT 1 FROM events WHERE id = ANY($1::uuid[])', [eventIds]), 0)
  t.equal(await ofEvents('deliveries'), 0)
  t.equal(await ofEvents('delivery_attempts'), 0)
  t.notOk((await partitionNames(db, 'events')).includes(`events_p${compact(today)}`))
  t.ok((await partitionNames(db, 'events')).includes(`events_p${compact(today + DAY_MS)}`), 'tomorrow is kept')
  t.equal((await app.inject({ method: 'GET', url: `/api/events/${eventIds[0]}`, headers: organization.headers })).statusCode, 404)

  const again = await app.maintainPartitions(new Date(today + 4 * DAY_MS + 60_000))
  t.same([again.created, again.dropped], [[], []], 'a second run at the same time has nothing to do')
})

t.test('a shorter attempt retention drops attempt partitions first; later attempts of those events are not logged', async (t) => {
  const t_ = scope(t)
  const url = await freshDatabase(t_)
  const app = await buildTestApp(t_, { DATABASE_URL: url, EVENT_RETENTION_DAYS: '5', DELIVERY_ATTEMPT_RETENTION_DAYS: '1' })
  const db = app.pg.pool
  const today = startOfToday()
  const organization = await createOrganization(app)
  await addWebhook(db, organization)
  const event = (await sendEvent(app, organization, { type: 'a', payload: {} })).json<{ event_id: string }>().event_id
  await recordFailedAttempts(db, [event])

  const result = await app.maintainPartitions(new Date(today + 2 * DAY_MS + 60_000))
  t.ok(result.dropped.includes(`delivery_attempts_p${compact(today)}`))
  t.notOk(result.dropped.includes(`events_p${compact(today)}`))
  t.equal(await count(db, 'SELECT 1 FROM events WHERE id = $1', [event]), 1, 'the event stays')
  t.equal(await count(db, 'SELECT 1 FROM deliveries WHERE event_id = $1', [event]), 1, 'its delivery stays')
  t.equal(await count(db, 'SELECT 1 FROM delivery_attempts WHERE event_id = $1', [event]), 0, 'its attempts are gone')

  // The delivery is retried: the outcome is recorded, the attempt (with no partition left) is not logged.
  await recordFailedAttempts(db, [event])
  t.equal(await count(db, 'SELECT 1 FROM deliveries WHERE event_id = $1 AND attempts = 1', [event]), 1)
  t.equal(await count(db, 'SELECT 1 FROM delivery_attempts WHERE event_id = $1', [event]), 0)
})

t.test('EVENT_RETENTION_DAYS=0 keeps everything', async (t) => {
  const t_ = scope(t)
  const url = await freshDatabase(t_)
  const pool = poolFor(t_, url)
  const result = await maintainPartitions(pool, settings(0), new Date(Date.now() + 400 * DAY_MS))
  t.ok(result.ran)
  t.same(result.dropped, [])
  t.ok((await partitionNames(pool, 'events')).includes(`events_p${compact(startOfToday())}`))
})

t.test('a dedup_id is a duplicate across a day boundary and across a dedup period boundary', async (t) => {
  const t_ = scope(t)
  const url = await freshDatabase(t_)
  const app = await buildTestApp(t_, { DATABASE_URL: url })
  const db = app.pg.pool
  const organization = await createOrganization(app)
  const periodStart = Math.floor(Date.now() / (30 * DAY_MS)) * 30 * DAY_MS
  const cases = [
    { name: 'one millisecond before midnight', at: new Date(startOfToday() - 1) },
    { name: 'the last millisecond of the previous dedup period', at: new Date(periodStart - 1) },
    { name: 'ten days before, in the previous dedup period', at: new Date(periodStart - 10 * DAY_MS) }
  ]
  for (const { name, at } of cases) {
    const dedupId = `boundary-${randomUUID()}`
    const original = await storeEventAt(db, organization, at, dedupId)
    const response = await sendEvent(app, organization, { type: 'retention.test', payload: {}, dedup_id: dedupId })
    t.equal(response.statusCode, 200, `${name}: answered as a duplicate`)
    t.equal(response.json<{ status: string, event_id: string }>().event_id, original, `${name}: with the original event`)
    t.equal(await count(db, 'SELECT 1 FROM events WHERE organization_id = $1 AND dedup_id = $2', [organization.id, dedupId]), 1, `${name}: stored once`)
  }
  const keys = await count(db, 'SELECT 1 FROM event_dedup_keys WHERE organization_id = $1 AND period < dedup_period(now())', [organization.id])
  t.ok(keys >= 1, 'at least one original was in an earlier dedup period')
})

t.test('an insert of a new dedup period waits for inserts of the previous period still open, then sees their keys', async (t) => {
  const t_ = scope(t)
  const url = await freshDatabase(t_)
  const app = await buildTestApp(t_, { DATABASE_URL: url })
  const db = app.pg.pool
  const organization = await createOrganization(app)
  const period = Math.floor(Date.now() / (30 * DAY_MS))
  const dedupId = `straddling-${randomUUID()}`
  const holder = await db.connect()
  try {
    // An insert that started in the previous period, its key written but not yet committed.
    await holder.query('BEGIN')
    await holder.query('SELECT pg_advisory_xact_lock_shared(714001401, $1)', [period - 1])
    const original = await storeEventAt(db, organization, new Date(period * 30 * DAY_MS - 1), dedupId, holder)
    const answer = sendEvent(app, organization, { type: 'retention.test', payload: {}, dedup_id: dedupId })
    const waiting = () => count(db, 'SELECT 1 FROM pg_locks WHERE locktype = \'advisory\' AND NOT granted')
    for (let tries = 0; tries < 250 && await waiting() === 0; tries++) await sleep(20)
    t.equal(await waiting(), 1, 'the new insert waits')
    await holder.query('COMMIT')
    const response = await answer
    t.equal(response.statusCode, 200, 'then finds the key and answers a duplicate')
    t.equal(response.json<{ event_id: string }>().event_id, original)
    t.equal(await count(db, 'SELECT 1 FROM events WHERE dedup_id = $1', [dedupId]), 1)
  } finally {
    await holder.query('ROLLBACK').catch(() => {})
    holder.release()
  }
})

async function inbox (app: FastifyInstance, organization: TestOrganization, cursor: string | undefined) {
  const query = cursor === undefined ? '' : `&cursor=${cursor}`
  const response = await app.inject({ method: 'GET', url: `/api/inbox?limit=2&status=all${query}`, headers: organization.headers })
  return response.json<{ events: Array<{ event_id: string }>, next_cursor: string, has_more: boolean }>()
}

t.test('a cursor and a lease span a partition boundary', async (t) => {
  const t_ = scope(t)
  const url = await freshDatabase(t_)
  const app = await buildTestApp(t_, { DATABASE_URL: url })
  const db = app.pg.pool
  const organization = await createOrganization(app)
  const before = []
  for (let n = 0; n < 3; n++) before.push(await storeEventAt(db, organization, new Date(startOfToday() - 1000 + n), null))
  const today = []
  for (let n = 0; n < 3; n++) today.push((await sendEvent(app, organization, { type: 'retention.test', payload: { n } })).json<{ event_id: string }>().event_id)
  const { rows } = await db.query<{ partitions: number }>('SELECT count(DISTINCT tableoid)::int AS partitions FROM events WHERE organization_id = $1', [organization.id])
  t.equal(rows[0]?.partitions, 2, 'the events are in two partitions')

  const seen: string[] = []
  let cursor: string | undefined
  for (let page = 0; page < 5; page++) {
    const body = await inbox(app, organization, cursor)
    seen.push(...body.events.map((event) => event.event_id))
    cursor = body.next_cursor
    if (!body.has_more) break
  }
  t.same(seen, [...before, ...today], 'pages cross the boundary in order, skipping and repeating nothing')

  const leased = await app.inject({ method: 'POST', url: '/api/inbox/lease', headers: organization.headers, payload: { limit: 6 } })
  const lease = leased.json<{ lease_id: string, events: Array<{ event_id: string }> }>()
  t.same(lease.events.map((event) => event.event_id), [...before, ...today], 'one lease holds events of both partitions, in order')
  const extended = await app.inject({ method: 'POST', url: '/api/inbox/extend', headers: organization.headers, payload: { lease_id: lease.lease_id, lease_seconds: 60 } })
  t.equal(extended.statusCode, 200)
  const acked = await app.inject({ method: 'POST', url: '/api/inbox/ack', headers: organization.headers, payload: { lease_id: lease.lease_id } })
  t.equal(acked.statusCode, 200)
  t.equal(await count(db, 'SELECT 1 FROM events WHERE organization_id = $1 AND status = \'acknowledged\'', [organization.id]), 6, 'acknowledged on both sides')
})

t.test('one instance at a time maintains partitions', async (t) => {
  const t_ = scope(t)
  const url = await freshDatabase(t_)
  const pool = poolFor(t_, url)
  const future = new Date(Date.now() + 20 * DAY_MS)
  const holder = await pool.connect()
  try {
    await holder.query('BEGIN')
    await holder.query('SELECT pg_advisory_xact_lock(7140014001)')
    const blocked = await maintainPartitions(pool, settings(3), future)
    t.same(blocked, { ran: false, created: [], dropped: [] }, 'skipped while another run holds the lock')
    t.notOk((await partitionNames(pool, 'events')).includes(`events_p${compact(future.getTime())}`))
  } finally {
    await holder.query('ROLLBACK')
    holder.release()
  }
  const runs = await Promise.all([maintainPartitions(pool, settings(3), future), maintainPartitions(pool, settings(3), future)])
  const created = runs.flatMap((run) => run.created)
  const dropped = runs.flatMap((run) => run.dropped)
  t.equal(new Set(created).size, created.length, 'concurrent runs never create a partition twice')
  t.equal(new Set(dropped).size, dropped.length, 'nor drop one twice')
  t.ok(created.includes(`events_p${compact(future.getTime())}`))
  t.ok(dropped.includes(`events_p${compact(startOfToday())}`))
})

const MIGRATIONS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'migrations')

t.test('migrating unpartitioned tables keeps every row, id, sequence and dedup_id', async (t) => {
  const t_ = scope(t)
  const url = await freshDatabase(t_, false)
  await runner({ databaseUrl: url, dir: MIGRATIONS_DIR, direction: 'up', count: 9, migrationsTable: 'pgmigrations', singleTransaction: true, log: () => {} })
  const pool = poolFor(t_, url)
  const organization = (await pool.query<{ id: string }>(
    'INSERT INTO organizations (name, tier, key_hash, key_prefix) VALUES (\'old\', \'free\', $1, \'tr_\') RETURNING id', [Buffer.from(randomUUID())])).rows[0]?.id
  const webhook = (await pool.query<{ id: string }>('INSERT INTO webhooks (organization_id, url, secret) VALUES ($1, \'http://127.0.0.1:9/\', \'s\') RETURNING id', [organization])).rows[0]?.id
  // 3000 events over the last 40 days and today, half with a dedup_id, each with a delivery and an attempt.
  await pool.query(`INSERT INTO events (id, organization_id, type, payload, dedup_id, created_at)
                    SELECT gen_random_uuid(), $1, 'old', jsonb_build_object('n', n), CASE WHEN n % 2 = 0 THEN 'old-' || n END,
                           now() - make_interval(mins => (n * 20) % (40 * 24 * 60))
                    FROM generate_series(1, 3000) AS n`, [organization])
  await pool.query('INSERT INTO deliveries (event_id, webhook_id) SELECT id, $1 FROM events', [webhook])
  await pool.query(`INSERT INTO delivery_attempts (delivery_id, webhook_id, event_id, attempt, status, duration_ms)
                    SELECT id, webhook_id, event_id, 1, 'failed', 5 FROM deliveries`)
  const snapshot = async () => ({
    events: (await pool.query('SELECT id, seq::text, created_at, dedup_id, txid::text FROM events ORDER BY id')).rows,
    deliveries: (await pool.query('SELECT id, event_id FROM deliveries ORDER BY id')).rows,
    attempts: (await pool.query('SELECT id::text, delivery_id FROM delivery_attempts ORDER BY id')).rows
  })
  const before = await snapshot()
  const maxSeq = before.events.reduce((max, row: { seq: string }) => Math.max(max, Number(row.seq)), 0)

  await runMigrations(directDatabaseUrl(url), quiet)
  const after = await snapshot()
  t.equal(after.events.length, 3000)
  t.same(after, before, 'every event, delivery and attempt is kept with its ids, seq, created_at and txid')
  const today = compact(startOfToday())
  t.equal(await count(pool, `SELECT 1 FROM events_before_${today}`), await count(pool, 'SELECT 1 FROM events WHERE created_at < $1', [new Date(startOfToday())]),
    'older rows are in the "before" partition')
  t.equal(await count(pool, `SELECT 1 FROM deliveries d JOIN events e ON e.id = d.event_id AND e.created_at = d.event_created_at`), 3000,
    'each delivery carries its event\'s created_at')
  t.equal(await count(pool, 'SELECT 1 FROM event_dedup_keys'), 1500, 'every dedup_id is remembered')

  const inserted = await pool.query<{ seq: string }>('INSERT INTO events (id, organization_id, type, payload) VALUES (gen_random_uuid(), $1, \'new\', \'{}\') RETURNING seq::text', [organization])
  t.ok(Number(inserted.rows[0]?.seq) > maxSeq, 'seq continues after the copied rows')
})

t.test('a subscription that had not acked events retention drops says position_expired, until a seek', async (t) => {
  const t_ = scope(t)
  const url = await freshDatabase(t_)
  const app = await buildTestApp(t_, { DATABASE_URL: url, EVENT_RETENTION_DAYS: '3' })
  const organization = await createOrganization(app)
  const caughtUp = await createSubscription(app, organization, { start: 'beginning' })
  const behind = await createSubscription(app, organization, { start: 'beginning' })
  const otherTypes = await createSubscription(app, organization, { start: 'beginning', event_types: ['other.*'] })
  const sent = await sendEvents(app, organization, times(3))
  t.same(await take(app, organization, caughtUp.id, 3), sent, 'one subscription acked everything')
  t.match(await getSubscription(app, organization, behind.id), { position_expired: false, position_expired_at: null })

  // Four days on, today's events are dropped.
  const expired = await app.maintainPartitions(new Date(startOfToday() + 4 * DAY_MS + 60_000))
  t.ok(expired.dropped.includes(`events_p${compact(startOfToday())}`))
  t.match(await getSubscription(app, organization, behind.id), { position_expired: true, position_expired_at: String }, 'the one that had not acked them says so')
  t.match(await getSubscription(app, organization, caughtUp.id), { position_expired: false }, 'not the one that had acked them')
  t.match(await getSubscription(app, organization, otherTypes.id), { position_expired: false }, 'nor one they did not match')

  const sought = await request(app, organization, 'POST', `/api/subscriptions/${behind.id}/seek`, { to: 'now' })
  t.match(sought.json(), { position_expired: false, position_expired_at: null }, 'a seek clears it')
})
