import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import pg from 'pg'
import { withClient } from '../test/support/database.js'
import { benchPayload, CONNECTIONS } from './http-load.js'
import { percentiles, type Percentiles } from './stats.js'

export interface RawRun {
  inserts: number
  errors: number
  seconds: number
  latencyMs: Percentiles
}

/**
 * The limit of the obvious design: CONNECTIONS clients each inserting one event row at a time in autocommit
 * (one round trip and one commit per event) into the same table, with the same row shape, for `seconds`.
 */
export async function runRawInserts (databaseUrl: string, organizationId: string, seconds: number): Promise<RawRun> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: CONNECTIONS })
  const payload = JSON.stringify(benchPayload())
  const latencies: number[] = []
  let errors = 0
  const started = performance.now()
  const deadline = started + seconds * 1000
  const client = async () => {
    while (performance.now() < deadline) {
      const begin = performance.now()
      try {
        await pool.query({
          name: 'bench-raw-insert',
          text: 'INSERT INTO events (id, organization_id, type, payload, dedup_id, source) VALUES ($1, $2, $3, $4, $5, $6)',
          values: [randomUUID(), organizationId, 'bench.raw', payload, randomUUID(), 'bench']
        })
        latencies.push(performance.now() - begin)
      } catch {
        errors++
      }
    }
  }
  try {
    await Promise.all(Array.from({ length: CONNECTIONS }, client))
  } finally {
    await pool.end()
  }
  const elapsed = (performance.now() - started) / 1000
  return { inserts: latencies.length, errors, seconds: elapsed, latencyMs: percentiles(latencies) }
}

export async function countRows (databaseUrl: string, organizationId: string): Promise<number> {
  return await withClient(databaseUrl, async (client) => {
    const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE organization_id = $1', [organizationId])
    return rows[0]?.n ?? 0
  })
}
