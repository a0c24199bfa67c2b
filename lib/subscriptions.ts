import type { Pool, PoolClient } from 'pg'
import type { LeasedEventRow } from '../db/events.js'
import { insertReplay, readingReplays, readReplayAhead, type ReplayRow } from '../db/subscription-replays.js'
import {
  compactForLease, compactSubscription, findSubscription, leasePending, readAhead, redriveDeadLetters, spendRateTokens,
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
    rate_limit_per_second: row.rate_limit_per_second,
    paused: row.paused,
    position: encodeCursor({ txid: row.floor_txid, seq: row.floor_seq }),
    position_expired: row.position_expired_at !== null,
    position_expired_at: row.position_expired_at?.toISOString() ?? null,
    retry_schedule: row.retry_schedule,
    pending: pending ?? { in_flight: 0, available: 0, retrying: 0, dead: 0 },
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString()
  }
}

export const subscriptionNotFound = (id: string) => apiError('notFound', 'not_found', `Subscription ${id} not found`)

// A lease for one type reads ahead this many events at a time past other types, and stops once this many are
// available in all: the rest of the log waits for leases without a type (or for acks) rather than filling the table.
const TYPED_READ_AHEAD = 500
const MAX_AVAILABLE = 10_000

/** What a lease found; when the rate cap held it back, how soon a token is there to look again. */
export interface SubscriptionLease {
  events: LeasedEventRow[]
  leasedUntil: Date | null
  lookAgainInMs?: number
}

/**
 * One lease on a pull subscription, in one transaction holding its row: compacts its state, reads ahead when
 * fewer events are available than the lease may take (up to max_in_flight leased at once, and the tokens of its
 * rate cap), then leases the first available ones. Holding the row serializes a subscription's leases, not its acks.
 */
export async function leaseFromSubscription (pool: Pool, organizationId: string, id: string, request: SubscriptionLeaseRequest): Promise<SubscriptionLease> {
  return await inTransaction(pool, async (client) => {
    const found = await findSubscription(client, organizationId, id, 'FOR UPDATE')
    if (!found) throw subscriptionNotFound(id)
    if (found.paused) throw apiError('conflict', 'subscription_paused', `Subscription ${id} is paused; resume it with PATCH {"paused": false}`)
    const compacted = await compactForLease(client, found, request.type)
    const { counts, tokens } = compacted
    let { subscription } = compacted
    const room = Math.min(request.limit, subscription.max_in_flight - counts.in_flight, tokens === null ? Infinity : Math.floor(tokens))
    if (room <= 0) {
      const cap = subscription.rate_limit_per_second
      const rateBound = tokens !== null && tokens < 1 && cap !== null
      return { events: [], leasedUntil: null, ...(rateBound ? { lookAgainInMs: Math.ceil((1 - tokens) * 1000 / cap) } : {}) }
    }
    subscription = await readUntilAvailable(client, subscription, room, counts, request.type)
    const leased = await leasePending(client, subscription, { ...request, limit: room })
    if (tokens !== null && leased.events.length > 0) await spendRateTokens(client, subscription.id, leased.events.length)
    // Nothing now, but an event waiting out its retry schedule: a waiting lease looks again when it is due.
    if (leased.events.length === 0 && counts.next_retry_in_ms !== null) return { ...leased, lookAgainInMs: Math.max(1, counts.next_retry_in_ms) }
    return leased
  })
}

/**
 * Reads ahead until `room` events (of the lease's type) are available: the live log first, then the replays still
 * reading, oldest first, so a replay never holds back what arrives now.
 */
async function readUntilAvailable (client: PoolClient, subscription: SubscriptionRow, room: number, counts: { available: number, available_of_type: number }, type: string | null): Promise<SubscriptionRow> {
  let { available, available_of_type: availableOfType } = counts
  let liveRead = false
  let replays: ReplayRow[] | undefined
  while (availableOfType < room && available < MAX_AVAILABLE) {
    const want = type === null ? room - availableOfType : TYPED_READ_AHEAD
    let read: number
    let ofType: number
    if (!liveRead) {
      const ahead = await readAhead(client, subscription, want, type)
      subscription = ahead.subscription
      ;({ read, ofType } = ahead)
      liveRead = read < want
    } else {
      replays ??= await readingReplays(client, subscription.id)
      const replay = replays[0]
      if (!replay) break
      const ahead = await readReplayAhead(client, subscription, replay.id, want, type)
      ;({ read, ofType } = ahead)
      if (ahead.complete) replays.shift()
    }
    available += read
    availableOfType += ofType
  }
  return subscription
}

/**
 * After acks: compacts the subscription's state unless a lease or another compaction holds its row (which
 * compacts it anyway), so an ack never waits behind a lease.
 */
export async function compactWhenFree (pool: Pool, organizationId: string, id: string): Promise<void> {
  await inTransaction(pool, async (client) => {
    const found = await findSubscription(client, organizationId, id, 'FOR UPDATE SKIP LOCKED')
    if (found) await compactSubscription(client, found)
  })
}

/** Compacts the subscription's state (so its position is current) under its row lock; undefined when not found. */
export async function currentSubscription (pool: Pool, organizationId: string, id: string): Promise<SubscriptionRow | undefined> {
  return await inTransaction(pool, async (client) => {
    const found = await findSubscription(client, organizationId, id, 'FOR UPDATE')
    return found && await compactSubscription(client, found)
  })
}

/**
 * Dead letters (all, or those listed) back to available, under the subscription's row lock and after a compaction
 * (so leases that just ran out their attempts are among them); how many. Undefined when the subscription is not found.
 */
export async function redriveSubscription (pool: Pool, organizationId: string, id: string, ids: string[] | null): Promise<number | undefined> {
  return await inTransaction(pool, async (client) => {
    const found = await findSubscription(client, organizationId, id, 'FOR UPDATE')
    if (!found) return undefined
    await compactSubscription(client, found)
    return await redriveDeadLetters(client, found.id, ids)
  })
}

/**
 * A replay's range from the API: two RFC 3339 times, `from` before `to` and not before the oldest retained day. A
 * `to` in the future means now: what arrives later reaches the subscription anyway.
 */
export function parseReplayRange (from: string, to: string, retentionDays: number, now = new Date()): { from: Date, to: Date } {
  const start = parseInstant(from)
  const end = parseInstant(to)
  if (start === undefined || end === undefined) throw apiError('badRequest', 'invalid_range', 'from and to must be RFC 3339 date-times')
  const oldest = keptFrom(now, retentionDays)
  if (oldest !== undefined && start.getTime() < oldest) {
    throw apiError('badRequest', 'start_before_retention', `Events are kept from ${new Date(oldest).toISOString()} (EVENT_RETENTION_DAYS=${retentionDays}); replay from it or later`)
  }
  const until = new Date(Math.min(end.getTime(), now.getTime()))
  if (start.getTime() >= until.getTime()) throw apiError('badRequest', 'invalid_range', 'from must be before to, and before now')
  return { from: start, to: until }
}

export interface ReplayLimits {
  /** Replays of one subscription still reading at once. */
  maxReading: number
  /** Events one replay may cover. */
  maxEvents: number
}

/** Starts a replay of the range on the subscription, or refuses it (404, 409 too many, 400 too large). */
export async function startReplay (pool: Pool, organizationId: string, id: string, range: { from: Date, to: Date }, limits: ReplayLimits): Promise<ReplayRow> {
  const made = await inTransaction(pool, async (client) => {
    const subscription = await findSubscription(client, organizationId, id, 'FOR UPDATE')
    if (!subscription) throw subscriptionNotFound(id)
    return await insertReplay(client, subscription, range.from, range.to, limits.maxReading, limits.maxEvents)
  })
  if ('replay' in made) return made.replay
  if (made.refused === 'too_many_replays') {
    throw apiError('conflict', 'too_many_replays', `${made.reading} replays of this subscription are still reading (at most ${limits.maxReading}); wait for one or cancel it`)
  }
  throw apiError('badRequest', 'replay_too_large', `The range holds more than ${limits.maxEvents} matching events; replay a shorter range`)
}

export function toReplayBody (row: ReplayRow) {
  const status = row.cancelled_at !== null ? 'cancelled' : row.read_complete && row.pending === 0 ? 'finished' : 'running'
  return {
    replay_id: row.id,
    subscription_id: row.subscription_id,
    from: row.from_at.toISOString(),
    to: row.to_at.toISOString(),
    // A transaction that committed late can add an event to the range after it was counted.
    total: Math.max(row.total, row.read),
    done: Math.max(0, row.read - row.pending),
    status: status as 'running' | 'finished' | 'cancelled',
    created_at: row.created_at.toISOString()
  }
}

export const replayNotFound = (id: string) => apiError('notFound', 'not_found', `Replay ${id} not found`)
