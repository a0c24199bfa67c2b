import { findEventsByDedupKeys, insertEvents, type NewEvent, type StoredEventRef } from '../db/events.js'
import type { Queryable } from '../db/queryable.js'

export interface IngestOutcome {
  status: 'accepted' | 'duplicate'
  event: StoredEventRef
}

export interface GroupCommitOptions {
  /** Longest a write waits for others to join it; 0 = only those arriving in the same event-loop turn. */
  waitMs: number
  /** A group closes at this many events (one write is never split, so a group may hold more). */
  maxEvents: number
  /** Groups being written at once; later writes queue up and form the next, larger group. */
  maxConcurrentGroups: number
  /** Called after each commit with the events it inserted (not the duplicates) and the deliveries it queued. */
  onCommitted?: (inserted: NewEvent[], outboxRows: number) => void
}

export interface GroupCommitStats {
  groups: number
  events: number
  largest_group: number
  isolated_failures: number
}

export interface GroupCommit {
  /** Stores one request's new events; resolves, in their order, once the group holding them has committed. */
  write: (events: NewEvent[]) => Promise<IngestOutcome[]>
  /** Writes whatever is queued and resolves when no group is in flight. */
  drain: () => Promise<void>
  stats: () => GroupCommitStats
}

interface PendingWrite {
  events: NewEvent[]
  resolve: (outcomes: IngestOutcome[]) => void
  reject: (error: unknown) => void
}

// Errors caused by one row's data (22 data exception, 23 constraint, 54 limit exceeded) or by an unlucky
// interleaving (40 transaction rollback, e.g. a deadlock): worth retrying each write of the group alone.
const ISOLATABLE_SQLSTATE = /^(22|23|40|54)/

function isIsolatable (error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' && ISOLATABLE_SQLSTATE.test(code)
}

const dedupKey = (organizationId: string, dedupId: string) => `${organizationId}\u0000${dedupId}`

/**
 * Maps a committed INSERT back to each write: inserted rows are accepted, rows skipped by ON CONFLICT are
 * resolved to their originals (also when the original came earlier in the same group).
 */
async function outcomesOf (db: Queryable, writes: PendingWrite[], inserted: Map<string, StoredEventRef>): Promise<IngestOutcome[][]> {
  const skipped = writes.flatMap((write) => write.events).flatMap((event) =>
    inserted.has(event.id) || event.dedup_id === null ? [] : [{ organization_id: event.organization_id, dedup_id: event.dedup_id }])
  const originals = new Map(skipped.length === 0
    ? []
    : (await findEventsByDedupKeys(db, skipped)).map((row) => [dedupKey(row.organization_id, row.dedup_id ?? ''), row]))
  const outcomeOf = (event: NewEvent): IngestOutcome => {
    const stored = inserted.get(event.id)
    if (stored) return { status: 'accepted', event: stored }
    const original = event.dedup_id === null ? undefined : originals.get(dedupKey(event.organization_id, event.dedup_id))
    // Unreachable unless the unique constraint is gone: a skipped row always has an original.
    if (!original) throw new Error(`event ${event.id} was neither inserted nor a duplicate`)
    return { status: 'duplicate', event: { id: original.id, dedup_id: original.dedup_id, type: original.type, created_at: original.created_at } }
  }
  return writes.map((write) => write.events.map(outcomeOf))
}

/**
 * Group commit for event ingestion. A commit costs a WAL flush whatever it holds, so writes arriving
 * together (from concurrent requests) are stored by one multi-row INSERT and each request is answered when
 * that commit lands. Our own code because it is the heart of our ingest path, tied to our dedup semantics;
 * generic batching libraries do not know which failures may be retried per write.
 */
export function createGroupCommit (db: Queryable, options: GroupCommitOptions): GroupCommit {
  let queue: PendingWrite[] = []
  let queuedEvents = 0
  let scheduled: { cancel: () => void } | undefined
  let inFlight = 0
  let idleWaiters: Array<() => void> = []
  const totals: GroupCommitStats = { groups: 0, events: 0, largest_group: 0, isolated_failures: 0 }

  /** The oldest writes that fit in maxEvents (at least one), and how many events they hold. */
  const takeGroup = (): { group: PendingWrite[], size: number } => {
    let count = 0
    let size = 0
    while (count < queue.length && (count === 0 || size + (queue[count]?.events.length ?? 0) <= options.maxEvents)) {
      size += queue[count]?.events.length ?? 0
      count++
    }
    const group = queue.slice(0, count)
    queue = queue.slice(count)
    queuedEvents -= size
    return { group, size }
  }

  /** One INSERT (one round trip, one commit) for all the writes' events; announces what it inserted. */
  const insertWrites = async (writes: PendingWrite[]): Promise<Map<string, StoredEventRef>> => {
    const events = writes.flatMap((write) => write.events)
    const result = await insertEvents(db, events)
    const inserted = new Map(result.inserted.map((row) => [row.id, row]))
    if (inserted.size > 0) options.onCommitted?.(events.filter((event) => inserted.has(event.id)), result.outboxRows)
    return inserted
  }

  /** After the commit nothing may be retried (that could store an event twice): a failure fails the writes. */
  const answer = async (writes: PendingWrite[], inserted: Map<string, StoredEventRef>) => {
    try {
      const outcomes = await outcomesOf(db, writes, inserted)
      writes.forEach((write, index) => write.resolve(outcomes[index] ?? []))
    } catch (error) {
      for (const write of writes) write.reject(error)
    }
  }

  const writeAlone = async (write: PendingWrite) => {
    let inserted: Map<string, StoredEventRef>
    try {
      inserted = await insertWrites([write])
    } catch (error) {
      totals.isolated_failures++
      return write.reject(error)
    }
    await answer([write], inserted)
  }

  const writeGroup = async (group: PendingWrite[]) => {
    let inserted: Map<string, StoredEventRef>
    try {
      inserted = await insertWrites(group)
    } catch (error) {
      // The statement failed as a whole; one bad write must not fail the others, so each is retried alone.
      if (group.length > 1 && isIsolatable(error)) await Promise.all(group.map(writeAlone))
      else for (const write of group) write.reject(error)
      return
    }
    await answer(group, inserted)
  }

  const flush = () => {
    scheduled?.cancel()
    scheduled = undefined
    while (queue.length > 0 && inFlight < options.maxConcurrentGroups) {
      const { group, size } = takeGroup()
      totals.groups++
      totals.events += size
      totals.largest_group = Math.max(totals.largest_group, size)
      inFlight++
      void writeGroup(group).finally(() => {
        inFlight--
        // Writes that queued up meanwhile go at once: waiting for a free slot was their window.
        if (queue.length > 0) flush()
        else if (inFlight === 0) settleIdle()
      })
    }
  }

  const settleIdle = () => {
    const waiters = idleWaiters
    idleWaiters = []
    for (const wake of waiters) wake()
  }

  const schedule = () => {
    if (scheduled) return
    if (options.waitMs === 0) {
      const immediate = setImmediate(flush)
      scheduled = { cancel: () => clearImmediate(immediate) }
    } else {
      const timer = setTimeout(flush, options.waitMs)
      scheduled = { cancel: () => clearTimeout(timer) }
    }
  }

  return {
    write: (events) => new Promise<IngestOutcome[]>((resolve, reject) => {
      if (events.length === 0) return resolve([])
      queue.push({ events, resolve, reject })
      queuedEvents += events.length
      if (queuedEvents >= options.maxEvents) flush()
      else schedule()
    }),
    drain: async () => {
      flush()
      if (inFlight === 0 && queue.length === 0) return
      await new Promise<void>((resolve) => idleWaiters.push(resolve))
    },
    stats: () => ({ ...totals })
  }
}
