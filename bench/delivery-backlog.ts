import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { withClient } from '../test/support/database.js'
import { waitForArrivals } from './delivery-check.js'
import { throughput, withWorker, type DeliveryContext } from './delivery.js'
import { benchPayload } from './http-load.js'
import { addWebhook, createOrganization } from './organizations.js'
import type { ReceiverEndpoint } from './receiver.js'
import type { BacklogResult } from './report.js'
import { peakMb, sampleRss, type BenchProcess } from './server.js'

/** How long the worker drains the backlog while its RSS is sampled (RSS at the backlog, not a drain). */
const DRAIN_SECONDS = 60
const IDLE_SECONDS = 5
/** Rows per INSERT statement, so progress shows and no single transaction holds a million rows. */
const INSERT_CHUNK = 100_000

async function sampleWorker<T> (context: DeliveryContext, work: (worker: BenchProcess) => Promise<T>): Promise<{ result: T, peakRssMb: number | undefined }> {
  return await withWorker(context, {}, async (worker) => {
    const { result, rssSamples } = await sampleRss(worker, () => work(worker))
    return { result, peakRssMb: peakMb(rssSamples) }
  })
}

/**
 * Writes `rows` events of ~1 KB with one pending delivery each straight into the tables, as a worker outage
 * would leave them (the API would take minutes to accept as many), then ANALYZEs them as autovacuum would.
 */
async function insertBacklog (databaseUrl: string, organizationId: string, webhookId: string, rows: number): Promise<number> {
  const started = performance.now()
  const payload = JSON.stringify(benchPayload())
  await withClient(databaseUrl, async (client) => {
    for (let done = 0; done < rows; done += INSERT_CHUNK) {
      await client.query(
        `WITH inserted AS (
           INSERT INTO events (id, organization_id, type, source, payload, delivery_status)
           SELECT gen_random_uuid(), $1, 'bench.backlog', 'bench', $2::jsonb, 'pending' FROM generate_series(1, $3)
           RETURNING id, created_at
         )
         INSERT INTO deliveries (event_id, event_created_at, webhook_id) SELECT id, created_at, $4 FROM inserted`,
        [organizationId, payload, Math.min(INSERT_CHUNK, rows - done), webhookId])
      console.log(`  backlog: ${Math.min(rows, done + INSERT_CHUNK)} of ${rows} rows written`)
    }
    await client.query('ANALYZE events')
    await client.query('ANALYZE deliveries')
  })
  return (performance.now() - started) / 1000
}

/**
 * Partial by design (the backlog is not drained): every delivery the database calls delivered reached the
 * receiver, and the receiver saw nothing of another organization. Received but not yet recorded ones were in
 * flight when the worker stopped and stay pending (sent again later: at least once). Nothing delivered fails:
 * the worker's RSS was then not that of a worker draining a backlog.
 */
async function checkBacklog (databaseUrl: string, organizationId: string, webhookId: string, endpoint: ReceiverEndpoint): Promise<{ ok: boolean, summary: string }> {
  const received = [...endpoint.eventIds()]
  return await withClient(databaseUrl, async (client) => {
    const delivered = await client.query<{ event_id: string }>(
      'SELECT event_id::text AS event_id FROM deliveries WHERE webhook_id = $1 AND status = \'delivered\'', [webhookId])
    const foreign = await client.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM unnest($1::uuid[]) AS r(id)
       WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = r.id AND e.organization_id = $2)`, [received, organizationId])
    const missing = delivered.rows.filter((row) => !endpoint.has(row.event_id)).length
    const unknown = foreign.rows[0]?.n ?? 0
    const ok = delivered.rows.length > 0 && missing === 0 && unknown === 0 && endpoint.malformed === 0
    const unrecorded = received.length - unknown - (delivered.rows.length - missing)
    const verdict = delivered.rows.length === 0 ? 'NOTHING TO CHECK (nothing delivered)' : ok ? 'OK' : 'MISMATCH'
    return {
      ok,
      summary: `${delivered.rows.length} delivered, ${missing} of them not received, ${unknown} unknown ids received, ` +
        `${unrecorded} received but not yet recorded at the stop, ${endpoint.duplicates} duplicates: ${verdict}`
    }
  })
}

export function describeBacklog (rows: number): string {
  return `delivery-backlog: ${rows} events with a pending delivery each written with SQL, a worker sampled while it drains them for up to ${DRAIN_SECONDS} s`
}

/**
 * delivery-backlog (not in the default set): an idle worker's RSS, then a worker's RSS while it drains a
 * backlog of `rows` deliveries to one endpoint for DRAIN_SECONDS (or until it is empty).
 */
export async function measureBacklog (context: DeliveryContext, rows: number): Promise<BacklogResult> {
  const idle = await sampleWorker(context, () => sleep(IDLE_SECONDS * 1000))
  const organization = await createOrganization(context.server.baseUrl, 'bench-delivery-backlog')
  const endpoint = context.receiver.endpoint('delivery-backlog')
  const webhookId = await addWebhook(context.server.baseUrl, organization, endpoint.url)
  const insertSeconds = await insertBacklog(context.databaseUrl, organization.id, webhookId, rows)
  const started = performance.now()
  const drain = await sampleWorker(context, (worker) => waitForArrivals([endpoint], rows, worker, DRAIN_SECONDS * 1000))
  const sampledSeconds = (performance.now() - started) / 1000
  const check = await checkBacklog(context.databaseUrl, organization.id, webhookId, endpoint)
  const { perSecond: deliveriesPerSecond } = throughput([endpoint])
  console.log(`delivery-backlog: worker RSS idle ${idle.peakRssMb?.toFixed(0) ?? 'n/a'} MB, peak ${drain.peakRssMb?.toFixed(0) ?? 'n/a'} MB; ` +
    `${deliveriesPerSecond.toFixed(0)} deliveries/s (${drain.result}); ${check.summary}`)
  return {
    rows,
    insertSeconds,
    idleRssMb: idle.peakRssMb,
    sampledSeconds,
    result: {
      name: 'delivery-backlog',
      events: rows,
      endpoints: 1,
      deliveries: endpoint.deliveries,
      deliveriesPerSecond,
      latencyMs: undefined,
      sentPerSecond: undefined,
      duplicates: endpoint.duplicates,
      rowCheck: check.summary,
      rowCheckOk: check.ok,
      failures: [],
      workerPeakRssMb: drain.peakRssMb,
      serverPeakRssMb: undefined
    }
  }
}
