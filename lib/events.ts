import { randomUUID } from 'node:crypto'
import { findEventsByDedupIds, insertEvents, type EventRow, type NewEvent, type StoredEventRef } from '../db/events.js'
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
  const outcomes: Array<IngestOutcome | undefined> = inputs.map((input) => {
    const cached = input.dedup_id === undefined ? undefined : dedup.lookup(organizationId, input.dedup_id)
    return cached && { status: 'duplicate', event: cached }
  })
  const fresh = inputs.flatMap((input, index) => outcomes[index] ? [] : [{ index, event: newEvent(input) }])
  if (fresh.length === 0) return outcomes as IngestOutcome[]

  const inserted = new Map((await insertEvents(db, organizationId, fresh.map(({ event }) => event))).map((row) => [row.id, row]))
  const conflicting = fresh.flatMap(({ event }) => inserted.has(event.id) || event.dedup_id === null ? [] : [event.dedup_id])
  const originals = conflicting.length === 0
    ? new Map<string | null, StoredEventRef>()
    : new Map((await findEventsByDedupIds(db, organizationId, conflicting)).map((row) => [row.dedup_id, row]))

  for (const { index, event } of fresh) {
    const stored = inserted.get(event.id)
    const original = originals.get(event.dedup_id)
    const outcome: IngestOutcome | undefined = stored ? { status: 'accepted', event: stored } : original && { status: 'duplicate', event: original }
    // Unreachable unless the unique constraint is gone: a skipped row always has an original.
    if (!outcome) throw new Error(`event ${event.id} was neither inserted nor a duplicate`)
    dedup.remember(organizationId, outcome.event)
    outcomes[index] = outcome
  }
  return outcomes as IngestOutcome[]
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

export function toEventBody (row: EventRow): Event {
  return {
    event_id: row.id,
    type: row.type,
    payload: row.payload,
    dedup_id: row.dedup_id,
    source: row.source,
    status: row.status,
    created_at: row.created_at.toISOString(),
    acknowledged_at: row.acknowledged_at?.toISOString() ?? null
  }
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
