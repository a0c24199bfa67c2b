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

/** Of the given events, those not stored under the organization (another's, or none at all). */
export async function eventsOutside (eventIds: string[], organizationId: string): Promise<string[]> {
  return await withClient(async (client) => {
    const { rows } = await client.query<{ id: string }>(
      `SELECT id FROM unnest($1::uuid[]) AS given(id)
       WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = given.id AND e.organization_id = $2)`, [eventIds, organizationId])
    return rows.map((row) => row.id)
  })
}

/**
 * What the database shows of events a subscription never handed out: each one's position and its row in the
 * subscription's state, if any, beside the subscription's floor and frontier. Evidence for a failed check.
 */
export async function subscriptionEvidence (subscriptionId: string, eventIds: string[]): Promise<string[]> {
  return await withClient(async (client) => {
    const { rows: [subscription] } = await client.query<{ floor: string, frontier: string }>(
      `SELECT floor_txid::text || '/' || floor_seq AS floor, frontier_txid::text || '/' || frontier_seq AS frontier
       FROM subscriptions WHERE id = $1`, [subscriptionId])
    const { rows } = await client.query<{ id: string, type: string, created_at: Date, position: string, state: string | null, attempts: number | null }>(
      `SELECT e.id, e.type, e.created_at, e.txid::text || '/' || e.seq AS position, se.state, se.attempts
       FROM events e LEFT JOIN subscription_events se ON se.subscription_id = $1 AND se.event_id = e.id
       WHERE e.id = ANY($2::uuid[]) ORDER BY e.txid, e.seq`, [subscriptionId, eventIds])
    return [
      subscription === undefined ? 'the subscription is gone' : `subscription floor ${subscription.floor}, frontier ${subscription.frontier} (txid/seq)`,
      ...rows.map((row) => `${row.id} (${row.type}, created ${row.created_at.toISOString()}, at ${row.position}): ` +
        (row.state === null ? 'no row in the subscription\'s state' : `${row.state} after ${row.attempts ?? 0} leases`))
    ]
  })
}

export interface DeliveryTally {
  delivered: number
  failed: number
  pending: number
  /** Attempts recorded over these deliveries: grows while the worker is making progress. */
  attempts: number
}

const TALLY = `count(*) FILTER (WHERE status = 'delivered')::int AS delivered,
               count(*) FILTER (WHERE status = 'failed')::int AS failed,
               count(*) FILTER (WHERE status = 'pending')::int AS pending,
               coalesce(sum(attempts), 0)::int AS attempts`
const NO_DELIVERIES: DeliveryTally = { delivered: 0, failed: 0, pending: 0, attempts: 0 }

/** Deliveries (to every endpoint) of the given events, by status. */
export async function deliveriesOfEvents (eventIds: string[]): Promise<DeliveryTally> {
  return await withClient(async (client) => {
    const { rows: [tally] } = await client.query<DeliveryTally>(`SELECT ${TALLY} FROM deliveries WHERE event_id = ANY($1::uuid[])`, [eventIds])
    return tally ?? NO_DELIVERIES
  })
}

/** Every delivery of the organization, by status (including those of events whose answer was cut off). */
export async function deliveriesOfOrganization (organizationId: string): Promise<DeliveryTally> {
  return await withClient(async (client) => {
    const { rows: [tally] } = await client.query<DeliveryTally>(
      `SELECT ${TALLY} FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE w.organization_id = $1`, [organizationId])
    return tally ?? NO_DELIVERIES
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

/** The earliest retry the worker has scheduled for the organization (it wakes for it by itself); null if none. */
export async function nextScheduledAttempt (organizationId: string): Promise<Date | null> {
  return await withClient(async (client) => {
    const { rows: [row] } = await client.query<{ at: Date | null }>(
      `SELECT min(d.next_attempt_at) AS at FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
       WHERE w.organization_id = $1 AND d.status = 'pending' AND d.next_attempt_at > now()`, [organizationId])
    return row?.at ?? null
  })
}

export interface EndpointSummary extends DeliveryTally {
  minAttempts: number
  maxAttempts: number
  /** The most frequent outcomes of its attempts (error text or status), with counts. */
  outcomes: string[]
  /** Every recorded attempt's event id, once per attempt: compared with what the receiver saw. */
  attemptedEventIds: string[]
  retries: RetryOrder
}

/**
 * The order of an endpoint's attempts, each delivery's taken in the order they started. Violations are
 * counts of attempts; lateness (a retry's start after the moment it came due) is a figure, never a verdict.
 */
export interface RetryOrder {
  /** Attempts whose number is not the previous one's + 1 (a gap, a repeat, or a retry before the attempt it follows). */
  outOfSequence: number
  /** Retries that started before the previous attempt of the same delivery had ended. */
  overlapping: number
  /** Retries that started before the previous attempt's next_attempt_at (earlier than the schedule's delay). */
  early: number
  retries: number
  latenessP50Seconds: number | undefined
  latenessMaxSeconds: number | undefined
}

/**
 * attempted_at is when an attempt started (the worker stamps it before sending), duration_ms how long it
 * took; next_attempt_at is when the next may start (set from the end of the send plus the schedule's delay,
 * and the claim only takes it once the database's clock has passed it).
 */
const RETRY_ORDER = `WITH a AS (
    SELECT attempt, attempted_at AS started,
           lag(attempt) OVER w AS previous_attempt,
           lag(attempted_at + make_interval(secs => duration_ms / 1000.0)) OVER w AS previous_ended,
           lag(next_attempt_at) OVER w AS due
    FROM delivery_attempts WHERE webhook_id = $1
    WINDOW w AS (PARTITION BY delivery_id ORDER BY attempted_at, attempt)
  )
  SELECT count(*) FILTER (WHERE (previous_attempt IS NULL AND attempt <> 1) OR attempt <> previous_attempt + 1)::int AS out_of_sequence,
         count(*) FILTER (WHERE started <= previous_ended)::int AS overlapping,
         count(*) FILTER (WHERE started < due)::int AS early,
         count(*) FILTER (WHERE previous_attempt IS NOT NULL)::int AS retries,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started - due)::float8) FILTER (WHERE due IS NOT NULL)::float AS p50,
         max(extract(epoch FROM started - due)) FILTER (WHERE due IS NOT NULL)::float AS max
  FROM a`

export async function endpointSummary (webhookId: string): Promise<EndpointSummary> {
  return await withClient(async (client) => {
    const { rows: [summary] } = await client.query<DeliveryTally & { min_attempts: number | null, max_attempts: number | null }>(
      `SELECT ${TALLY}, min(attempts)::int AS min_attempts, max(attempts)::int AS max_attempts FROM deliveries WHERE webhook_id = $1`, [webhookId])
    const { rows: outcomes } = await client.query<{ outcome: string, count: number }>(
      `SELECT coalesce(error, 'status ' || response_status) AS outcome, count(*)::int AS count FROM delivery_attempts
       WHERE webhook_id = $1 GROUP BY 1 ORDER BY 2 DESC LIMIT 3`, [webhookId])
    const { rows: attempted } = await client.query<{ event_id: string }>(
      'SELECT event_id::text AS event_id FROM delivery_attempts WHERE webhook_id = $1', [webhookId])
    const { rows: [order] } = await client.query<{
      out_of_sequence: number, overlapping: number, early: number, retries: number, p50: number | null, max: number | null
    }>(RETRY_ORDER, [webhookId])
    return {
      delivered: summary?.delivered ?? 0,
      failed: summary?.failed ?? 0,
      pending: summary?.pending ?? 0,
      attempts: summary?.attempts ?? 0,
      minAttempts: summary?.min_attempts ?? 0,
      maxAttempts: summary?.max_attempts ?? 0,
      outcomes: outcomes.map((row) => `${row.count}× ${row.outcome}`),
      attemptedEventIds: attempted.map((row) => row.event_id),
      retries: {
        outOfSequence: order?.out_of_sequence ?? 0,
        overlapping: order?.overlapping ?? 0,
        early: order?.early ?? 0,
        retries: order?.retries ?? 0,
        latenessP50Seconds: order?.p50 ?? undefined,
        latenessMaxSeconds: order?.max ?? undefined
      }
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
