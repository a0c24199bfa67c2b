import type { Queryable } from './queryable.js'

/** The tables partitioned by their event's creation day (migration 010), in the order their partitions are dropped. */
export const DAY_PARTITIONED_TABLES = ['delivery_attempts', 'deliveries', 'events'] as const
export type DayPartitionedTable = typeof DAY_PARTITIONED_TABLES[number]

export const DEDUP_KEYS_TABLE = 'event_dedup_keys'

// Any constant shared by every instance: only one of them maintains partitions at a time.
const MAINTENANCE_LOCK_KEY = 7_140_014_001

/**
 * Takes the maintenance lock for the current transaction; false when another session holds it. Transaction-level,
 * so it is released by COMMIT or ROLLBACK and works through a transaction-mode pooler.
 */
export async function tryMaintenanceLock (client: Queryable): Promise<boolean> {
  const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_xact_lock($1) AS locked', [MAINTENANCE_LOCK_KEY])
  return rows[0]?.locked === true
}

export interface Partition {
  name: string
  /**
   * The end (exclusive) of the time its rows belong to, read from its bound in the catalog: a day partition's
   * upper bound, a dedup period's end. Null where no time ends it: a DEFAULT partition, an upper bound of
   * MAXVALUE or infinity, a list of several periods.
   */
  endsAt: Date | null
}

/** The partitions of the given tables, by parent, with their ends read from their bounds (migration 016). */
export async function listPartitions (db: Queryable, parents: readonly string[]): Promise<Map<string, Partition[]>> {
  const { rows } = await db.query<{ parent: string, name: string, ends_at_ms: number | null }>(
    `SELECT parent.relname AS parent, child.relname AS name, partition_ends_at(child.oid) AS ends_at_ms
     FROM pg_inherits i
     JOIN pg_class parent ON parent.oid = i.inhparent
     JOIN pg_class child ON child.oid = i.inhrelid
     WHERE parent.relname = ANY($1::text[]) AND parent.relnamespace = to_regnamespace(current_schema())::oid
     ORDER BY child.relname`,
    [parents])
  const byParent = new Map<string, Partition[]>(parents.map((parent) => [parent, []]))
  for (const row of rows) byParent.get(row.parent)?.push({ name: row.name, endsAt: row.ends_at_ms === null ? null : new Date(row.ends_at_ms) })
  return byParent
}

/** The dedup period of `at`: SQL's dedup_period(), asked rather than computed here (the period's length is held in SQL only: migration 017). */
export async function dedupPeriodAt (db: Queryable, at: Date): Promise<number> {
  const { rows } = await db.query<{ period: number }>('SELECT dedup_period($1::timestamptz) AS period', [at])
  return (rows[0] as { period: number }).period
}

/**
 * Creates what is missing of the given partitions: each table's for each day (YYYY-MM-DD, UTC) and the dedup keys'
 * for each period. Returns the names of those it created, in one statement: the SQL functions that make the names
 * (`<table>_pYYYYMMDD`, `event_dedup_keys_period_<n>`; migration 017) answer a created partition's name, NULL for one
 * that existed, so names are never built here.
 */
export async function createPartitions (client: Queryable, wanted: { tables: readonly DayPartitionedTable[], days: string[], dedupPeriods: number[] }): Promise<string[]> {
  // PostgreSQL neither flattens a subquery whose output calls a volatile function nor pushes the WHERE into it:
  // each partition is created by one call, filtered after.
  const { rows } = await client.query<{ name: string }>(
    `SELECT name FROM (
       SELECT create_day_partition(t::regclass, d::date) AS name FROM unnest($1::text[]) AS t, unnest($2::date[]) AS d
       UNION ALL
       SELECT create_dedup_partition(p) FROM unnest($3::int[]) AS p
     ) AS created
     WHERE name IS NOT NULL`,
    [wanted.tables, wanted.days, wanted.dedupPeriods])
  return rows.map((row) => row.name)
}

/** Drops partitions, in the order given, in one statement (each DROP locks its parent briefly). */
export async function dropPartitions (client: Queryable, names: string[]): Promise<void> {
  if (names.length === 0) return
  const quoted = names.map((name) => `"${name.replaceAll('"', '""')}"`)
  await client.query(`DROP TABLE IF EXISTS ${quoted.join(', ')}`)
}

/** Stops attempts of events created before `from` from being logged (their partitions are being dropped). */
export async function raiseAttemptsHorizon (client: Queryable, from: Date): Promise<void> {
  await client.query('UPDATE retention_horizon SET attempts_from = greatest(attempts_from, $1)', [from])
}
