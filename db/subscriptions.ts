import type { LeasedEventRow, InboxPosition } from './events.js'
import type { Queryable } from './queryable.js'

/** The settings a client chooses for a subscription. */
export interface SubscriptionFields {
  name: string | null
  event_types: string[]
  max_in_flight: number
  max_attempts: number
  /** Events handed out per second at most (a token bucket of one second's worth); null: no cap. */
  rate_limit_per_second: number | null
  /** Seconds before an event is handed out again after its n-th lease ended unacked (the last repeats). */
  retry_schedule: number[]
}

export interface SubscriptionRow extends SubscriptionFields {
  id: string
  organization_id: string
  kind: 'pull'
  paused: boolean
  floor_txid: string
  floor_seq: string
  frontier_txid: string
  frontier_seq: string
  position_expired_at: Date | null
  created_at: Date
  updated_at: Date
}

/** Where a subscription starts, or is moved to by a seek. */
export type StartPosition =
  | { kind: 'now' }
  | { kind: 'beginning' }
  | { kind: 'time', at: Date }
  | { kind: 'cursor', position: InboxPosition }

const COLUMNS = `id, organization_id, kind, name, event_types, max_in_flight, max_attempts, rate_limit_per_second, retry_schedule, paused,
                 floor_txid, floor_seq, frontier_txid, frontier_seq, position_expired_at, created_at, updated_at`

/**
 * A start position as a place in cursor order: the subscription gets every matching event after it. "now" is the
 * oldest transaction still running (its events, and those of every later one, are after it), so an event being
 * written while the subscription is made is never missed; "beginning" is before every event; a time is just
 * before the first event (in cursor order) created at or after it; a cursor is the place it names.
 */
const START_POSITION = `
  SELECT CASE $2::text WHEN 'beginning' THEN '0'::xid8 WHEN 'cursor' THEN $4::xid8 ELSE coalesce(first.txid, running.xmin) END AS txid,
         CASE $2::text WHEN 'beginning' THEN 0 WHEN 'cursor' THEN $5::bigint ELSE coalesce(first.seq - 1, 0) END AS seq
  FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) running
  LEFT JOIN LATERAL (
    SELECT txid, seq FROM events WHERE $2::text = 'time' AND organization_id = $1 AND created_at >= $3::timestamptz
    ORDER BY txid, seq LIMIT 1
  ) first ON true`

function startValues (organizationId: string, start: StartPosition): unknown[] {
  return [
    organizationId,
    start.kind,
    start.kind === 'time' ? start.at : null,
    start.kind === 'cursor' ? start.position.txid : null,
    start.kind === 'cursor' ? start.position.seq : null
  ]
}

/**
 * Inserts the subscription at its start position unless the organization already has `max`; undefined then. Run
 * inside a transaction: the organization's row lock (FOR NO KEY UPDATE, which event inserts do not wait for) makes
 * concurrent creations count each other.
 */
export async function insertSubscriptionWithinLimit (client: Queryable, organizationId: string, fields: SubscriptionFields, start: StartPosition, max: number): Promise<SubscriptionRow | undefined> {
  await client.query('SELECT 1 FROM organizations WHERE id = $1 FOR NO KEY UPDATE', [organizationId])
  const { rows } = await client.query<SubscriptionRow>(
    `WITH start AS (${START_POSITION})
     INSERT INTO subscriptions (organization_id, kind, name, event_types, max_in_flight, max_attempts, rate_limit_per_second, retry_schedule,
                                floor_txid, floor_seq, frontier_txid, frontier_seq)
     SELECT $1, 'pull', $6, $7, $8, $9, $11, $12, start.txid, start.seq, start.txid, start.seq FROM start
     WHERE (SELECT count(*) FROM subscriptions WHERE organization_id = $1) < $10
     RETURNING ${COLUMNS}`,
    [...startValues(organizationId, start), fields.name, fields.event_types, fields.max_in_flight, fields.max_attempts, max, fields.rate_limit_per_second, fields.retry_schedule])
  return rows[0]
}

export async function listSubscriptions (db: Queryable, organizationId: string): Promise<SubscriptionRow[]> {
  const { rows } = await db.query<SubscriptionRow>(`SELECT ${COLUMNS} FROM subscriptions WHERE organization_id = $1 ORDER BY created_at, id`, [organizationId])
  return rows
}

/** The subscription, locked for this transaction when `lock` says so (leasing and seeking move its positions). */
export async function findSubscription (db: Queryable, organizationId: string, id: string, lock: '' | 'FOR UPDATE' | 'FOR UPDATE SKIP LOCKED' = ''): Promise<SubscriptionRow | undefined> {
  const { rows } = await db.query<SubscriptionRow>(`SELECT ${COLUMNS} FROM subscriptions WHERE organization_id = $1 AND id = $2 ${lock}`, [organizationId, id])
  return rows[0]
}

export async function updateSubscription (db: Queryable, organizationId: string, id: string, changes: Partial<SubscriptionFields & { paused: boolean }>): Promise<SubscriptionRow | undefined> {
  const { rows } = await db.query<SubscriptionRow>(
    `UPDATE subscriptions SET
       name = CASE WHEN $3 THEN $4 ELSE name END,
       event_types = coalesce($5, event_types),
       max_in_flight = coalesce($6, max_in_flight),
       max_attempts = coalesce($7, max_attempts),
       paused = coalesce($8, paused),
       retry_schedule = coalesce($11, retry_schedule),
       rate_limit_per_second = CASE WHEN $9 THEN $10 ELSE rate_limit_per_second END,
       -- A cap set or changed starts with an empty bucket, as a new subscription's does.
       rate_tokens = CASE WHEN $9 THEN 0 ELSE rate_tokens END,
       rate_refilled_at = CASE WHEN $9 THEN clock_timestamp() ELSE rate_refilled_at END,
       updated_at = now()
     WHERE organization_id = $1 AND id = $2
     RETURNING ${COLUMNS}`,
    [organizationId, id, changes.name !== undefined, changes.name ?? null, changes.event_types ?? null,
      changes.max_in_flight ?? null, changes.max_attempts ?? null, changes.paused ?? null,
      changes.rate_limit_per_second !== undefined, changes.rate_limit_per_second ?? null, changes.retry_schedule ?? null])
  return rows[0]
}

/** Deletes the subscription and, by cascade, its pending set (rows no insert of events ever waits for). */
export async function deleteSubscription (db: Queryable, organizationId: string, id: string): Promise<boolean> {
  const { rowCount } = await db.query('DELETE FROM subscriptions WHERE organization_id = $1 AND id = $2', [organizationId, id])
  return rowCount === 1
}

/**
 * When a pending row (alias se) may be leased: never leased, or its last lease ended (ran out or was released, both
 * leaving leased_until at the end) and the wait the schedule (`schedule`, an SQL int[]) gives after that many
 * leases has passed.
 */
const availableNow = (schedule: string) =>
  `(se.leased_until IS NULL OR se.leased_until + make_interval(secs => coalesce((${schedule})[least(se.attempts, cardinality(${schedule}))], 0)) <= now())`

export interface PendingCounts {
  in_flight: number
  available: number
  retrying: number
  dead: number
}

/** The pending set's size by state, per subscription. */
export async function countPending (db: Queryable, subscriptionIds: string[]): Promise<Map<string, PendingCounts>> {
  const { rows } = await db.query<PendingCounts & { subscription_id: string }>(
    `SELECT se.subscription_id,
            count(*) FILTER (WHERE se.state = 'pending' AND se.leased_until > now())::int AS in_flight,
            count(*) FILTER (WHERE se.state = 'pending' AND ${availableNow('s.retry_schedule')})::int AS available,
            count(*) FILTER (WHERE se.state = 'pending' AND se.leased_until <= now() AND NOT ${availableNow('s.retry_schedule')})::int AS retrying,
            count(*) FILTER (WHERE se.state = 'dead')::int AS dead
     FROM subscription_events se JOIN subscriptions s ON s.id = se.subscription_id
     WHERE se.subscription_id = ANY($1::uuid[]) GROUP BY se.subscription_id`,
    [subscriptionIds])
  return new Map(rows.map(({ subscription_id: id, ...counts }) => [id, counts]))
}

/**
 * Where subscription $1's pending rows start (txid, seq): the ack floor, or below it the first row a redrive or a
 * replay made pending there (migration 015; a null bound compares as unknown, so the floor). Scans of the pending
 * set start at it.
 */
const LOW = `SELECT CASE WHEN below THEN s.below_floor_txid ELSE s.floor_txid END AS txid,
                    CASE WHEN below THEN s.below_floor_seq ELSE s.floor_seq END AS seq
             FROM subscriptions s, LATERAL (SELECT (s.below_floor_txid, s.below_floor_seq) < (s.floor_txid, s.floor_seq) AS below) b
             WHERE s.id = $1`

/**
 * An UPDATE that records rows made pending (the positions in `made`, a CTE or table with txid and seq) that lie at
 * or below subscription $1's floor, so that scans of its pending set start low enough to find them.
 */
export const recordPendingBelowFloor = (made: string) => `
  UPDATE subscriptions s SET (below_floor_txid, below_floor_seq) = (first.txid, first.seq)
  FROM (SELECT txid, seq FROM ${made} ORDER BY txid, seq LIMIT 1) first
  WHERE s.id = $1 AND (first.txid, first.seq) <= (s.floor_txid, s.floor_seq)
    AND (s.below_floor_txid IS NULL OR (first.txid, first.seq) < (s.below_floor_txid, s.below_floor_seq))`

// A pending row whose last allowed lease has ended (alias se, max_attempts $2): compaction dead-letters it.
const EXHAUSTED = 'coalesce(se.leased_until <= now() AND se.attempts >= $2, false)'

/**
 * One statement (its CTEs share a snapshot, so each says what the others do): dead-letters pending rows whose
 * last allowed lease expired; moves the ack floor up to just before the first row still pending and not being
 * dead-lettered (to the frontier when none is: a replay's rows beyond it are reached by the live read later, and
 * redriven dead letters below the floor are leased from the pending set); refills the rate bucket up to now (one
 * second's worth at most, at rate_limit_per_second); deletes acked rows the new floor has passed. `then` is the
 * statement's final SELECT, over `moved` (the subscription's new floor and tokens).
 */
const compactionStatement = (then: string) => `
  WITH low AS (${LOW}), dead AS (
    UPDATE subscription_events se SET state = 'dead', dead_at = now(), lease_id = NULL, leased_until = NULL
    FROM low
    WHERE se.subscription_id = $1 AND (se.txid, se.seq) >= (low.txid, low.seq) AND se.state = 'pending' AND ${EXHAUSTED}
  ), moved AS (
    UPDATE subscriptions s SET (floor_txid, floor_seq) = (
      SELECT coalesce(open.txid, s.frontier_txid), coalesce(open.seq - 1, s.frontier_seq)
      FROM (SELECT 1) one LEFT JOIN LATERAL (
        SELECT se.txid, se.seq FROM subscription_events se
        WHERE se.subscription_id = s.id AND se.state = 'pending' AND NOT ${EXHAUSTED}
          AND (se.txid, se.seq) > (s.floor_txid, s.floor_seq) AND (se.txid, se.seq) <= (s.frontier_txid, s.frontier_seq)
        ORDER BY se.txid, se.seq LIMIT 1
      ) open ON true),
      rate_tokens = CASE WHEN s.rate_limit_per_second IS NULL THEN s.rate_tokens
        ELSE least(s.rate_limit_per_second, s.rate_tokens + extract(epoch FROM clock_timestamp() - s.rate_refilled_at)::float8 * s.rate_limit_per_second) END,
      rate_refilled_at = CASE WHEN s.rate_limit_per_second IS NULL THEN s.rate_refilled_at ELSE clock_timestamp() END,
      -- Kept while a row below the floor is still pending (between the old floor and the new one none is).
      (below_floor_txid, below_floor_seq) = (
        SELECT CASE WHEN still THEN s.below_floor_txid END, CASE WHEN still THEN s.below_floor_seq END
        FROM (SELECT EXISTS (
          SELECT 1 FROM subscription_events se
          WHERE se.subscription_id = s.id AND (se.txid, se.seq) >= (s.below_floor_txid, s.below_floor_seq)
            AND (se.txid, se.seq) <= (s.floor_txid, s.floor_seq) AND se.state = 'pending' AND NOT ${EXHAUSTED}) AS still) k)
    WHERE s.id = $1
    RETURNING s.floor_txid, s.floor_seq, CASE WHEN s.rate_limit_per_second IS NULL THEN NULL ELSE s.rate_tokens END AS tokens
  ), forgotten AS (
    DELETE FROM subscription_events se USING moved, low
    WHERE se.subscription_id = $1 AND (se.txid, se.seq) >= (low.txid, low.seq) AND (se.txid, se.seq) <= (moved.floor_txid, moved.floor_seq)
      AND se.state = 'acked'
  )
  ${then}`

interface Compacted {
  floor_txid: string
  floor_seq: string
  /** The rate bucket's tokens after the refill; null when the subscription has no cap. */
  tokens: number | null
}

/**
 * Moves the subscription's state forward (its row locked by the caller, in a statement before this one: a
 * statement that waited for the lock would read the pending set as it was before the lock's holder committed).
 * Acks only mark rows, so they never wait on the lock.
 */
export async function compactSubscription (client: Queryable, subscription: SubscriptionRow): Promise<SubscriptionRow> {
  const { rows } = await client.query<Compacted>({
    name: 'compact-subscription',
    text: compactionStatement('SELECT floor_txid::text, floor_seq::text, tokens FROM moved'),
    values: [subscription.id, subscription.max_attempts]
  })
  const floor = rows[0] ?? subscription
  return { ...subscription, floor_txid: floor.floor_txid, floor_seq: floor.floor_seq }
}

/** Pending rows under an unexpired lease, and the expired or released ones a lease may take (in all, and of `type`). */
export interface LeaseCounts {
  in_flight: number
  available: number
  available_of_type: number
  /** Milliseconds until the first event waiting out its retry schedule may be leased; null when none waits. */
  next_retry_in_ms: number | null
}

/**
 * What a lease starts with, in one round trip: the compaction (compactSubscription), the rate bucket's tokens after
 * its refill, and the pending set's counts as the compaction leaves it.
 */
export async function compactForLease (client: Queryable, subscription: SubscriptionRow, type: string | null): Promise<{ subscription: SubscriptionRow, tokens: number | null, counts: LeaseCounts }> {
  const { rows } = await client.query<Compacted & LeaseCounts>({
    name: 'compact-for-lease',
    text: compactionStatement(`
      SELECT moved.floor_txid::text, moved.floor_seq::text, moved.tokens, counts.*
      FROM moved, (
        SELECT count(*) FILTER (WHERE se.leased_until > now())::int AS in_flight,
               count(*) FILTER (WHERE ${availableNow('$4::int[]')})::int AS available,
               count(*) FILTER (WHERE ${availableNow('$4::int[]')} AND ($3::text IS NULL OR se.type = $3))::int AS available_of_type,
               ceil(extract(epoch FROM min(se.leased_until + make_interval(secs => coalesce(($4::int[])[least(se.attempts, cardinality($4::int[]))], 0))) FILTER (
                 WHERE se.leased_until <= now() AND NOT ${availableNow('$4::int[]')} AND ($3::text IS NULL OR se.type = $3)) - now()) * 1000)::float8 AS next_retry_in_ms
        FROM subscription_events se, low
        WHERE se.subscription_id = $1 AND (se.txid, se.seq) >= (low.txid, low.seq) AND se.state = 'pending' AND NOT ${EXHAUSTED}
      ) counts`),
    values: [subscription.id, subscription.max_attempts, type, subscription.retry_schedule]
  })
  const row = rows[0]
  if (row === undefined) return { subscription, tokens: null, counts: { in_flight: 0, available: 0, available_of_type: 0, next_retry_in_ms: null } }
  const { floor_txid: floorTxid, floor_seq: floorSeq, tokens, ...counts } = row
  return { subscription: { ...subscription, floor_txid: floorTxid, floor_seq: floorSeq }, tokens, counts }
}

/**
 * Adds up to `limit` events after the frontier that match the subscription's types to its pending set, and moves
 * the frontier past what it read. Only events of transactions older than every running one are read (as the
 * inbox's cursors do), so a transaction committing late can never land behind the frontier: when fewer than
 * `limit` match, every event before the oldest running transaction has been read and the frontier moves there.
 * Dead letters a seek went back over stay dead (their rows are kept). Says how many it read, and how many of
 * those have `type` (all when null).
 */
export async function readAhead (client: Queryable, subscription: SubscriptionRow, limit: number, type: string | null): Promise<{ subscription: SubscriptionRow, read: number, ofType: number }> {
  const { rows } = await client.query<{ frontier_txid: string, frontier_seq: string, read: number, of_type: number }>({
    name: 'read-ahead',
    text: `WITH running AS (
             SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin
           ), read AS (
             SELECT e.id, e.created_at, e.type, e.txid, e.seq FROM events e
             WHERE e.organization_id = $2 AND (e.txid, e.seq) > ($3::xid8, $4::bigint)
               AND e.txid < (SELECT xmin FROM running) AND webhook_matches($5::text[], e.type)
             ORDER BY e.txid, e.seq LIMIT $6
           ), added AS (
             INSERT INTO subscription_events (subscription_id, txid, seq, event_id, event_created_at, type, state)
             SELECT $1, txid, seq, id, created_at, type, 'pending' FROM read
             ON CONFLICT DO NOTHING
           ), last AS (
             SELECT txid, seq, (SELECT count(*) FROM read) AS n FROM read ORDER BY txid DESC, seq DESC LIMIT 1
           )
           UPDATE subscriptions s SET (frontier_txid, frontier_seq) = (
             SELECT CASE WHEN last.n = $6 THEN last.txid ELSE greatest(s.frontier_txid, running.xmin) END,
                    CASE WHEN last.n = $6 THEN last.seq WHEN running.xmin > s.frontier_txid THEN 0 ELSE s.frontier_seq END
             FROM running LEFT JOIN last ON true)
           WHERE s.id = $1
           RETURNING frontier_txid, frontier_seq, (SELECT count(*) FROM read)::int AS read,
                     (SELECT count(*) FROM read WHERE $7::text IS NULL OR type = $7)::int AS of_type`,
    values: [subscription.id, subscription.organization_id, subscription.frontier_txid, subscription.frontier_seq, subscription.event_types, limit, type]
  })
  const frontier = rows[0]
  if (!frontier) return { subscription, read: 0, ofType: 0 }
  return {
    subscription: { ...subscription, frontier_txid: frontier.frontier_txid, frontier_seq: frontier.frontier_seq },
    read: frontier.read,
    ofType: frontier.of_type
  }
}

/** Takes one token per event handed out. */
export async function spendRateTokens (client: Queryable, subscriptionId: string, count: number): Promise<void> {
  await client.query({ name: 'spend-rate-tokens', text: 'UPDATE subscriptions SET rate_tokens = rate_tokens - $2 WHERE id = $1', values: [subscriptionId, count] })
}

export interface SubscriptionLeaseRequest {
  leaseId: string
  limit: number
  leaseSeconds: number
  type: string | null
}

/** Leases the first available events of the pending set, in cursor order, with their payloads. */
export async function leasePending (client: Queryable, subscription: SubscriptionRow, request: SubscriptionLeaseRequest): Promise<{ events: LeasedEventRow[], leasedUntil: Date | null }> {
  const { rows } = await client.query<LeasedEventRow & { leased_until: Date }>({
    name: 'subscription-lease',
    text: `WITH leased AS (
             UPDATE subscription_events se
             SET lease_id = $2, leased_until = now() + make_interval(secs => $6), attempts = se.attempts + 1
             FROM (
               SELECT se.txid, se.seq FROM subscription_events se, (${LOW}) low
               WHERE se.subscription_id = $1 AND (se.txid, se.seq) >= (low.txid, low.seq) AND se.state = 'pending'
                 AND ${availableNow('$7::int[]')} AND se.attempts < $5 AND ($3::text IS NULL OR se.type = $3)
               ORDER BY se.txid, se.seq LIMIT $4
             ) available
             WHERE se.subscription_id = $1 AND se.txid = available.txid AND se.seq = available.seq
             RETURNING se.event_id, se.event_created_at, se.attempts, se.leased_until, se.txid, se.seq
           )
           SELECT e.id, e.seq, e.txid, e.type, e.payload, e.dedup_id, e.source, e.created_at, e.delivery_status,
                  leased.attempts AS lease_count, leased.leased_until
           FROM leased JOIN events e ON e.id = leased.event_id AND e.created_at = leased.event_created_at
           ORDER BY leased.txid, leased.seq`,
    values: [subscription.id, request.leaseId, request.type, request.limit, subscription.max_attempts, request.leaseSeconds, subscription.retry_schedule]
  })
  return { events: rows, leasedUntil: rows[0]?.leased_until ?? null }
}

// Only rows still held by the lease: an expired lease (possibly leased again since) no longer counts.
const HELD_BY_LEASE = `subscription_id = $1 AND lease_id = $2 AND leased_until > now() AND state = 'pending'
                       AND ($3::uuid[] IS NULL OR event_id = ANY($3::uuid[]))`

/**
 * Marks the lease's events acked, when the subscription is the organization's (no lookup before it: an ack that
 * acks nothing says why with findSubscription); the floor passes them at the next compaction.
 */
export async function acknowledgePending (db: Queryable, organizationId: string, subscriptionId: string, leaseId: string, ids: string[] | null): Promise<string[]> {
  const { rows } = await db.query<{ event_id: string }>({
    name: 'subscription-ack',
    text: `UPDATE subscription_events SET state = 'acked', lease_id = NULL, leased_until = NULL
           WHERE ${HELD_BY_LEASE} AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = $1 AND s.organization_id = $4)
           RETURNING event_id`,
    values: [subscriptionId, leaseId, ids, organizationId]
  })
  return rows.map((row) => row.event_id)
}

/** Ends the lease early: its events are available again, or dead-lettered when that was their last lease. */
export async function releasePending (db: Queryable, subscriptionId: string, leaseId: string, ids: string[] | null, maxAttempts: number): Promise<Array<{ event_id: string, state: string }>> {
  const { rows } = await db.query<{ event_id: string, state: string }>({
    name: 'subscription-release',
    text: `UPDATE subscription_events
           SET lease_id = NULL, leased_until = CASE WHEN attempts >= $4 THEN NULL ELSE now() END,
               state = CASE WHEN attempts >= $4 THEN 'dead' ELSE 'pending' END,
               dead_at = CASE WHEN attempts >= $4 THEN now() END
           WHERE ${HELD_BY_LEASE} RETURNING event_id, state`,
    values: [subscriptionId, leaseId, ids, maxAttempts]
  })
  return rows
}

export async function extendPending (db: Queryable, subscriptionId: string, leaseId: string, leaseSeconds: number): Promise<{ ids: string[], leasedUntil: Date | null }> {
  const { rows } = await db.query<{ event_id: string, leased_until: Date }>({
    name: 'subscription-extend',
    text: `UPDATE subscription_events SET leased_until = now() + make_interval(secs => $4) WHERE ${HELD_BY_LEASE} RETURNING event_id, leased_until`,
    values: [subscriptionId, leaseId, null, leaseSeconds]
  })
  return { ids: rows.map((row) => row.event_id), leasedUntil: rows[0]?.leased_until ?? null }
}

/** Moves floor and frontier to `to` (the row locked by the caller): leases end, dead letters stay. */
export async function seekSubscription (client: Queryable, subscription: SubscriptionRow, to: StartPosition): Promise<SubscriptionRow> {
  await client.query('DELETE FROM subscription_events WHERE subscription_id = $1 AND state <> \'dead\'', [subscription.id])
  const { rows } = await client.query<SubscriptionRow>(
    `WITH start AS (${START_POSITION})
     UPDATE subscriptions SET floor_txid = start.txid, floor_seq = start.seq, frontier_txid = start.txid, frontier_seq = start.seq,
                              below_floor_txid = NULL, below_floor_seq = NULL, position_expired_at = NULL, updated_at = now()
     FROM start WHERE id = $6
     RETURNING ${COLUMNS}`,
    [...startValues(subscription.organization_id, to), subscription.id])
  return rows[0] ?? subscription
}

export interface DeadLetterRow {
  event_id: string
  type: string
  payload: Record<string, unknown>
  created_at: Date
  attempts: number
  dead_at: Date
}

export async function listDeadLetters (db: Queryable, subscriptionId: string, limit: number): Promise<DeadLetterRow[]> {
  const { rows } = await db.query<DeadLetterRow>(
    `SELECT se.event_id, e.type, e.payload, e.created_at, se.attempts, se.dead_at
     FROM subscription_events se JOIN events e ON e.id = se.event_id AND e.created_at = se.event_created_at
     WHERE se.subscription_id = $1 AND se.state = 'dead'
     ORDER BY se.txid, se.seq LIMIT $2`,
    [subscriptionId, limit])
  return rows
}

/**
 * Dead letters (all, or those listed) back to available with a fresh attempt budget; how many. Run with the
 * subscription's row locked, so that no compaction reads the pending set between the two.
 */
export async function redriveDeadLetters (client: Queryable, subscriptionId: string, ids: string[] | null): Promise<number> {
  const { rows } = await client.query<{ redriven: number }>(
    `WITH redriven AS (
       UPDATE subscription_events SET state = 'pending', attempts = 0, dead_at = NULL
       WHERE subscription_id = $1 AND state = 'dead' AND ($2::uuid[] IS NULL OR event_id = ANY($2::uuid[]))
       RETURNING txid, seq
     ), recorded AS (${recordPendingBelowFloor('redriven')})
     SELECT count(*)::int AS redriven FROM redriven`,
    [subscriptionId, ids])
  return rows[0]?.redriven ?? 0
}

/**
 * Retention, before the events older than `from` are dropped: flags the subscriptions that have not acked some of
 * them (after their ack floor, matching their types, not acked out of order), whose position is then expired.
 */
export async function markExpiredPositions (client: Queryable, from: Date): Promise<void> {
  await client.query(
    `UPDATE subscriptions s SET position_expired_at = now()
     WHERE s.position_expired_at IS NULL AND EXISTS (
       SELECT 1 FROM events e
       WHERE e.organization_id = s.organization_id AND e.created_at < $1
         AND (e.txid, e.seq) > (s.floor_txid, s.floor_seq) AND webhook_matches(s.event_types, e.type)
         AND NOT EXISTS (SELECT 1 FROM subscription_events se
                         WHERE se.subscription_id = s.id AND se.txid = e.txid AND se.seq = e.seq AND se.state = 'acked'))`,
    [from])
}

/** Retention: the pending rows of events older than `from`, whose partitions are being dropped. */
export async function forgetExpiredSubscriptionEvents (client: Queryable, from: Date): Promise<void> {
  await client.query('DELETE FROM subscription_events WHERE event_created_at < $1', [from])
}

export interface EventSubscriptionStateRow {
  subscription_id: string
  name: string | null
  state: 'waiting' | 'available' | 'in_flight' | 'done' | 'dead'
  lease_count: number
}

/**
 * Where one event stands in each of the organization's subscriptions whose types it matches: done (acked, or at or
 * before the subscription's position), dead-lettered, leased now, available (read, not leased now), or waiting
 * (after the subscription's frontier: not handed out yet).
 */
export async function eventSubscriptionStates (db: Queryable, organizationId: string, event: { txid: string, seq: string, type: string }): Promise<EventSubscriptionStateRow[]> {
  const { rows } = await db.query<EventSubscriptionStateRow>({
    name: 'event-subscription-states',
    text: `SELECT s.id AS subscription_id, s.name,
                  CASE WHEN se.state = 'pending' AND se.leased_until > now() THEN 'in_flight'
                       WHEN se.state = 'pending' THEN 'available'
                       WHEN se.state = 'dead' THEN 'dead'
                       WHEN se.state = 'acked' OR ($2::xid8, $3::bigint) <= (s.floor_txid, s.floor_seq) THEN 'done'
                       ELSE 'waiting' END AS state,
                  coalesce(se.attempts, 0) AS lease_count
           FROM subscriptions s
           LEFT JOIN subscription_events se ON se.subscription_id = s.id AND se.txid = $2 AND se.seq = $3
           WHERE s.organization_id = $1 AND webhook_matches(s.event_types, $4)
           ORDER BY s.created_at, s.id`,
    values: [organizationId, event.txid, event.seq, event.type]
  })
  return rows
}
