import type { Pool } from 'pg'
import type { AttemptStatus } from '../schemas/webhooks.js'
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
  status: AttemptStatus
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

/** An event by its full key: its id and its day partition's key (PostgreSQL's text, as claimed). */
export interface EventKey {
  id: string
  created_at: string
}

/**
 * A deliveries row's status: where one event's delivery to one endpoint stands. An event's delivery_status
 * (schemas/events.ts) sums up those of its rows.
 */
export type DeliveryRowStatus = 'pending' | 'delivered' | 'failed'

/** An outcome its delivery took (it was still pending), with that delivery's endpoint, event and new status. */
export interface RecordedAttempt extends AttemptOutcome {
  webhook_id: string
  status: DeliveryRowStatus
}

/**
 * Records a batch of finished attempts; run it inside a transaction, which makes its statements one change.
 * Each statement finds its rows by their keys, partition key included:
 * 1. planKeyLookups: nested loops, no JIT, for the rest of the transaction;
 * 2. lockEvents: locks the events whose deliveries finished (no retry left or needed);
 * 3. updateDeliveries: moves the deliveries still pending to their outcome;
 * 4. logAttempts: logs an attempt for each delivery updated;
 * 5. updateFailureStreaks: moves the endpoints' failure streaks, disabling endpoints past `disableAfterFailures`;
 * 6. settleEventStates: sets the finished events' delivery_status from each endpoint's latest delivery.
 */
export async function recordAttempts (db: Queryable, outcomes: AttemptOutcome[], disableAfterFailures: number): Promise<void> {
  const events = finishedEvents(outcomes)
  await planKeyLookups(db)
  await lockEvents(db, events)
  const recorded = await updateDeliveries(db, outcomes)
  await logAttempts(db, recorded)
  await updateFailureStreaks(db, recorded, disableAfterFailures)
  await settleEventStates(db, events)
}

/** The events of outcomes that end their delivery (no retry), once each: their delivery_status may change. */
export function finishedEvents (outcomes: AttemptOutcome[]): EventKey[] {
  const events = new Map(outcomes.filter((outcome) => outcome.next_attempt_at === null).map((outcome) => [outcome.event_id, outcome.event_created_at]))
  return [...events].map(([id, createdAt]) => ({ id, created_at: createdAt }))
}

/**
 * Turns hash joins, merge joins and JIT off until the transaction ends. The recording statements find every row
 * by its key, a batch at a time, so nested loops are the right plan whatever the statistics; a day partition
 * that has none yet (a new day, a burst drained before autovacuum analyzes it) would otherwise be joined by
 * reading all of its pending rows. Forced loops look costly to the planner, enough to JIT-compile them, which
 * takes longer than the statement itself.
 */
export async function planKeyLookups (db: Queryable): Promise<void> {
  await db.query({ name: 'record-attempts-plan', text: 'SELECT set_config(\'enable_hashjoin\', \'off\', true), set_config(\'enable_mergejoin\', \'off\', true), set_config(\'jit\', \'off\', true)' })
}

/**
 * Locks the events' rows (FOR NO KEY UPDATE) until the transaction ends, in id order, so that recordings
 * finishing deliveries of one event at once take turns, and the later one sees the earlier one's deliveries
 * when it settles the event's state. Events still being retried are not locked.
 */
export async function lockEvents (db: Queryable, events: EventKey[]): Promise<void> {
  if (events.length === 0) return
  await db.query({
    name: 'lock-finished-events',
    text: `SELECT 1 FROM events e JOIN unnest($1::uuid[], $2::timestamptz[]) AS f (id, created_at) ON e.id = f.id AND e.created_at = f.created_at
           ORDER BY e.id FOR NO KEY UPDATE OF e`,
    values: [events.map((event) => event.id), events.map((event) => event.created_at)]
  })
}

/**
 * Moves each outcome's delivery, if still pending, to its outcome: its attempt count, its claim given up, and
 * a retry time or the end (delivered or failed). Deliveries already finished, or deleted with their webhook,
 * are left alone. Returns the outcomes taken, with their deliveries' endpoints and new statuses.
 */
export async function updateDeliveries (db: Queryable, outcomes: AttemptOutcome[]): Promise<RecordedAttempt[]> {
  if (outcomes.length === 0) return []
  const { rows } = await db.query<{ n: number, event_id: string, webhook_id: string, status: DeliveryRowStatus }>({
    name: 'update-deliveries',
    text: `UPDATE deliveries d SET attempts = o.attempt, claimed_until = NULL,
             status = CASE WHEN o.succeeded THEN 'delivered' WHEN o.next_attempt_at IS NULL THEN 'failed' ELSE 'pending' END,
             next_attempt_at = coalesce(o.next_attempt_at, d.next_attempt_at)
           FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (delivery_id uuid, event_created_at timestamptz, attempt int, succeeded boolean,
                 next_attempt_at timestamptz)) WITH ORDINALITY AS o (delivery_id, event_created_at, attempt, succeeded, next_attempt_at, n)
           -- "Not delivered or failed" is "pending" (the status CHECK), put so the planner does not take the partial
           -- pending indexes for it.
           WHERE d.id = o.delivery_id AND d.event_created_at = o.event_created_at AND d.status NOT IN ('delivered', 'failed')
           -- Each row names its outcome by its place in the batch, so the outcome's fields need not come back.
           RETURNING o.n::int AS n, d.event_id, d.webhook_id, d.status`,
    values: [JSON.stringify(outcomes.map(({ delivery_id, event_created_at, attempt, succeeded, next_attempt_at }) =>
      ({ delivery_id, event_created_at, attempt, succeeded, next_attempt_at })))]
  })
  return rows.flatMap(({ n, event_id, webhook_id, status }) => {
    const outcome = outcomes[n - 1]
    return outcome === undefined ? [] : [{ ...outcome, event_id, webhook_id, status }]
  })
}

/** Logs the attempts in delivery_attempts, except those of events whose attempt log has expired (its partition may be gone). */
export async function logAttempts (db: Queryable, recorded: RecordedAttempt[]): Promise<void> {
  if (recorded.length === 0) return
  await db.query({
    name: 'log-attempts',
    text: `INSERT INTO delivery_attempts (delivery_id, webhook_id, event_id, event_created_at, attempt, status, response_status, error, duration_ms, attempted_at, next_attempt_at)
           SELECT a.delivery_id, a.webhook_id, a.event_id, a.event_created_at, a.attempt, CASE WHEN a.succeeded THEN 'succeeded' ELSE 'failed' END,
                  a.response_status, a.error, a.duration_ms, a.attempted_at, a.next_attempt_at
           FROM jsonb_to_recordset($1::jsonb) AS a (delivery_id uuid, webhook_id uuid, event_id uuid, event_created_at timestamptz, attempt int, succeeded boolean,
             response_status int, error text, duration_ms int, attempted_at timestamptz, next_attempt_at timestamptz)
           WHERE a.event_created_at >= (SELECT attempts_from FROM retention_horizon)`,
    values: [JSON.stringify(recorded)]
  })
}

/**
 * Moves the failure streaks of the endpoints whose deliveries finished (retries do not count): a success
 * restarts the streak, and each delivery failed after an endpoint's last success in the batch adds one. An
 * endpoint reaching `disableAfterFailures` (0 = never) is disabled, with the reason.
 */
export async function updateFailureStreaks (db: Queryable, recorded: RecordedAttempt[], disableAfterFailures: number): Promise<void> {
  const finished = recorded.filter((attempt) => attempt.status !== 'pending')
  if (finished.length === 0) return
  await db.query({
    name: 'update-failure-streaks',
    text: `WITH finished AS (
             SELECT f.webhook_id, f.succeeded, f.attempted_at,
                    max(f.attempted_at) FILTER (WHERE f.succeeded) OVER (PARTITION BY f.webhook_id) AS last_success
             FROM unnest($1::uuid[], $2::boolean[], $3::timestamptz[]) AS f (webhook_id, succeeded, attempted_at)
           ), streaks AS (
             -- Per endpoint: did a delivery succeed (the streak restarts), and how many failed after the last success.
             SELECT webhook_id, bool_or(succeeded) AS reset,
                    count(*) FILTER (WHERE NOT succeeded AND (last_success IS NULL OR attempted_at > last_success))::int AS failures
             FROM finished GROUP BY webhook_id
           ), streaked AS (
             SELECT w.id, CASE WHEN s.reset THEN s.failures ELSE w.consecutive_failures + s.failures END AS streak
             FROM webhooks w JOIN streaks s ON s.webhook_id = w.id
             -- Successes with no failure streak change nothing: skip them, so busy endpoints' rows are not a lock hot spot.
             WHERE s.failures > 0 OR w.consecutive_failures > 0
           )
           UPDATE webhooks w SET consecutive_failures = s.streak,
             enabled = w.enabled AND NOT ($4::int > 0 AND s.streak >= $4::int),
             disabled_reason = CASE WHEN w.enabled AND $4::int > 0 AND s.streak >= $4::int
                                    THEN format('disabled after %s consecutive failed deliveries', $4::int) ELSE w.disabled_reason END
           FROM streaked s WHERE w.id = s.id`,
    values: [finished.map((attempt) => attempt.webhook_id), finished.map((attempt) => attempt.succeeded), finished.map((attempt) => attempt.attempted_at), disableAfterFailures]
  })
}

/**
 * Sets each event's delivery_status from its endpoints' latest deliveries: failed if one of them failed, else
 * pending if one is pending, else delivered. Events already in that state are not written.
 */
export async function settleEventStates (db: Queryable, events: EventKey[]): Promise<void> {
  if (events.length === 0) return
  await db.query({
    name: 'settle-event-states',
    text: `WITH latest AS (
             SELECT DISTINCT ON (d.event_id, d.webhook_id) d.event_id, d.event_created_at, d.status
             FROM unnest($1::uuid[], $2::timestamptz[]) AS f (id, created_at)
             JOIN deliveries d ON d.event_id = f.id AND d.event_created_at = f.created_at
             ORDER BY d.event_id, d.webhook_id, d.created_at DESC
           ), event_states AS (
             SELECT event_id, event_created_at,
                    CASE WHEN bool_or(status = 'failed') THEN 'failed' WHEN bool_or(status = 'pending') THEN 'pending' ELSE 'delivered' END AS state
             FROM latest GROUP BY event_id, event_created_at
           )
           UPDATE events e SET delivery_status = s.state FROM event_states s
           WHERE e.id = s.event_id AND e.created_at = s.event_created_at AND e.delivery_status <> s.state`,
    values: [events.map((event) => event.id), events.map((event) => event.created_at)]
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
