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
  status: 'pending' | 'acknowledged' | 'quarantined' | 'delivered' | 'failed'
  acknowledged_at: Date | null
}

export interface StoredEventRef {
  id: string
  dedup_id: string | null
  type: string
  created_at: Date
}

export interface InboxFilter {
  status: string | null
  type: string | null
  since: string | null
  afterSeq: string
  limit: number
}

const COLUMNS = 'id, seq, type, payload, dedup_id, source, status, created_at, acknowledged_at'

/**
 * Inserts many events, of any organizations, in one statement. Rows whose dedup_id already exists for their
 * organization (or repeats earlier in the same call) are skipped; only inserted rows are returned. The same
 * statement writes a delivery (outbox row) for each matching enabled webhook, so no accepted event can miss
 * its webhooks; their number is returned so the caller can wake the delivery workers.
 */
export async function insertEvents (db: Queryable, events: NewEvent[]): Promise<{ inserted: StoredEventRef[], outboxRows: number }> {
  // One JSON document for all rows: serialized natively by V8 and parsed once by PostgreSQL, far cheaper on
  // both sides than six array parameters (pg escapes every array element in JavaScript).
  const { rows } = await db.query<StoredEventRef & { outbox_rows: number }>({
    name: 'insert-events',
    text: `WITH inserted AS (
             INSERT INTO events (id, organization_id, type, payload, dedup_id, source)
             SELECT e.id, e.organization_id, e.type, e.payload, e.dedup_id, e.source
             FROM jsonb_to_recordset($1::jsonb) AS e (id uuid, organization_id uuid, type text, payload jsonb, dedup_id text, source text)
             ON CONFLICT (organization_id, dedup_id) DO NOTHING
             RETURNING id, organization_id, dedup_id, type, created_at
           ), outbox AS (
             INSERT INTO deliveries (event_id, webhook_id)
             SELECT inserted.id, w.id FROM inserted
             JOIN webhooks w ON w.organization_id = inserted.organization_id AND w.enabled AND webhook_matches(w.event_types, inserted.type)
             RETURNING 1
           )
           SELECT id, dedup_id, type, created_at, (SELECT count(*) FROM outbox)::int AS outbox_rows FROM inserted`,
    values: [JSON.stringify(events)]
  })
  return {
    inserted: rows.map(({ id, dedup_id: dedupId, type, created_at: createdAt }) => ({ id, dedup_id: dedupId, type, created_at: createdAt })),
    outboxRows: rows[0]?.outbox_rows ?? 0
  }
}

export interface DedupKey {
  organization_id: string
  dedup_id: string
}

/** The stored events for (organization, dedup_id) pairs, e.g. the originals of skipped duplicates. */
export async function findEventsByDedupKeys (db: Queryable, keys: DedupKey[]): Promise<Array<StoredEventRef & { organization_id: string }>> {
  const { rows } = await db.query<StoredEventRef & { organization_id: string }>({
    name: 'events-by-dedup-keys',
    text: `SELECT e.id, e.organization_id, e.dedup_id, e.type, e.created_at
           FROM unnest($1::uuid[], $2::text[]) AS k (organization_id, dedup_id)
           JOIN events e ON e.organization_id = k.organization_id AND e.dedup_id = k.dedup_id`,
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

/** One page of the inbox in `seq` order; asks for one row more than `limit` so the caller knows if more exist. */
export async function listEvents (db: Queryable, organizationId: string, filter: InboxFilter): Promise<EventRow[]> {
  // Not a named statement: with optional filters, a fresh plan per call picks the right index.
  const { rows } = await db.query<EventRow>({
    text: `SELECT ${COLUMNS} FROM events
           WHERE organization_id = $1 AND seq > $2
             AND ($3::text IS NULL OR status = $3)
             AND ($4::text IS NULL OR type = $4)
             AND ($5::timestamptz IS NULL OR created_at >= $5)
           ORDER BY seq
           LIMIT $6`,
    values: [organizationId, filter.afterSeq, filter.status, filter.type, filter.since, filter.limit + 1]
  })
  return rows
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
             ORDER BY seq
             LIMIT $4
             FOR UPDATE SKIP LOCKED
           )
           UPDATE events e
           SET lease_id = $2, leased_until = now() + make_interval(secs => $6), lease_count = e.lease_count + 1
           FROM available
           WHERE e.id = available.id
           RETURNING e.id, e.seq, e.type, e.payload, e.dedup_id, e.source, e.created_at, e.lease_count, e.leased_until`,
    values: [organizationId, request.leaseId, request.type, request.limit, request.maxLeases, request.leaseSeconds]
  })
  rows.sort((a, b) => Number(BigInt(a.seq) - BigInt(b.seq)))
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

/** The NOTIFY channel of new or newly available events; payloads are "<organization_id>:<count>". */
export const EVENTS_CHANNEL = 'triggers_events'

/** Wakes long polls and streams, on every instance, for events that arrived or became available again. */
export async function notifyEventsAvailable (db: Queryable, counts: Array<[organizationId: string, count: number]>): Promise<void> {
  await db.query({
    name: 'notify-events-available',
    text: 'SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload',
    values: [EVENTS_CHANNEL, counts.map(([organizationId, count]) => `${organizationId}:${count}`)]
  })
}
