import type { Queryable } from './queryable.js'

/** Delivery workers LISTEN here; a notification means new deliveries may be due. */
export const DELIVERIES_CHANNEL = 'triggers_deliveries'

/** Wakes every delivery worker (sent by the API after committing new deliveries). */
export async function notifyDeliveriesQueued (db: Queryable): Promise<void> {
  await db.query({ name: 'notify-deliveries-queued', text: 'SELECT pg_notify($1, \'\')', values: [DELIVERIES_CHANNEL] })
}

/** A claimed delivery with everything needed to send it. */
export interface ClaimedDelivery {
  id: string
  event_id: string
  webhook_id: string
  attempts: number
  type: string
  payload: Record<string, unknown>
  url: string
  secret: string
  previous_secret: string | null
  previous_secret_until: Date | null
}

export interface AttemptRecord {
  deliveryId: string
  webhookId: string
  eventId: string
  attempt: number
  succeeded: boolean
  responseStatus: number | null
  error: string | null
  durationMs: number
  /** When to try again; null when this attempt ends the delivery (success or no attempts left). */
  nextAttemptAt: Date | null
  disableAfterFailures: number
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

/**
 * Claims due deliveries of enabled endpoints for `claimSeconds`. SKIP LOCKED keeps concurrent workers on
 * disjoint rows; the claim lapses by itself if this worker dies, returning the rows to the queue.
 */
export async function claimDeliveries (db: Queryable, limit: number, claimSeconds: number, skipWebhookIds: string[]): Promise<ClaimedDelivery[]> {
  const { rows } = await db.query<ClaimedDelivery>({
    name: 'claim-deliveries',
    text: `WITH due AS (
             SELECT d.id FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.status = 'pending' AND d.next_attempt_at <= now()
               AND (d.claimed_until IS NULL OR d.claimed_until < now())
               AND w.enabled AND NOT (d.webhook_id = ANY($3::uuid[]))
             ORDER BY d.next_attempt_at
             LIMIT $1
             FOR UPDATE OF d SKIP LOCKED
           )
           UPDATE deliveries d SET claimed_until = now() + make_interval(secs => $2)
           FROM due, events e, webhooks w
           WHERE d.id = due.id AND e.id = d.event_id AND w.id = d.webhook_id
           RETURNING d.id, d.event_id, d.webhook_id, d.attempts, e.type, e.payload, w.url, w.secret, w.previous_secret, w.previous_secret_until`,
    values: [limit, claimSeconds, skipWebhookIds]
  })
  return rows
}

/** Gives claimed deliveries back without an attempt (shutdown, or more than an endpoint may take at once). */
export async function releaseClaims (db: Queryable, ids: string[]): Promise<void> {
  if (ids.length === 0) return
  await db.query('UPDATE deliveries SET claimed_until = NULL WHERE id = ANY($1::uuid[]) AND status = \'pending\'', [ids])
}

/**
 * Records one attempt and its consequences; run inside a transaction. The event row is locked first so that
 * deliveries of one event finishing at once agree on the event's delivery_status.
 */
export async function recordAttempt (db: Queryable, record: AttemptRecord): Promise<void> {
  const finished = record.succeeded || record.nextAttemptAt === null
  const deliveryStatus = record.succeeded ? 'delivered' : finished ? 'failed' : 'pending'
  await db.query('SELECT 1 FROM events WHERE id = $1 FOR UPDATE', [record.eventId])
  const updated = await db.query(
    `UPDATE deliveries SET attempts = $2, status = $3, next_attempt_at = coalesce($4, next_attempt_at), claimed_until = NULL
     WHERE id = $1 AND status = 'pending'`,
    [record.deliveryId, record.attempt, deliveryStatus, record.nextAttemptAt])
  // Deleted with its webhook meanwhile: nothing left to record.
  if (updated.rowCount === 0) return
  await db.query(
    `INSERT INTO delivery_attempts (delivery_id, webhook_id, event_id, attempt, status, response_status, error, duration_ms, next_attempt_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [record.deliveryId, record.webhookId, record.eventId, record.attempt, record.succeeded ? 'succeeded' : 'failed',
      record.responseStatus, record.error, record.durationMs, record.nextAttemptAt])
  if (!finished) return
  await db.query(
    `UPDATE webhooks SET
       consecutive_failures = CASE WHEN $2 THEN 0 ELSE consecutive_failures + 1 END,
       enabled = enabled AND ($2 OR $3 = 0 OR consecutive_failures + 1 < $3),
       disabled_reason = CASE WHEN enabled AND NOT $2 AND $3 > 0 AND consecutive_failures + 1 >= $3
                              THEN format('disabled after %s consecutive failed deliveries', $3) ELSE disabled_reason END
     -- A success with no failure streak changes nothing: skip it, so busy endpoints' rows are not a lock hot spot.
     WHERE id = $1 AND (NOT $2 OR consecutive_failures > 0)`,
    [record.webhookId, record.succeeded, record.disableAfterFailures])
  // Only each endpoint's latest delivery counts, so a successful redelivery supersedes an exhausted one.
  // The push state only: the inbox state (status) is the consumers' and never changes here.
  await db.query(
    `UPDATE events SET delivery_status = (
       SELECT CASE WHEN bool_or(status = 'failed') THEN 'failed' WHEN bool_or(status = 'pending') THEN 'pending' ELSE 'delivered' END
       FROM (SELECT DISTINCT ON (webhook_id) status FROM deliveries WHERE event_id = $1 ORDER BY webhook_id, created_at DESC) AS latest)
     WHERE id = $1`,
    [record.eventId])
}

/** Queues the event again to its matching enabled webhooks (or just `webhookId`); returns how many. */
export async function redeliverEvent (db: Queryable, organizationId: string, eventId: string, webhookId: string | null): Promise<number> {
  const { rows } = await db.query<{ queued: number }>(
    `WITH queued AS (
       INSERT INTO deliveries (event_id, webhook_id)
       SELECT e.id, w.id FROM events e
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
