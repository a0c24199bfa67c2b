import type { Queryable } from './queryable.js'

export interface NewEvent {
  id: string
  type: string
  payload: Record<string, unknown>
  dedup_id: string | null
  source: string | null
}

export interface EventRow {
  id: string
  seq: string
  type: string
  payload: Record<string, unknown>
  dedup_id: string | null
  source: string | null
  status: 'pending' | 'acknowledged'
  created_at: Date
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
 * Inserts many events in one statement. Rows whose dedup_id already exists for the organization (or
 * repeats earlier in the same call) are skipped; only inserted rows are returned.
 */
export async function insertEvents (db: Queryable, organizationId: string, events: NewEvent[]): Promise<StoredEventRef[]> {
  const { rows } = await db.query<StoredEventRef>({
    name: 'insert-events',
    text: `INSERT INTO events (id, organization_id, type, payload, dedup_id, source)
           SELECT e.id, $1, e.type, e.payload, e.dedup_id, e.source
           FROM unnest($2::uuid[], $3::text[], $4::jsonb[], $5::text[], $6::text[]) AS e (id, type, payload, dedup_id, source)
           ON CONFLICT (organization_id, dedup_id) DO NOTHING
           RETURNING id, dedup_id, type, created_at`,
    values: [
      organizationId,
      events.map((event) => event.id),
      events.map((event) => event.type),
      events.map((event) => JSON.stringify(event.payload)),
      events.map((event) => event.dedup_id),
      events.map((event) => event.source)
    ]
  })
  return rows
}

export async function findEventsByDedupIds (db: Queryable, organizationId: string, dedupIds: string[]): Promise<StoredEventRef[]> {
  const { rows } = await db.query<StoredEventRef>({
    name: 'events-by-dedup-ids',
    text: 'SELECT id, dedup_id, type, created_at FROM events WHERE organization_id = $1 AND dedup_id = ANY($2::text[])',
    values: [organizationId, dedupIds]
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
    text: `UPDATE events SET status = 'acknowledged', acknowledged_at = coalesce(acknowledged_at, now())
           WHERE organization_id = $1 AND id = ANY($2::uuid[])
           RETURNING id, acknowledged_at`,
    values: [organizationId, ids]
  })
  return rows
}
