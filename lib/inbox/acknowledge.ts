import { acknowledgeEvents } from '../../db/events.js'
import type { Queryable } from '../../db/queryable.js'
import { apiError } from '../api-error.js'

/** Acknowledges one event of the organization (idempotent); 404 when it has no such event. */
export async function acknowledgeOne (db: Queryable, organizationId: string, eventId: string) {
  const [row] = await acknowledgeEvents(db, organizationId, [eventId])
  if (!row) throw apiError('notFound', 'not_found', `Event ${eventId} not found`)
  return { event_id: row.id, status: 'acknowledged' as const, acknowledged_at: row.acknowledged_at.toISOString() }
}
