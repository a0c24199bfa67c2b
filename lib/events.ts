import { randomUUID } from 'node:crypto'
import {
  findEventsByDedupIds, insertEvents, type EventFields, type EventRow, type LeasedEventRow, type NewEvent, type StoredEventRef
} from '../db/events.js'
import type { Queryable } from '../db/queryable.js'
import type { DedupCache } from '../plugins/dedup.js'
import type { Event, EventInput } from '../schemas/events.js'

export interface IngestOutcome {
  status: 'accepted' | 'duplicate'
  event: StoredEventRef
}

/**
 * Stores events for one organization and says, for each input in order, whether it was new or a
 * duplicate of an earlier dedup_id (with the original event). Everything new is written by one INSERT.
 */
export async function ingestEvents (db: Queryable, dedup: DedupCache, organizationId: string, inputs: EventInput[]): Promise<IngestOutcome[]> {
  const cached = inputs.map((input) => input.dedup_id === undefined ? undefined : dedup.lookup(organizationId, input.dedup_id))
  const fresh = inputs.flatMap((input, index) => cached[index] ? [] : [{ index, event: newEvent(input) }])
  const stored = fresh.length === 0 ? [] : await storeEvents(db, organizationId, fresh.map(({ event }) => event))
  const storedByIndex = new Map(fresh.map(({ index }, position) => [index, stored[position]]))
  return inputs.map((_, index) => {
    const hit = cached[index]
    const outcome: IngestOutcome | undefined = hit ? { status: 'duplicate', event: hit } : storedByIndex.get(index)
    if (!outcome) throw new Error(`no outcome for event ${index}`)
    if (!hit) dedup.remember(organizationId, outcome.event)
    return outcome
  })
}

/** Inserts the events; those skipped for an existing dedup_id are resolved to their originals. Same order. */
async function storeEvents (db: Queryable, organizationId: string, events: NewEvent[]): Promise<IngestOutcome[]> {
  const inserted = new Map((await insertEvents(db, organizationId, events)).map((row) => [row.id, row]))
  const conflicting = events.flatMap((event) => inserted.has(event.id) || event.dedup_id === null ? [] : [event.dedup_id])
  const originals = conflicting.length === 0
    ? new Map<string | null, StoredEventRef>()
    : new Map((await findEventsByDedupIds(db, organizationId, conflicting)).map((row) => [row.dedup_id, row]))
  return events.map((event) => {
    const stored = inserted.get(event.id)
    if (stored) return { status: 'accepted', event: stored }
    const original = originals.get(event.dedup_id)
    // Unreachable unless the unique constraint is gone: a skipped row always has an original.
    if (!original) throw new Error(`event ${event.id} was neither inserted nor a duplicate`)
    return { status: 'duplicate', event: original }
  })
}

function newEvent (input: EventInput): NewEvent {
  return {
    id: randomUUID(),
    type: input.type,
    payload: input.payload,
    dedup_id: input.dedup_id ?? null,
    source: input.source ?? null
  }
}

function commonEventBody (row: EventFields) {
  return {
    event_id: row.id,
    type: row.type,
    payload: row.payload,
    dedup_id: row.dedup_id,
    source: row.source,
    created_at: row.created_at.toISOString()
  }
}

export function toEventBody (row: EventRow): Event {
  return { ...commonEventBody(row), status: row.status, acknowledged_at: row.acknowledged_at?.toISOString() ?? null }
}

export function toLeasedEventBody (row: LeasedEventRow) {
  return { ...commonEventBody(row), lease_count: row.lease_count }
}

const storable = (text: string) => text.isWellFormed() && !text.includes('\u0000')

/** False when a string (key or value) holds U+0000 or an unpaired surrogate, which jsonb cannot store. */
export function isStorableJson (value: unknown): boolean {
  if (typeof value === 'string') return storable(value)
  if (Array.isArray(value)) return value.every(isStorableJson)
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).every(([key, item]) => storable(key) && isStorableJson(item))
  }
  return true
}

/** Ids as PostgreSQL returns them (lower case), each once, so answers can be matched against requests. */
export function normalizeIds (ids: string[]): string[] {
  return [...new Set(ids.map((id) => id.toLowerCase()))]
}
