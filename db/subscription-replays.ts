import type { Queryable } from './queryable.js'
import { recordPendingBelowFloor, type SubscriptionRow } from './subscriptions.js'

export interface ReplayRow {
  id: string
  subscription_id: string
  from_at: Date
  to_at: Date
  total: number
  read: number
  read_complete: boolean
  cancelled_at: Date | null
  created_at: Date
  /** Events the replay handed to the subscription that are not yet acked or dead-lettered. */
  pending: number
}

const COLUMNS = `r.id, r.subscription_id, r.from_at, r.to_at, r.total, r.read, r.read_complete, r.cancelled_at, r.created_at,
                 (SELECT count(*) FROM subscription_events se WHERE se.replay_id = r.id AND se.state = 'pending')::int AS pending`

/** Replays still reading their range (not cancelled): those count against the per-subscription cap. */
const READING = 'NOT r.read_complete AND r.cancelled_at IS NULL'

export type NewReplay = { replay: ReplayRow } | { refused: 'too_many_replays', reading: number } | { refused: 'replay_too_large', total: number }

/**
 * Makes a replay of the events in [from, to) the subscription has read, up to its frontier (its row locked by the
 * caller, so concurrent replays count each other, and compacted so its frontier is current), unless `maxReading` of its replays are still reading or the range holds more than `maxEvents`
 * matching events.
 */
export async function insertReplay (client: Queryable, subscription: SubscriptionRow, from: Date, to: Date, maxReading: number, maxEvents: number): Promise<NewReplay> {
  const { rows: [counted] } = await client.query<{ total: number }>(
    `SELECT count(*)::int AS total FROM (
       SELECT 1 FROM events WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3 AND webhook_matches($4::text[], type)
         AND (txid, seq) <= ($6::xid8, $7::bigint)
       LIMIT $5 + 1) range`,
    [subscription.organization_id, from, to, subscription.event_types, maxEvents, subscription.frontier_txid, subscription.frontier_seq])
  const total = counted?.total ?? 0
  if (total > maxEvents) return { refused: 'replay_too_large', total }
  const { rows: [reading] } = await client.query<{ count: number }>(
    `SELECT count(*)::int AS count FROM subscription_replays r WHERE r.subscription_id = $1 AND ${READING}`, [subscription.id])
  // A range with nothing to read is finished at once and takes no place.
  if (total > 0 && (reading?.count ?? 0) >= maxReading) return { refused: 'too_many_replays', reading: reading?.count ?? 0 }
  // The range's first and last events in log order (up to the frontier): the replay reads the log between them
  // in index order, so each read costs what it reads, however large the range.
  const { rows } = await client.query<ReplayRow>(
    `WITH range AS (
       SELECT txid, seq FROM events
       WHERE organization_id = $7 AND created_at >= $2 AND created_at < $3 AND webhook_matches($8::text[], type)
         AND (txid, seq) <= ($5::xid8, $6::bigint)
     ), first AS (
       SELECT txid, seq FROM range ORDER BY txid, seq LIMIT 1
     ), last AS (
       SELECT txid, seq FROM range ORDER BY txid DESC, seq DESC LIMIT 1
     ), r AS (
       INSERT INTO subscription_replays (subscription_id, from_at, to_at, cursor_txid, cursor_seq, until_txid, until_seq, total, read_complete)
       SELECT $1, $2, $3, coalesce(first.txid, '0'), coalesce(first.seq - 1, 0), coalesce(last.txid, '0'), coalesce(last.seq, 0), $4, first.txid IS NULL
       FROM (SELECT 1) one LEFT JOIN first ON true LEFT JOIN last ON true
       RETURNING *
     )
     SELECT r.id, r.subscription_id, r.from_at, r.to_at, r.total, r.read, r.read_complete, r.cancelled_at, r.created_at, 0 AS pending FROM r`,
    [subscription.id, from, to, total, subscription.frontier_txid, subscription.frontier_seq, subscription.organization_id, subscription.event_types])
  const replay = rows[0]
  if (!replay) throw new Error('INSERT … RETURNING returned no row')
  return { replay }
}

export async function listReplays (db: Queryable, subscriptionId: string): Promise<ReplayRow[]> {
  const { rows } = await db.query<ReplayRow>(
    `SELECT ${COLUMNS} FROM subscription_replays r WHERE r.subscription_id = $1 ORDER BY r.created_at, r.id`, [subscriptionId])
  return rows
}

export async function findReplay (db: Queryable, subscriptionId: string, replayId: string): Promise<ReplayRow | undefined> {
  const { rows } = await db.query<ReplayRow>(
    `SELECT ${COLUMNS} FROM subscription_replays r WHERE r.subscription_id = $1 AND r.id = $2`, [subscriptionId, replayId])
  return rows[0]
}

/** The replays still reading, oldest first: a lease reads from them once the live log is read. */
export async function readingReplays (db: Queryable, subscriptionId: string): Promise<ReplayRow[]> {
  const { rows } = await db.query<ReplayRow>({
    name: 'reading-replays',
    text: `SELECT r.id, r.subscription_id, r.from_at, r.to_at, r.total, r.read, r.read_complete, r.cancelled_at, r.created_at, 0 AS pending
           FROM subscription_replays r WHERE r.subscription_id = $1 AND ${READING} ORDER BY r.created_at, r.id`,
    values: [subscriptionId]
  })
  return rows
}

/**
 * Stops the replays reading (one, or all of the subscription's when `replayId` is null); what they already handed
 * out stays with the subscription. Returns the ids cancelled.
 */
export async function cancelReplays (db: Queryable, subscriptionId: string, replayId: string | null): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `UPDATE subscription_replays r SET cancelled_at = now()
     WHERE r.subscription_id = $1 AND ($2::uuid IS NULL OR r.id = $2) AND ${READING} RETURNING r.id`,
    [subscriptionId, replayId])
  return rows.map((row) => row.id)
}

/**
 * Scans the next `limit` events of the log after the replay's cursor, up to the range's last event, and adds those
 * of the range (by creation time and the subscription's types) to the subscription's pending set, tagged with the
 * replay, moving its cursor past what it scanned (the subscription's row locked by the caller). An event already
 * there is made pending again with a fresh attempt budget (unless it is pending now: it is being handed out
 * anyway); its lease, if any, holds. Everything up to the range's last event is committed (it is at or before the
 * frontier the subscription had), so a scan that comes back short has read the range to its end. Says how many
 * it read, how many of those have `type` (all when null), and whether the range is read.
 */
export async function readReplayAhead (client: Queryable, subscription: SubscriptionRow, replayId: string, limit: number, type: string | null): Promise<{ read: number, ofType: number, complete: boolean }> {
  const { rows } = await client.query<{ read: number, of_type: number, read_complete: boolean }>({
    name: 'read-replay-ahead',
    text: `WITH replay AS (
             SELECT * FROM subscription_replays WHERE id = $2
           ), scanned AS (
             SELECT e.id, e.created_at, e.type, e.txid, e.seq FROM events e, replay
             WHERE e.organization_id = $3 AND (e.txid, e.seq) > (replay.cursor_txid, replay.cursor_seq)
               AND (e.txid, e.seq) <= (replay.until_txid, replay.until_seq)
             ORDER BY e.txid, e.seq LIMIT $5
           ), read AS (
             SELECT scanned.* FROM scanned, replay
             WHERE scanned.created_at >= replay.from_at AND scanned.created_at < replay.to_at AND webhook_matches($4::text[], scanned.type)
           ), added AS (
             INSERT INTO subscription_events AS se (subscription_id, txid, seq, event_id, event_created_at, type, state, replay_id)
             SELECT $1, txid, seq, id, created_at, type, 'pending', $2 FROM read
             ON CONFLICT (subscription_id, txid, seq) DO UPDATE
             SET replay_id = excluded.replay_id, state = 'pending', dead_at = NULL,
                 attempts = CASE WHEN se.state = 'pending' THEN se.attempts ELSE 0 END
           ), recorded AS (${recordPendingBelowFloor('read')}
           ), last AS (
             SELECT txid, seq FROM scanned ORDER BY txid DESC, seq DESC LIMIT 1
           )
           UPDATE subscription_replays r
           SET cursor_txid = coalesce(last.txid, r.cursor_txid), cursor_seq = coalesce(last.seq, r.cursor_seq),
               read = r.read + (SELECT count(*) FROM read),
               read_complete = (SELECT count(*) FROM scanned) < $5
           FROM (SELECT 1) one LEFT JOIN last ON true
           WHERE r.id = $2
           RETURNING (SELECT count(*) FROM read)::int AS read,
                     (SELECT count(*) FROM read WHERE $6::text IS NULL OR type = $6)::int AS of_type, r.read_complete`,
    values: [subscription.id, replayId, subscription.organization_id, subscription.event_types, limit, type]
  })
  const result = rows[0]
  return { read: result?.read ?? 0, ofType: result?.of_type ?? 0, complete: result?.read_complete ?? true }
}
