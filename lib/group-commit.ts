import { findEventsByDedupKeys, insertEvents, type InsertedEvent, type NewEvent, type StoredEventRef } from '../db/events.js'
import type { Queryable } from '../db/queryable.js'
import { apiError } from './api-error.js'
import { dedupKey } from './dedup-cache.js'

export type IngestOutcome =
  | { status: 'accepted', event: InsertedEvent }
  | { status: 'duplicate', event: StoredEventRef }

export interface GroupCommitOptions {
  /** Longest a write waits for others to join it; 0 = only those arriving in the same event-loop turn. */
  waitMs: number
  /** A group closes at this many events (one write is never split, so a group may hold more). */
  maxEvents: number
  /** ...or at this many bytes of serialized events. */
  maxBytes: number
  /** Events waiting for a group before new writes are refused with 503 overloaded. */
  maxQueuedEvents: number
  /** How long the oldest waiting write may have waited before new writes are refused with 503 overloaded (0 = no limit). */
  maxQueueWaitMs: number
  /** Writes of a refused group retried alone at once (each holds a pool client). */
  isolatedRetryConcurrency: number
  /** Groups being written at once; later writes queue up and form the next, larger group. */
  maxConcurrentGroups: number
  /** Called after each commit with the events it inserted (not the duplicates) and the deliveries it queued. */
  onCommitted?: (inserted: NewEvent[], outboxRows: number) => void
  /** Called with the number of events of each group as it goes to the database (one INSERT). */
  onGroup?: (events: number) => void
}

export interface GroupCommitStats {
  groups: number
  events: number
  largest_group: number
  isolated_failures: number
  /** Writes refused with 503 overloaded: the queue was full, or behind. */
  overloaded: number
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
  /** The events as JSON array elements, serialized when the write was queued. */
  serialized: string
  resolve: (outcomes: IngestOutcome[]) => void
  reject: (error: unknown) => void
  /** performance.now() when it was queued. */
  queuedAt: number
}

/**
 * Serializes a write's events when it is queued: anything in it that JSON cannot take (a structure too deep
 * for the stack, a BigInt) fails this write with a 400 instead of the shared INSERT of its whole group.
 */
function serializeWrite (events: NewEvent[]): string {
  try {
    return events.map((event) => JSON.stringify(event)).join(',')
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error)
    throw apiError('badRequest', 'invalid_payload', `the event cannot be serialized as JSON: ${reason}`)
  }
}

// Seconds a client is asked to wait when the ingest queue is full: groups drain in milliseconds.
const OVERLOADED_RETRY_AFTER_SECONDS = 1

function overloaded (): Error {
  return Object.assign(apiError('serviceUnavailable', 'overloaded', 'Too many events are waiting to be stored; retry shortly'),
    { headers: { 'retry-after': String(OVERLOADED_RETRY_AFTER_SECONDS) } })
}

/** Runs `task` over `items` with at most `limit` running at once. */
async function forEachLimited<T> (items: T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  const lane = async () => {
    while (next < items.length) {
      const item = items[next++]
      if (item !== undefined) await task(item)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane))
}

// Errors caused by one row's data (22 data exception, 23 constraint, 54 limit exceeded) or by an unlucky
// interleaving (40 transaction rollback, e.g. a deadlock): worth retrying each write of the group alone.
const ISOLATABLE_SQLSTATE = /^(22|23|40|54)/

function isIsolatable (error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' && ISOLATABLE_SQLSTATE.test(code)
}

/**
 * Answers each write of a committed INSERT: inserted rows are accepted, rows skipped by ON CONFLICT are
 * resolved to their originals (also when the original came earlier in the same group). After the commit
 * nothing may be retried (that could store an event twice), so if looking the originals up fails, only the
 * writes that had duplicates fail; the others are answered.
 */
async function answer (db: Queryable, writes: PendingWrite[], inserted: Map<string, InsertedEvent>): Promise<void> {
  const isSkipped = (event: NewEvent) => !inserted.has(event.id)
  const withDuplicates = new Set(writes.filter((write) => write.events.some(isSkipped)))
  const originals = new Map<string, StoredEventRef>()
  let lookupError: unknown
  const skipped = [...withDuplicates].flatMap((write) => write.events).flatMap((event) =>
    !isSkipped(event) || event.dedup_id === null ? [] : [{ organization_id: event.organization_id, dedup_id: event.dedup_id }])
  if (skipped.length > 0) {
    try {
      for (const row of await findEventsByDedupKeys(db, skipped)) {
        const { organization_id: organizationId, ...original } = row
        originals.set(dedupKey(organizationId, row.dedup_id ?? ''), original)
      }
    } catch (error) {
      lookupError = error
    }
  }
  const outcomeOf = (event: NewEvent): IngestOutcome => {
    const stored = inserted.get(event.id)
    if (stored) return { status: 'accepted', event: stored }
    const original = event.dedup_id === null ? undefined : originals.get(dedupKey(event.organization_id, event.dedup_id))
    // Unreachable unless the unique constraint is gone: a skipped row always has an original.
    if (!original) throw new Error(`event ${event.id} was neither inserted nor a duplicate`)
    return { status: 'duplicate', event: original }
  }
  for (const write of writes) {
    if (lookupError !== undefined && withDuplicates.has(write)) {
      write.reject(lookupError)
      continue
    }
    try {
      write.resolve(write.events.map(outcomeOf))
    } catch (error) {
      write.reject(error)
    }
  }
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
  const totals: GroupCommitStats = { groups: 0, events: 0, largest_group: 0, isolated_failures: 0, overloaded: 0 }

  /** The oldest writes that fit in maxEvents and maxBytes (at least one), and how many events they hold. */
  const takeGroup = (): { group: PendingWrite[], size: number } => {
    let count = 0
    let size = 0
    let bytes = 0
    const fits = (write: PendingWrite) => size + write.events.length <= options.maxEvents && bytes + write.serialized.length <= options.maxBytes
    for (let write = queue[0]; write !== undefined && (count === 0 || fits(write)); write = queue[count]) {
      size += write.events.length
      bytes += write.serialized.length
      count++
    }
    const group = queue.slice(0, count)
    queue = queue.slice(count)
    queuedEvents -= size
    return { group, size }
  }

  /** One INSERT (one round trip, one commit) for all the writes' events; announces what it inserted. */
  const insertWrites = async (writes: PendingWrite[]): Promise<Map<string, InsertedEvent>> => {
    const result = await insertEvents(db, `[${writes.map((write) => write.serialized).join(',')}]`)
    const inserted = new Map(result.inserted.map((row) => [row.id, row]))
    if (inserted.size > 0) {
      const events = writes.flatMap((write) => write.events)
      options.onCommitted?.(events.filter((event) => inserted.has(event.id)), result.outboxRows)
    }
    return inserted
  }

  const writeAlone = async (write: PendingWrite) => {
    let inserted: Map<string, InsertedEvent>
    try {
      inserted = await insertWrites([write])
    } catch (error) {
      totals.isolated_failures++
      return write.reject(error)
    }
    await answer(db, [write], inserted)
  }

  const writeGroup = async (group: PendingWrite[]) => {
    let inserted: Map<string, InsertedEvent>
    try {
      inserted = await insertWrites(group)
    } catch (error) {
      // The statement failed as a whole; one bad write must not fail the others, so each is retried alone,
      // a few at a time so a burst of bad writes cannot take every pool client.
      if (group.length > 1 && isIsolatable(error)) await forEachLimited(group, options.isolatedRetryConcurrency, writeAlone)
      else for (const write of group) write.reject(error)
      return
    }
    await answer(db, group, inserted)
  }

  const flush = () => {
    scheduled?.cancel()
    scheduled = undefined
    while (queue.length > 0 && inFlight < options.maxConcurrentGroups) {
      const { group, size } = takeGroup()
      totals.groups++
      totals.events += size
      totals.largest_group = Math.max(totals.largest_group, size)
      options.onGroup?.(size)
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
      if (queuedEvents > 0 && queuedEvents + events.length > options.maxQueuedEvents) {
        totals.overloaded++
        return reject(overloaded())
      }
      // The queue is behind: its oldest write has waited longer than the bound. A write queued now would wait
      // as long and more, for a client that may give up before it is answered; refusing it lets the queue catch up.
      const now = performance.now()
      const oldest = queue[0]
      if (options.maxQueueWaitMs > 0 && oldest !== undefined && now - oldest.queuedAt > options.maxQueueWaitMs) {
        totals.overloaded++
        return reject(overloaded())
      }
      queue.push({ events, serialized: serializeWrite(events), resolve, reject, queuedAt: now })
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
