import { createPartitions, DAY_PARTITIONED_TABLES, dropPartitions, listPartitions } from '../db/partitions.js'
import type { Queryable } from '../db/queryable.js'
import { withClient } from '../test/support/database.js'

const DAY_MS = 86_400_000
const INSERT_CHUNK = 100_000
// Beyond the week of partitions the service makes ahead, so only this scenario writes into (and drops) that day.
const FILLED_DAY_OFFSET = 60
const LOCK_TIMEOUT_MS = 2000

const filledDay = () => new Date(Date.now() + FILLED_DAY_OFFSET * DAY_MS).toISOString().slice(0, 10)

/** The day's partitions of the day-partitioned tables, in drop order (attempts, deliveries, events). */
async function partitionsOf (client: Queryable, day: string): Promise<string[]> {
  const dayEnd = Date.parse(`${day}T00:00:00Z`) + DAY_MS
  const partitions = await listPartitions(client, DAY_PARTITIONED_TABLES)
  return [...partitions.values()].flat().filter(({ endsAt }) => endsAt?.getTime() === dayEnd).map(({ name }) => name)
}

export function describeRetentionDrop (rows: number): string {
  return `retention-drop: ingest while the day partitions holding ${rows} events (~200 B payloads) are dropped half-way, after the same ingest without a drop`
}

/** Writes `rows` events of one organization into a day partition of their own (made for it); returns the seconds taken. */
export async function fillDayPartition (databaseUrl: string, organizationId: string, rows: number): Promise<number> {
  const started = performance.now()
  const day = filledDay()
  await withClient(databaseUrl, async (client) => {
    await createPartitions(client, { tables: DAY_PARTITIONED_TABLES, days: [day], dedupPeriods: [] })
    for (let done = 0; done < rows; done += INSERT_CHUNK) {
      await client.query(
        `INSERT INTO events (id, organization_id, type, source, payload, created_at)
         SELECT gen_random_uuid(), $1, 'bench.retention', 'bench', jsonb_build_object('n', n, 'filler', repeat('x', 160)),
                $2::date + make_interval(secs => n % 86400)
         FROM generate_series(1, $3) AS n`,
        [organizationId, day, Math.min(INSERT_CHUNK, rows - done)])
    }
    await client.query(`VACUUM ANALYZE ${(await partitionsOf(client, day))[2] ?? ''}`)
  })
  return (performance.now() - started) / 1000
}

/** Drops the filled day's partitions as the maintenance does (one transaction, bounded lock wait); the milliseconds it took. */
export async function dropFilledPartition (databaseUrl: string): Promise<number> {
  return await withClient(databaseUrl, async (client) => {
    const started = performance.now()
    await client.query('BEGIN')
    try {
      await client.query(`SET LOCAL lock_timeout = ${LOCK_TIMEOUT_MS}`)
      await dropPartitions(client, await partitionsOf(client, filledDay()))
      await client.query('COMMIT')
    } catch (error) {
      await client.query('ROLLBACK')
      throw error
    }
    return performance.now() - started
  })
}
