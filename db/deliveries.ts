import type { Pool } from 'pg'
import type { Queryable } from './queryable.js'
import { inTransaction } from './transaction.js'

/** A claimed delivery with everything needed to send it. */
export interface ClaimedDelivery {
  id: string
  event_id: string
  /** The event's creation time, the day partitions' key, as PostgreSQL's text (a Date would drop its microseconds). */
  event_created_at: string
  webhook_id: string
  /** The webhook's organization, whose share of the worker's slots this delivery takes. */
  organization_id: string
  attempts: number
  /** When the delivery was queued (the event's commit, or a redelivery request). */
  queued_at: Date
  type: string
  /** The event's payload as JSON text: it goes into the request body as it is. */
  payload_json: string
  url: string
  secret: string
  previous_secret: string | null
  previous_secret_until: Date | null
}

/** One finished attempt, as the worker hands it over for recording. */
export interface AttemptOutcome {
  delivery_id: string
  event_id: string
  /** As claimed: with the ids, it finds the rows in their day partitions. */
  event_created_at: string
  attempt: number
  succeeded: boolean
  response_status: number | null
  error: string | null
  duration_ms: number
  attempted_at: Date
  /** When to try again; null when this attempt ends the delivery (success or no attempts left). */
  next_attempt_at: Date | null
}

export interface AttemptRow {
  event_id: string
  attempt: number
  status: 'succeeded' | 'failed'
  response_status: number | null
  error: string | null
  duration_ms: number
  attempted_at: Date
  next_attempt_at: Date | null
  id: string
}

export interface ClaimRequest {
  /** Rows to claim at most. */
  limit: number
  claimSeconds: number
  /** Per-endpoint room for this worker where it differs from `defaultCapacity` (0 = claim nothing for it). */
  capacities: Array<[webhookId: string, capacity: number]>
  defaultCapacity: number
  /** Per-organization room for this worker where it differs from `defaultOrganizationCapacity` (0 = claim nothing for it). */
  organizationCapacities?: Array<[organizationId: string, capacity: number]>
  /** Rows one organization may be given at most; `limit` when absent (no bound per organization). */
  defaultOrganizationCapacity?: number
}

/**
 * Claims due deliveries of enabled endpoints for `claimSeconds`, at most each endpoint's capacity and each
 * organization's, taking endpoints in turn (every endpoint's oldest due delivery before anyone's second), so
 * one endpoint's backlog cannot crowd out another's new deliveries, and an organization with many endpoints
 * cannot take every row of the claim. SKIP LOCKED keeps concurrent workers on disjoint rows; the claim lapses
 * by itself if this worker dies, returning the rows to the queue. Payloads come with the claim, so memory is
 * bounded by `limit`.
 */
export async function claimDeliveries (db: Queryable, request: ClaimRequest): Promise<ClaimedDelivery[]> {
  const organizationCapacities = request.organizationCapacities ?? []
  const { rows } = await db.query<ClaimedDelivery>({
    // Renamed with its new parameters, so a pooled server connection that prepared the old text is not reused for it.
    name: 'claim-deliveries-per-organization',
    text: `WITH capacity AS (
             SELECT * FROM unnest($3::uuid[], $4::int[]) AS c (webhook_id, room)
           ), organization_capacity AS (
             SELECT * FROM unnest($6::uuid[], $7::int[]) AS o (organization_id, room)
           ), due AS (
             SELECT d.id, d.event_created_at, w.organization_id, d.next_attempt_at,
                    row_number() OVER (PARTITION BY d.webhook_id ORDER BY d.next_attempt_at) AS turn
             FROM webhooks w
             CROSS JOIN LATERAL (
               SELECT d.id, d.event_created_at, d.webhook_id, d.next_attempt_at FROM deliveries d
               WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= now()
                 AND (d.claimed_until IS NULL OR d.claimed_until < now())
               ORDER BY d.next_attempt_at
               LIMIT coalesce((SELECT room FROM capacity WHERE capacity.webhook_id = w.id), $5)
               FOR UPDATE OF d SKIP LOCKED
             ) d
             -- An organization without room is not visited at all (nor are its rows locked).
             WHERE w.enabled AND coalesce((SELECT room FROM organization_capacity o WHERE o.organization_id = w.organization_id), $8) > 0
           ), ranked AS (
             -- Within each organization, the same order as across them: every endpoint's first before anyone's second.
             SELECT id, event_created_at, organization_id, turn, next_attempt_at,
                    row_number() OVER (PARTITION BY organization_id ORDER BY turn, next_attempt_at) AS organization_turn
             FROM due
           ), chosen AS (
             SELECT r.id, r.event_created_at FROM ranked r
             WHERE r.organization_turn <= coalesce((SELECT room FROM organization_capacity o WHERE o.organization_id = r.organization_id), $8)
             ORDER BY r.turn, r.next_attempt_at LIMIT $1
           ), claimed AS (
             UPDATE deliveries d SET claimed_until = now() + make_interval(secs => $2)
             FROM chosen WHERE d.id = chosen.id AND d.event_created_at = chosen.event_created_at
             RETURNING d.id, d.event_id, d.event_created_at, d.webhook_id, d.attempts, d.created_at
           )
           -- Each event looked up by its full key (id and day partition), row by row: a join left to the planner
           -- scanned whole day partitions while their statistics were missing (partitioned parents are never
           -- analyzed by autovacuum).
           SELECT c.id, c.event_id, c.event_created_at::text AS event_created_at, c.webhook_id, w.organization_id, c.attempts, c.created_at AS queued_at,
                  e.type, e.payload::text AS payload_json, w.url, w.secret, w.previous_secret, w.previous_secret_until
           FROM claimed c
           CROSS JOIN LATERAL (SELECT e.type, e.payload FROM events e WHERE e.id = c.event_id AND e.created_at = c.event_created_at) e
           JOIN webhooks w ON w.id = c.webhook_id`,
    values: [
      request.limit, request.claimSeconds, request.capacities.map(([id]) => id), request.capacities.map(([, room]) => room), request.defaultCapacity,
      organizationCapacities.map(([id]) => id), organizationCapacities.map(([, room]) => room), request.defaultOrganizationCapacity ?? request.limit
    ]
  })
  return rows
}

/** Gives claimed deliveries back without an attempt (shutdown). */
export async function releaseClaims (db: Queryable, ids: string[]): Promise<void> {
  if (ids.length === 0) return
  await db.query('UPDATE deliveries SET claimed_until = NULL WHERE id = ANY($1::uuid[]) AND status = \'pending\'', [ids])
}

/**
 * Records a batch of finished attempts in one statement; run inside a transaction. It updates the deliveries
 * (retry time, or delivered / failed), logs the attempts, moves endpoints' failure streaks (disabling an
 * endpoint after `disableAfterFailures` consecutive failed deliveries) and sets the delivery_status of events
 * whose deliveries finished, from each endpoint's latest delivery. Those events' rows are locked first, in id
 * order, so that workers finishing deliveries of one event at once agree on its state (the second waits for
 * the first and then sees its result); events still being retried are not locked.
 */
export async function recordAttempts (db: Queryable, outcomes: AttemptOutcome[], disableAfterFailures: number): Promise<void> {
  // Every row below is found by its primary key, a batch at a time, so nested loops over the keys are always the
  // right plan. The planner cannot tell while a day partition has no column statistics yet (a new day, a burst
  // drained within autovacuum's minute): it then joins by hashing or by reading every pending row of the day
  // once per batch (measured: 20 000 pending rows read to record 100 attempts, a fifth of the CPU of a drain).
  // Forced, those loops look expensive enough to the planner for JIT compiling, which took 110 ms per batch on a
  // server built with LLVM: off as well.
  await db.query({ name: 'record-attempts-plan', text: 'SELECT set_config(\'enable_hashjoin\', \'off\', true), set_config(\'enable_mergejoin\', \'off\', true), set_config(\'jit\', \'off\', true)' })
  const finishedEvents = new Map(outcomes.filter((outcome) => outcome.next_attempt_at === null).map((outcome) => [outcome.event_id, outcome.event_created_at]))
  if (finishedEvents.size > 0) {
    await db.query({
      name: 'lock-finished-events',
      text: `SELECT 1 FROM events e JOIN unnest($1::uuid[], $2::timestamptz[]) AS f (id, created_at) ON e.id = f.id AND e.created_at = f.created_at
             ORDER BY e.id FOR NO KEY UPDATE OF e`,
      values: [[...finishedEvents.keys()], [...finishedEvents.values()]]
    })
  }
  await db.query({
    name: 'record-attempts',
    text: `WITH outcome AS (
             SELECT * FROM jsonb_to_recordset($1::jsonb) AS o (delivery_id uuid, event_created_at timestamptz, attempt int, succeeded boolean, response_status int,
               error text, duration_ms int, attempted_at timestamptz, next_attempt_at timestamptz)
           ), updated AS (
             UPDATE deliveries d SET attempts = o.attempt, claimed_until = NULL,
               status = CASE WHEN o.succeeded THEN 'delivered' WHEN o.next_attempt_at IS NULL THEN 'failed' ELSE 'pending' END,
               next_attempt_at = coalesce(o.next_attempt_at, d.next_attempt_at)
             FROM outcome o
             -- A delivery deleted with its webhook meanwhile has nothing left to record. "Not delivered or failed" is
             -- "pending" (the status CHECK), put so the planner does not take the partial pending indexes for it.
             WHERE d.id = o.delivery_id AND d.event_created_at = o.event_created_at AND d.status NOT IN ('delivered', 'failed')
             -- The outcome's fields come back with the row, so nothing below joins the batch again.
             RETURNING d.id, d.event_id, d.event_created_at, d.webhook_id, d.created_at, d.status, o.attempt, o.succeeded, o.response_status, o.error,
                       o.duration_ms, o.attempted_at, o.next_attempt_at
           ), logged AS (
             INSERT INTO delivery_attempts (delivery_id, webhook_id, event_id, event_created_at, attempt, status, response_status, error, duration_ms, attempted_at, next_attempt_at)
             SELECT u.id, u.webhook_id, u.event_id, u.event_created_at, u.attempt, CASE WHEN u.succeeded THEN 'succeeded' ELSE 'failed' END,
                    u.response_status, u.error, u.duration_ms, u.attempted_at, u.next_attempt_at
             FROM updated u
             -- Attempts of events whose attempt log has expired (DELIVERY_ATTEMPT_RETENTION_DAYS) have no partition left.
             WHERE u.event_created_at >= (SELECT attempts_from FROM retention_horizon)
           ), finished AS (
             SELECT u.webhook_id, u.event_id, u.event_created_at, u.succeeded, u.attempted_at,
                    max(u.attempted_at) FILTER (WHERE u.succeeded) OVER (PARTITION BY u.webhook_id) AS last_success
             FROM updated u
             WHERE u.status <> 'pending'
           ), streaks AS (
             -- Per endpoint: did a delivery succeed (the streak restarts), and how many failed after the last success.
             SELECT webhook_id, bool_or(succeeded) AS reset,
                    count(*) FILTER (WHERE NOT succeeded AND (last_success IS NULL OR attempted_at > last_success))::int AS failures
             FROM finished GROUP BY webhook_id
           ), streaked AS (
             SELECT w.id, w.enabled, CASE WHEN s.reset THEN s.failures ELSE w.consecutive_failures + s.failures END AS streak
             FROM webhooks w JOIN streaks s ON s.webhook_id = w.id
             -- Successes with no failure streak change nothing: skip them, so busy endpoints' rows are not a lock hot spot.
             WHERE s.failures > 0 OR w.consecutive_failures > 0
           ), webhooks_updated AS (
             UPDATE webhooks w SET consecutive_failures = s.streak,
               enabled = w.enabled AND NOT ($2 > 0 AND s.streak >= $2),
               disabled_reason = CASE WHEN w.enabled AND $2 > 0 AND s.streak >= $2
                                      THEN format('disabled after %s consecutive failed deliveries', $2) ELSE w.disabled_reason END
             FROM streaked s WHERE w.id = s.id
           ), latest AS (
             -- Each endpoint's latest delivery of the finished events ($3, $4). This statement's own updates are not
             -- visible to its reads: the rows it updated come from the updated CTE, the others from the table.
             SELECT DISTINCT ON (event_id, webhook_id) event_id, event_created_at, state
             FROM (SELECT u.event_id, u.event_created_at, u.webhook_id, u.created_at, u.status AS state FROM updated u
                   WHERE u.event_id = ANY($3::uuid[])
                   UNION ALL
                   SELECT d.event_id, d.event_created_at, d.webhook_id, d.created_at, d.status
                   FROM unnest($3::uuid[], $4::timestamptz[]) AS f (id, created_at)
                   JOIN deliveries d ON d.event_id = f.id AND d.event_created_at = f.created_at
                   WHERE d.id NOT IN (SELECT id FROM updated)) AS every_delivery
             ORDER BY event_id, webhook_id, created_at DESC
           ), event_states AS (
             SELECT event_id, event_created_at,
                    CASE WHEN bool_or(state = 'failed') THEN 'failed' WHEN bool_or(state = 'pending') THEN 'pending' ELSE 'delivered' END AS state
             FROM latest GROUP BY event_id, event_created_at
           )
           UPDATE events e SET delivery_status = s.state FROM event_states s
           WHERE e.id = s.event_id AND e.created_at = s.event_created_at AND e.delivery_status <> s.state`,
    values: [JSON.stringify(outcomes), disableAfterFailures, [...finishedEvents.keys()], [...finishedEvents.values()]]
  })
}

/** Queues the event again to its matching enabled webhooks (or just `webhookId`); returns how many. */
export async function redeliverEvent (db: Queryable, organizationId: string, eventId: string, webhookId: string | null): Promise<number> {
  const { rows } = await db.query<{ queued: number }>(
    `WITH queued AS (
       INSERT INTO deliveries (event_id, event_created_at, webhook_id)
       SELECT e.id, e.created_at, w.id FROM events e
       JOIN webhooks w ON w.organization_id = e.organization_id AND w.enabled
       WHERE e.organization_id = $1 AND e.id = $2
         AND ($3::uuid IS NULL AND webhook_matches(w.event_types, e.type) OR w.id = $3)
       RETURNING event_id
     ), reopened AS (
       UPDATE events SET delivery_status = 'pending'
       WHERE id = $2 AND EXISTS (SELECT 1 FROM queued)
     )
     SELECT count(*)::int AS queued FROM queued`,
    [organizationId, eventId, webhookId])
  return rows[0]?.queued ?? 0
}

/** Attempts to one webhook, newest first, after the cursor (an attempt id). */
export async function listAttempts (db: Queryable, webhookId: string, filter: { status: string | null, beforeId: string | null, limit: number }): Promise<AttemptRow[]> {
  const { rows } = await db.query<AttemptRow>(
    `SELECT id, event_id, attempt, status, response_status, error, duration_ms, attempted_at, next_attempt_at
     FROM delivery_attempts
     WHERE webhook_id = $1 AND ($2::text IS NULL OR status = $2) AND ($3::bigint IS NULL OR id < $3)
     ORDER BY id DESC LIMIT $4`,
    [webhookId, filter.status, filter.beforeId, filter.limit + 1])
  return rows
}

export interface DeliveryQueueState {
  /** Pending deliveries of enabled endpoints, counted exactly up to the count limit. */
  pending: number
  /**
   * True past the limit: `pending` is then PostgreSQL's estimate of the pending index's entries (disabled
   * endpoints' included), as the planner makes it, and never less than the limit.
   */
  estimated: boolean
  /** Age in seconds of the oldest pending delivery of an enabled endpoint that is due; 0 when none is due. */
  oldestDueSeconds: number
}

// Longest the queue read may take; a scrape should fail fast rather than hang on a busy database.
const QUEUE_STATE_TIMEOUT_MS = 5000

/**
 * The delivery backlog, cheaply at any size (for metrics). The count reads at most `countLimit` entries of the
 * pending index (migration 008's deliveries_due_per_webhook): bitmap scans are turned off for it, since the
 * planner picks one when statistics are stale (a fresh backlog) and a bitmap scan reads the whole index before
 * any LIMIT applies. Past the limit the index's entries are estimated the way the planner does (entries per
 * page at the last VACUUM/ANALYZE times its pages now), summed over its partitions (one per day, migration 010). The oldest due delivery takes one descent of that
 * index per enabled endpoint (it leads with the endpoint, so a global min would read all of it).
 */
export async function deliveryQueueState (pool: Pool, countLimit: number): Promise<DeliveryQueueState> {
  const row = await inTransaction(pool, async (client) => {
    await client.query({
      name: 'delivery-queue-state-settings',
      text: 'SELECT set_config(\'enable_bitmapscan\', \'off\', true), set_config(\'statement_timeout\', $1, true)',
      values: [String(QUEUE_STATE_TIMEOUT_MS)]
    })
    const { rows } = await client.query<{ counted: number, index_rows: number | null, oldest_due_seconds: number | null }>({
      name: 'delivery-queue-state',
      text: `SELECT
               (SELECT count(*)::int FROM (
                  SELECT 1 FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id AND w.enabled
                  WHERE d.status = 'pending' LIMIT $1) AS bounded) AS counted,
               (SELECT sum(c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::float8))
                FROM pg_partition_tree(to_regclass('deliveries_due_per_webhook')) AS part JOIN pg_class c ON c.oid = part.relid
                WHERE part.isleaf AND c.relpages > 0 AND c.reltuples >= 0) AS index_rows,
               (SELECT extract(epoch FROM now() - min(due.next_attempt_at))::float8
                FROM webhooks w CROSS JOIN LATERAL (
                  SELECT d.next_attempt_at FROM deliveries d
                  WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= now()
                  ORDER BY d.next_attempt_at LIMIT 1) AS due
                WHERE w.enabled) AS oldest_due_seconds`,
      values: [countLimit]
    })
    return rows[0]
  })
  const counted = row?.counted ?? 0
  const estimated = counted >= countLimit
  return {
    pending: estimated ? Math.max(countLimit, Math.round(row?.index_rows ?? 0)) : counted,
    estimated,
    oldestDueSeconds: Math.max(0, row?.oldest_due_seconds ?? 0)
  }
}
