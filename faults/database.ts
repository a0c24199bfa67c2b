import pg from 'pg'
import { databaseUrlFor, RUN_ID } from './settings.js'

/**
 * The suite's own look at the database, bypassing the API: a fresh connection per question, because
 * PostgreSQL is restarted under it and a long-lived client would die with the restart.
 */
const APPLICATION_NAME = `faults-${RUN_ID}-checks`

async function withClient<T> (work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: databaseUrlFor(APPLICATION_NAME) })
  await client.connect()
  try {
    return await work(client)
  } finally {
    await client.end()
  }
}

/** Acknowledged event ids without a row: lost events. */
export async function missingEvents (eventIds: string[]): Promise<string[]> {
  return await withClient(async (client) => {
    const { rows } = await client.query<{ id: string }>(
      'SELECT id FROM unnest($1::uuid[]) AS acked(id) WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = acked.id)', [eventIds])
    return rows.map((row) => row.id)
  })
}

export interface DeliveryTally {
  delivered: number
  failed: number
  pending: number
}

const TALLY = `count(*) FILTER (WHERE status = 'delivered')::int AS delivered,
               count(*) FILTER (WHERE status = 'failed')::int AS failed,
               count(*) FILTER (WHERE status = 'pending')::int AS pending`

/** Deliveries (to every endpoint) of the given events, by status. */
export async function deliveriesOfEvents (eventIds: string[]): Promise<DeliveryTally> {
  return await withClient(async (client) => {
    const { rows: [tally] } = await client.query<DeliveryTally>(`SELECT ${TALLY} FROM deliveries WHERE event_id = ANY($1::uuid[])`, [eventIds])
    return tally ?? { delivered: 0, failed: 0, pending: 0 }
  })
}

/** Every delivery of the organization, by status (including those of events whose answer was cut off). */
export async function deliveriesOfOrganization (organizationId: string): Promise<DeliveryTally> {
  return await withClient(async (client) => {
    const { rows: [tally] } = await client.query<DeliveryTally>(
      `SELECT ${TALLY} FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE w.organization_id = $1`, [organizationId])
    return tally ?? { delivered: 0, failed: 0, pending: 0 }
  })
}

export interface StuckDelivery {
  url: string
  attempts: number
  /** Seconds since it came due (negative: not due yet). */
  due_seconds_ago: number
  claimed_until: Date | null
}

/** A few pending deliveries, to show why they are stuck (a claim that never lapses, a due attempt never taken). */
export async function pendingDeliveries (organizationId: string, limit = 3): Promise<StuckDelivery[]> {
  return await withClient(async (client) => {
    const { rows } = await client.query<StuckDelivery>(
      `SELECT w.url, d.attempts, extract(epoch FROM now() - d.next_attempt_at)::float AS due_seconds_ago, d.claimed_until
       FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
       WHERE w.organization_id = $1 AND d.status = 'pending' ORDER BY d.created_at LIMIT $2`, [organizationId, limit])
    return rows
  })
}

/** Deliveries of the organization a worker holds right now (sends in flight); 0 means the workers are idle. */
export async function claimedDeliveries (organizationId: string): Promise<number> {
  return await withClient(async (client) => {
    const { rows: [row] } = await client.query<{ count: number }>(
      `SELECT count(*)::int AS count FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
       WHERE w.organization_id = $1 AND d.status = 'pending' AND d.claimed_until > now()`, [organizationId])
    return row?.count ?? 0
  })
}

export interface EndpointSummary extends DeliveryTally {
  minAttempts: number
  maxAttempts: number
  /** The most frequent outcomes of its attempts (error text or status), with counts. */
  outcomes: string[]
  /** How late the latest retry went out after it came due (or, if still waiting, how overdue it is now). */
  retryLateSeconds: number
}

/** A retry starts at attempted_at - duration_ms; it was due at the previous attempt's next_attempt_at. */
const RETRY_LATENESS = `WITH attempts AS (
    SELECT attempted_at - make_interval(secs => duration_ms / 1000.0) AS started,
           lag(next_attempt_at) OVER (PARTITION BY delivery_id ORDER BY attempt) AS due
    FROM delivery_attempts WHERE webhook_id = $1
  ), late AS (
    SELECT started - due AS lateness FROM attempts WHERE due IS NOT NULL
    UNION ALL
    SELECT now() - next_attempt_at FROM deliveries
    WHERE webhook_id = $1 AND status = 'pending' AND attempts > 0 AND next_attempt_at < now()
      AND (claimed_until IS NULL OR claimed_until < now())
  )
  SELECT coalesce(max(extract(epoch FROM lateness)), 0)::float AS seconds FROM late`

export async function endpointSummary (webhookId: string): Promise<EndpointSummary> {
  return await withClient(async (client) => {
    const { rows: [summary] } = await client.query<DeliveryTally & { min_attempts: number | null, max_attempts: number | null }>(
      `SELECT ${TALLY}, min(attempts)::int AS min_attempts, max(attempts)::int AS max_attempts FROM deliveries WHERE webhook_id = $1`, [webhookId])
    const { rows: outcomes } = await client.query<{ outcome: string, count: number }>(
      `SELECT coalesce(error, 'status ' || response_status) AS outcome, count(*)::int AS count FROM delivery_attempts
       WHERE webhook_id = $1 GROUP BY 1 ORDER BY 2 DESC LIMIT 3`, [webhookId])
    const { rows: [late] } = await client.query<{ seconds: number }>(RETRY_LATENESS, [webhookId])
    return {
      delivered: summary?.delivered ?? 0,
      failed: summary?.failed ?? 0,
      pending: summary?.pending ?? 0,
      minAttempts: summary?.min_attempts ?? 0,
      maxAttempts: summary?.max_attempts ?? 0,
      outcomes: outcomes.map((row) => `${row.count}× ${row.outcome}`),
      retryLateSeconds: late?.seconds ?? 0
    }
  })
}

export interface ConnectionCount {
  application_name: string
  state: string
  count: number
}

/** Server connections of the given application names, by state (pool clients, listeners). */
export async function connectionsOf (applicationNames: string[]): Promise<ConnectionCount[]> {
  return await withClient(async (client) => {
    const { rows } = await client.query<ConnectionCount>(
      `SELECT application_name, coalesce(state, 'unknown') AS state, count(*)::int AS count FROM pg_stat_activity
       WHERE application_name = ANY($1::text[]) GROUP BY 1, 2 ORDER BY 1, 2`, [applicationNames])
    return rows
  })
}

export async function deleteOrganizations (organizationIds: string[]): Promise<void> {
  if (organizationIds.length === 0) return
  await withClient(async (client) => {
    await client.query('DELETE FROM organizations WHERE id = ANY($1::uuid[])', [organizationIds])
  })
}

export async function serverVersion (): Promise<string> {
  return await withClient(async (client) => {
    const { rows: [row] } = await client.query<{ version: string }>('SELECT current_setting(\'server_version\') AS version')
    return row?.version ?? 'unknown'
  })
}
