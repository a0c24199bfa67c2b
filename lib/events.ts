import { randomUUID } from 'node:crypto'
import type { EventFields, EventRow, LeasedEventRow, NewEvent } from '../db/events.js'
import type { GroupCommit, IngestOutcome } from './group-commit.js'
import type { DedupCache } from './dedup-cache.js'
import type { Event, EventInput } from '../schemas/events.js'

/**
 * Stores events for one organization and says, for each input in order, whether it was new or a duplicate
 * of an earlier dedup_id (with the original event). Known dedup_ids are answered from the cache; the rest
 * go to the group commit together.
 */
export async function ingestEvents (groupCommit: GroupCommit, dedup: DedupCache, organizationId: string, inputs: EventInput[]): Promise<IngestOutcome[]> {
  const cached = inputs.map((input) => input.dedup_id === undefined ? undefined : dedup.lookup(organizationId, input.dedup_id))
  const fresh = inputs.flatMap((input, index) => cached[index] ? [] : [{ index, event: newEvent(organizationId, input) }])
  const stored = await groupCommit.write(fresh.map(({ event }) => event))
  const storedByIndex = new Map(fresh.map(({ index }, position) => [index, stored[position]]))
  return inputs.map((_, index) => {
    const hit = cached[index]
    const outcome: IngestOutcome | undefined = hit ? { status: 'duplicate', event: hit } : storedByIndex.get(index)
    if (!outcome) throw new Error(`no outcome for event ${index}`)
    if (!hit) dedup.remember(organizationId, outcome.event)
    return outcome
  })
}

function newEvent (organizationId: string, input: EventInput): NewEvent {
  return {
    id: randomUUID(),
    organization_id: organizationId,
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
  return {
    ...commonEventBody(row),
    status: row.status,
    delivery_status: row.delivery_status,
    acknowledged_at: row.acknowledged_at?.toISOString() ?? null
  }
}

function toLeasedEventBody (row: LeasedEventRow) {
  return { ...commonEventBody(row), status: 'pending' as const, delivery_status: row.delivery_status, lease_count: row.lease_count }
}

/** A lease call's answer: the lease id only when it leased something. */
export function toLeaseBody (leaseId: string, { events, leasedUntil }: { events: LeasedEventRow[], leasedUntil: Date | null }) {
  return {
    lease_id: events.length > 0 ? leaseId : null,
    leased_until: leasedUntil?.toISOString() ?? null,
    events: events.map(toLeasedEventBody)
  }
}

/**
 * True when objects and arrays in `value` nest deeper than `maxDepth` (the value itself is level 1). Walks
 * with its own stack, so a hostile payload nested thousands deep cannot overflow the call stack here.
 */
export function nestsDeeperThan (value: unknown, maxDepth: number): boolean {
  const pending: Array<[item: unknown, depth: number]> = [[value, 1]]
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [item, depth] = next
    if (item === null || typeof item !== 'object') continue
    if (depth > maxDepth) return true
    for (const child of Array.isArray(item) ? item : Object.values(item)) {
      if (child !== null && typeof child === 'object') pending.push([child, depth + 1])
    }
  }
  return false
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
