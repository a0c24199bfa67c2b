import type { Queryable } from './queryable.js'

/** The tables partitioned by their event's creation day (migration 010), in the order their partitions are dropped. */
export const DAY_PARTITIONED_TABLES = ['delivery_attempts', 'deliveries', 'events'] as const
export type DayPartitionedTable = typeof DAY_PARTITIONED_TABLES[number]

export const DEDUP_KEYS_TABLE = 'event_dedup_keys'

/** Length of a dedup period (migration 010's dedup_period()). */
export const DEDUP_PERIOD_DAYS = 30

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

const names = (byParent: Map<string, Partition[]>) => [...byParent.values()].flat().map((partition) => partition.name)

/**
 * Creates what is missing of the given partitions: each table's for each day (YYYY-MM-DD, UTC) and the dedup keys'
 * for each period. Returns the names of those it created. Names are made only by migration 010's SQL functions
 * (`<table>_pYYYYMMDD`, `event_dedup_keys_period_<n>`), so they are read back rather than built here again.
 */
export async function createPartitions (client: Queryable, wanted: { tables: readonly DayPartitionedTable[], days: string[], dedupPeriods: number[] }): Promise<string[]> {
  const parents = [...wanted.tables, DEDUP_KEYS_TABLE]
  const before = new Set(names(await listPartitions(client, parents)))
  await client.query(
    `SELECT create_day_partition(t::regclass, d::date) FROM unnest($1::text[]) AS t, unnest($2::date[]) AS d
     UNION ALL
     SELECT create_dedup_partition(p) FROM unnest($3::int[]) AS p`,
    [wanted.tables, wanted.days, wanted.dedupPeriods])
  return names(await listPartitions(client, parents)).filter((name) => !before.has(name))
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
