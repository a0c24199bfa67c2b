import type { DeliveryStatus, EventStatus, InitialDeliveryStatus } from '../schemas/events.js'
import type { Queryable } from './queryable.js'

export interface NewEvent {
  id: string
  organization_id: string
  type: string
  payload: Record<string, unknown>
  dedup_id: string | null
  source: string | null
}

/** What every read of an event returns; the row types below add what their query adds. */
export interface EventFields {
  id: string
  seq: string
  type: string
  payload: Record<string, unknown>
  dedup_id: string | null
  source: string | null
  created_at: Date
}


export interface EventRow extends EventFields {
  status: EventStatus
  delivery_status: DeliveryStatus
  acknowledged_at: Date | null
  /** The inserting transaction's id: with seq, the event's position in cursor order. */
  txid: string
}

export interface StoredEventRef {
  id: string
  dedup_id: string | null
  type: string
  created_at: Date
}

/** A place in the inbox's cursor order (inserting transaction, then seq). */
export interface InboxPosition {
  txid: string
  seq: string
}

export interface InboxFilter {
  status: EventStatus | null
  deliveryStatus: DeliveryStatus | null
  type: string | null
  since: string | null
  after: InboxPosition
  limit: number
  /** Type patterns as a subscription's `event_types` (all types when absent or empty). */
  typePatterns?: string[]
}

const COLUMNS = 'id, seq, txid, type, payload, dedup_id, source, status, delivery_status, created_at, acknowledged_at'

export interface InsertedEvent extends StoredEventRef {
  delivery_status: InitialDeliveryStatus
}

/**
 * Inserts many events, of any organizations, in one statement. `serializedEvents` is the JSON array of
 * NewEvent rows (serialized by the caller when each write was queued, so one write's payload can never make
 * the shared statement throw). Rows whose dedup_id is already known for their organization (or repeats earlier
 * in the same call) are skipped; only inserted rows are returned. A dedup_id is claimed in event_dedup_keys
 * (unique per dedup period, see migration 010) after a look in the earlier periods still kept. The same statement
 * writes a delivery (outbox row) for each matching enabled webhook, so no accepted event can miss its webhooks,
 * and sets the event's delivery_status accordingly; the number of deliveries is returned so the caller can wake
 * workers.
 */
export async function insertEvents (db: Queryable, serializedEvents: string): Promise<{ inserted: InsertedEvent[], outboxRows: number }> {
  // One JSON document for all rows: parsed once by PostgreSQL, far cheaper on both sides than six array
  // parameters (pg escapes every array element in JavaScript).
  const { rows } = await db.query<InsertedEvent & { outbox_rows: number }>({
    name: 'insert-events',
    text: `WITH input AS (
             SELECT * FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id uuid, organization_id uuid, type text, payload jsonb, dedup_id text, source text))
               WITH ORDINALITY AS e (id, organization_id, type, payload, dedup_id, source, position)
           ), known AS (
             SELECT * FROM dedup_keys_in_earlier_periods(
               ARRAY(SELECT organization_id FROM input WHERE dedup_id IS NOT NULL), ARRAY(SELECT dedup_id FROM input WHERE dedup_id IS NOT NULL))
           ), claimed AS (
             INSERT INTO event_dedup_keys (organization_id, dedup_id, period, event_id, type, created_at)
             SELECT i.organization_id, i.dedup_id, dedup_period(now()), i.id, i.type, now() FROM input i
             WHERE i.dedup_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM known k WHERE k.organization_id = i.organization_id AND k.dedup_id = i.dedup_id)
             -- In input order, so the first of a dedup_id repeated in the call is the one stored.
             ORDER BY i.position
             ON CONFLICT (organization_id, dedup_id, period) DO NOTHING
             RETURNING event_id
           ), accepted AS (
             SELECT * FROM input i WHERE i.dedup_id IS NULL OR i.id IN (SELECT event_id FROM claimed)
           ), matches AS (
             SELECT a.id AS event_id, w.id AS webhook_id FROM accepted a
             JOIN webhooks w ON w.organization_id = a.organization_id AND w.enabled AND webhook_matches(w.event_types, a.type)
           ), inserted AS (
             INSERT INTO events (id, organization_id, type, payload, dedup_id, source, delivery_status)
             SELECT a.id, a.organization_id, a.type, a.payload, a.dedup_id, a.source,
                    CASE WHEN EXISTS (SELECT 1 FROM matches m WHERE m.event_id = a.id) THEN 'pending' ELSE 'none' END
             FROM accepted a
             ORDER BY a.position
             RETURNING id, dedup_id, type, created_at, delivery_status
           ), outbox AS (
             INSERT INTO deliveries (event_id, event_created_at, webhook_id)
             SELECT m.event_id, inserted.created_at, m.webhook_id FROM matches m JOIN inserted ON inserted.id = m.event_id
             RETURNING 1
           )
           SELECT id, dedup_id, type, created_at, delivery_status, (SELECT count(*) FROM outbox)::int AS outbox_rows FROM inserted`,
    values: [serializedEvents]
  })
  return {
    inserted: rows.map(({ outbox_rows: _outboxRows, ...event }) => event),
    outboxRows: rows[0]?.outbox_rows ?? 0
  }
}

export interface DedupKey {
  organization_id: string
  dedup_id: string
}

/**
 * The originals of (organization, dedup_id) pairs, e.g. of skipped duplicates, from the dedup keys (which may
 * outlive their event by up to a dedup period: the answer then names an event that has expired).
 */
export async function findEventsByDedupKeys (db: Queryable, keys: DedupKey[]): Promise<Array<StoredEventRef & { organization_id: string }>> {
  const { rows } = await db.query<StoredEventRef & { organization_id: string }>({
    name: 'events-by-dedup-keys',
    text: `SELECT DISTINCT ON (d.organization_id, d.dedup_id) d.event_id AS id, d.organization_id, d.dedup_id, d.type, d.created_at
           FROM unnest($1::uuid[], $2::text[]) AS k (organization_id, dedup_id)
           JOIN event_dedup_keys d ON d.organization_id = k.organization_id AND d.dedup_id = k.dedup_id
           ORDER BY d.organization_id, d.dedup_id, d.period`,
    values: [keys.map((key) => key.organization_id), keys.map((key) => key.dedup_id)]
  })
  return rows
}

export async function findEvent (db: Queryable, organizationId: string, id: string): Promise<EventRow | undefined> {
  const { rows } = await db.query<EventRow>({
    name: 'event-by-id',
    text: `SELECT ${COLUMNS} FROM events WHERE organization_id = $1 AND id = $2`,
    values: [organizationId, id]
  })
  return rows[0]
}

// Readable: inserted by a transaction older than every one still running, so no event can later commit before it in
// (txid, seq) order (migration 007). Every read that follows a position uses it.
const READABLE = 'txid < pg_snapshot_xmin(pg_current_snapshot())'

/**
 * One page of the inbox after `filter.after`, in (txid, seq) order, holding only events whose inserting
 * transaction is older than every transaction still running: those can no longer be joined by a row that
 * sorts before them, so a reader that follows its position never skips one (see migration 007). Asks for one
 * row more than `limit` so the caller knows if more exist.
 */
export async function listEvents (db: Queryable, organizationId: string, filter: InboxFilter): Promise<EventRow[]> {
  // Not a named statement: with optional filters, a fresh plan per call picks the right index.
  const { rows } = await db.query<EventRow>({
    text: `SELECT ${COLUMNS} FROM events
           WHERE organization_id = $1 AND (txid, seq) > ($2::xid8, $3::bigint)
             AND ${READABLE}
             AND ($4::text IS NULL OR status = $4)
             AND ($5::text IS NULL OR delivery_status = $5)
             AND ($6::text IS NULL OR type = $6)
             AND ($7::timestamptz IS NULL OR created_at >= $7)
             AND ($9::text[] IS NULL OR webhook_matches($9::text[], type))
           ORDER BY txid, seq
           LIMIT $8`,
    values: [organizationId, filter.after.txid, filter.after.seq, filter.status, filter.deliveryStatus, filter.type, filter.since, filter.limit + 1, filter.typePatterns ?? null]
  })
  return rows
}

/** The position of the organization's newest readable event (as listEvents reads them); null when it has none. */
export async function lastReadablePosition (db: Queryable, organizationId: string): Promise<InboxPosition | null> {
  const { rows } = await db.query<InboxPosition>({
    name: 'last-readable-position',
    text: `SELECT txid::text AS txid, seq::text AS seq FROM events
           WHERE organization_id = $1 AND ${READABLE}
           ORDER BY txid DESC, seq DESC LIMIT 1`,
    values: [organizationId]
  })
  return rows[0] ?? null
}

export interface EventsAfter {
  /** Readable events after the position, at most the limit asked for. */
  count: number
  /** The position of the last of them; null when there are none. */
  last: InboxPosition | null
}

/** Counts the organization's events after `after` in listEvents' order and with its rule of what is readable. */
export async function countEventsAfter (db: Queryable, organizationId: string, after: InboxPosition, limit: number): Promise<EventsAfter> {
  const { rows } = await db.query<{ count: number, txid: string | null, seq: string | null }>({
    name: 'count-events-after',
    text: `WITH readable AS (
             SELECT txid, seq FROM events
             WHERE organization_id = $1 AND (txid, seq) > ($2::xid8, $3::bigint) AND ${READABLE}
             ORDER BY txid, seq LIMIT $4),
           last AS (SELECT txid, seq FROM readable ORDER BY txid DESC, seq DESC LIMIT 1)
           SELECT (SELECT count(*)::int FROM readable) AS count, (SELECT txid::text FROM last) AS txid, (SELECT seq::text FROM last) AS seq`,
    values: [organizationId, after.txid, after.seq, limit]
  })
  const row = rows[0]
  const last = row !== undefined && row.txid !== null && row.seq !== null ? { txid: row.txid, seq: row.seq } : null
  return { count: row?.count ?? 0, last }
}

/**
 * Whether committed events of the organization wait behind an older transaction still running: listEvents and
 * countEventsAfter skip them until it ends, and no arrival announces them then, so a reader that is told of
 * arrivals (a stream) has to look again by itself.
 */
export async function eventsAwaitingReadability (db: Queryable, organizationId: string): Promise<boolean> {
  const { rows } = await db.query<{ waiting: boolean }>({
    name: 'events-awaiting-readability',
    text: `SELECT EXISTS (SELECT 1 FROM events WHERE organization_id = $1 AND NOT ${READABLE}) AS waiting`,
    values: [organizationId]
  })
  return rows[0]?.waiting === true
}

/** Orders rows as the inbox does: by inserting transaction, then seq. */
function byPosition (a: InboxPosition, b: InboxPosition): number {
  const txidOrder = BigInt(a.txid) - BigInt(b.txid)
  const order = txidOrder !== 0n ? txidOrder : BigInt(a.seq) - BigInt(b.seq)
  return order < 0n ? -1 : order > 0n ? 1 : 0
}

/** Idempotent: an event acknowledged before keeps its first acknowledged_at. */
export async function acknowledgeEvents (db: Queryable, organizationId: string, ids: string[]): Promise<Array<{ id: string, acknowledged_at: Date }>> {
  const { rows } = await db.query<{ id: string, acknowledged_at: Date }>({
    name: 'acknowledge-events',
    text: `UPDATE events SET status = 'acknowledged', acknowledged_at = coalesce(acknowledged_at, now()), lease_id = NULL, leased_until = NULL
           WHERE organization_id = $1 AND id = ANY($2::uuid[])
           RETURNING id, acknowledged_at`,
    values: [organizationId, ids]
  })
  return rows
}

export interface LeasedEventRow extends EventFields {
  lease_count: number
  delivery_status: DeliveryStatus
  txid: string
}

export interface LeaseRequest {
  leaseId: string
  limit: number
  leaseSeconds: number
  type: string | null
  maxLeases: number
}

/**
 * Claims the oldest available events (pending, not under an unexpired lease, leased fewer than maxLeases
 * times) for one lease. SKIP LOCKED lets concurrent consumers claim disjoint events without waiting.
 */
export async function leaseEvents (db: Queryable, organizationId: string, request: LeaseRequest): Promise<{ events: LeasedEventRow[], leasedUntil: Date | null }> {
  const { rows } = await db.query<LeasedEventRow & { leased_until: Date }>({
    name: 'lease-events',
    text: `WITH available AS (
             SELECT id FROM events
             WHERE organization_id = $1 AND status = 'pending'
               AND (leased_until IS NULL OR leased_until <= now())
               AND lease_count < $5
               AND ($3::text IS NULL OR type = $3)
             ORDER BY txid, seq
             LIMIT $4
             FOR UPDATE SKIP LOCKED
           )
           UPDATE events e
           SET lease_id = $2, leased_until = now() + make_interval(secs => $6), lease_count = e.lease_count + 1
           FROM available
           WHERE e.id = available.id
           RETURNING e.id, e.seq, e.txid, e.type, e.payload, e.dedup_id, e.source, e.created_at, e.lease_count, e.delivery_status, e.leased_until`,
    values: [organizationId, request.leaseId, request.type, request.limit, request.maxLeases, request.leaseSeconds]
  })
  rows.sort(byPosition)
  return { events: rows, leasedUntil: rows[0]?.leased_until ?? null }
}

/** Events whose last allowed lease expired without an ack move to the quarantine. */
export async function quarantineExhausted (db: Queryable, organizationId: string, maxLeases: number): Promise<void> {
  await db.query({
    name: 'quarantine-exhausted',
    text: `UPDATE events SET status = 'quarantined', lease_id = NULL, leased_until = NULL
           WHERE organization_id = $1 AND status = 'pending' AND leased_until <= now() AND lease_count >= $2`,
    values: [organizationId, maxLeases]
  })
}

// Only events still held by the lease: an expired lease (possibly re-leased since) no longer counts.
const HELD_BY_LEASE = `organization_id = $1 AND lease_id = $2 AND leased_until > now() AND status = 'pending'
                       AND ($3::uuid[] IS NULL OR id = ANY($3::uuid[]))`

export async function acknowledgeLeased (db: Queryable, organizationId: string, leaseId: string, ids: string[] | null): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>({
    name: 'acknowledge-leased',
    text: `UPDATE events SET status = 'acknowledged', acknowledged_at = now(), lease_id = NULL, leased_until = NULL
           WHERE ${HELD_BY_LEASE} RETURNING id`,
    values: [organizationId, leaseId, ids]
  })
  return rows.map((row) => row.id)
}

/** Ends the lease early; an event that has used its last allowed lease goes to the quarantine instead. */
export async function releaseLeased (db: Queryable, organizationId: string, leaseId: string, ids: string[] | null, maxLeases: number): Promise<Array<{ id: string, status: string }>> {
  const { rows } = await db.query<{ id: string, status: string }>({
    name: 'release-leased',
    text: `UPDATE events
           SET lease_id = NULL, leased_until = NULL, status = CASE WHEN lease_count >= $4 THEN 'quarantined' ELSE 'pending' END
           WHERE ${HELD_BY_LEASE} RETURNING id, status`,
    values: [organizationId, leaseId, ids, maxLeases]
  })
  return rows
}

export async function extendLease (db: Queryable, organizationId: string, leaseId: string, leaseSeconds: number): Promise<{ ids: string[], leasedUntil: Date | null }> {
  const { rows } = await db.query<{ id: string, leased_until: Date }>({
    name: 'extend-lease',
    text: `UPDATE events SET leased_until = now() + make_interval(secs => $4)
           WHERE ${HELD_BY_LEASE} RETURNING id, leased_until`,
    values: [organizationId, leaseId, null, leaseSeconds]
  })
  return { ids: rows.map((row) => row.id), leasedUntil: rows[0]?.leased_until ?? null }
}

/** Puts a quarantined event back in the queue with a fresh lease budget. */
export async function requeueQuarantined (db: Queryable, organizationId: string, id: string): Promise<EventRow | undefined> {
  const { rows } = await db.query<EventRow>({
    name: 'requeue-quarantined',
    text: `UPDATE events SET status = 'pending', lease_count = 0, lease_id = NULL, leased_until = NULL
           WHERE organization_id = $1 AND id = $2 AND status = 'quarantined' RETURNING ${COLUMNS}`,
    values: [organizationId, id]
  })
  return rows[0]
}
