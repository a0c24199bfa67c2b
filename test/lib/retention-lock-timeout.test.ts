import t from 'tap'
import pg from 'pg'
import { runMigrations } from '../../db/migrate.js'
import { maintainPartitions, type RetentionSettings } from '../../lib/retention.js'
import { lastFirst, ownDatabase } from '../support/databases.js'
import { directDatabaseUrl } from '../support/helpers.js'
import { waitFor } from '../support/webhooks.js'

const DAY_MS = 86_400_000
const settings: RetentionSettings = { eventDays: 0, attemptDays: 0, aheadDays: 1, lockTimeoutMs: 200 }

t.test('maintenance gives up at its lock timeout when a table is busy, holding nothing, and succeeds on the next run', async (t) => {
  const scope = lastFirst(t)
  const url = directDatabaseUrl(await ownDatabase(scope, 'retention_lock'))
  await runMigrations(url, { info: () => {} })
  const pool = new pg.Pool({ connectionString: url, max: 2 })
  scope.teardown(() => pool.end())
  // A day with no partitions yet: maintenance must create them, which needs a lock on the partitioned tables.
  const later = new Date(Date.now() + 400 * DAY_MS)

  const holder = new pg.Client({ connectionString: url })
  await holder.connect()
  scope.teardown(() => holder.end())
  await holder.query('BEGIN')
  await holder.query('LOCK TABLE events IN ACCESS EXCLUSIVE MODE')
  let settled = false
  const run = maintainPartitions(pool, settings, later).finally(() => { settled = true })
  run.catch(() => {})
  // Bounded only so that a missing lock timeout fails here instead of hanging until the lock is released below.
  await waitFor('the maintenance run to give up while the lock is still held', () => settled)
  await t.rejects(run, { code: '55P03' }, 'it failed with lock_timeout instead of queueing behind the lock')
  t.equal(pool.totalCount - pool.idleCount, 0, 'its connection is back in the pool')
  const { rows: held } = await holder.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_locks
     WHERE locktype = 'advisory' AND pid <> pg_backend_pid() AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
  t.equal(held[0]?.n, 0, 'and its maintenance lock is released (the transaction rolled back)')
  await holder.query('COMMIT')

  const result = await maintainPartitions(pool, settings, later)
  t.equal(result.ran, true, 'the next run, with the table free, does the work')
  t.ok(result.created.length > 0, `it created ${result.created.join(', ')}`)
})
