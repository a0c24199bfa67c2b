import type { Pool } from 'pg'
import type { LeasedEventRow } from '../db/events.js'
import {
  compactSubscription, findSubscription, leaseCounts, leasePending, readAhead,
  type PendingCounts, type StartPosition, type SubscriptionLeaseRequest, type SubscriptionRow
} from '../db/subscriptions.js'
import { inTransaction } from '../db/transaction.js'
import { apiError } from './api-error.js'
import { encodeCursor, parseCursor, parseInstant } from './positions.js'
import { keptFrom } from './retention.js'

/**
 * A start (or seek) position from the API: "now", "beginning", an RFC 3339 time, or a cursor from the inbox or a
 * subscription. A time before the oldest retained day is refused with that day, since its events are gone.
 */
export function parseStart (value: string, retentionDays: number, now = new Date()): StartPosition {
  if (value === 'now' || value === 'beginning') return { kind: value }
  const at = parseInstant(value)
  if (at !== undefined) {
    const oldest = keptFrom(now, retentionDays)
    if (oldest !== undefined && at.getTime() < oldest) {
      throw apiError('badRequest', 'start_before_retention', `Events are kept from ${new Date(oldest).toISOString()} (EVENT_RETENTION_DAYS=${retentionDays}); start at or after it`)
    }
    return { kind: 'time', at }
  }
  const position = parseCursor(value)
  if (position !== undefined) return { kind: 'cursor', position }
  throw apiError('badRequest', 'invalid_start', 'start must be "now", "beginning", an RFC 3339 date-time or a cursor from this API')
}

export function toSubscriptionBody (row: SubscriptionRow, pending: PendingCounts | undefined) {
  return {
    id: row.id,
    kind: row.kind,
    name: row.name,
    event_types: row.event_types,
    max_in_flight: row.max_in_flight,
    max_attempts: row.max_attempts,
    paused: row.paused,
    position: encodeCursor({ txid: row.floor_txid, seq: row.floor_seq }),
    pending: pending ?? { in_flight: 0, available: 0, dead: 0 },
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString()
  }
}

export const subscriptionNotFound = (id: string) => apiError('notFound', 'not_found', `Subscription ${id} not found`)

// A lease for one type reads ahead this many events at a time past other types, and stops once this many are
// available in all: the rest of the log waits for leases without a type (or for acks) rather than filling the table.
const TYPED_READ_AHEAD = 500
const MAX_AVAILABLE = 10_000

/**
 * One lease on a pull subscription, in one transaction holding its row: compacts its state, reads ahead in the
 * log when fewer events are available than the lease may take (up to max_in_flight leased at once), then leases
 * the first available ones. Holding the row serializes a subscription's leases, not its acks.
 */
export async function leaseFromSubscription (pool: Pool, organizationId: string, id: string, request: SubscriptionLeaseRequest): Promise<{ events: LeasedEventRow[], leasedUntil: Date | null }> {
  return await inTransaction(pool, async (client) => {
    const found = await findSubscription(client, organizationId, id, 'FOR UPDATE')
    if (!found) throw subscriptionNotFound(id)
    if (found.paused) throw apiError('conflict', 'subscription_paused', `Subscription ${id} is paused; resume it with PATCH {"paused": false}`)
    let subscription = await compactSubscription(client, found)
    const counts = await leaseCounts(client, subscription.id, request.type)
    const room = Math.min(request.limit, subscription.max_in_flight - counts.in_flight)
    if (room <= 0) return { events: [], leasedUntil: null }
    let { available, available_of_type: availableOfType } = counts
    while (availableOfType < room && available < MAX_AVAILABLE) {
      const want = request.type === null ? room - availableOfType : TYPED_READ_AHEAD
      const ahead = await readAhead(client, subscription, want, request.type)
      subscription = ahead.subscription
      available += ahead.read
      availableOfType += ahead.ofType
      if (ahead.read < want) break
    }
    return await leasePending(client, subscription, { ...request, limit: room })
  })
}

/** Compacts the subscription's state (so its position is current) under its row lock; undefined when not found. */
export async function currentSubscription (pool: Pool, organizationId: string, id: string): Promise<SubscriptionRow | undefined> {
  return await inTransaction(pool, async (client) => {
    const found = await findSubscription(client, organizationId, id, 'FOR UPDATE')
    return found && await compactSubscription(client, found)
  })
}
