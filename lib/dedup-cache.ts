import { LRUCache } from 'lru-cache'
import type { StoredEventRef } from '../db/events.js'

export interface DedupCache {
  /** The stored event for this organization's dedup_id, if this process has seen it. */
  lookup: (organizationId: string, dedupId: string) => StoredEventRef | undefined
  remember: (organizationId: string, event: StoredEventRef) => void
  stats: () => { size: number, max_size: number, hits: number, misses: number }
}

/** The one spelling of "this organization's dedup_id" as a map key (NUL cannot occur in either part). */
export const dedupKey = (organizationId: string, dedupId: string): string => `${organizationId}\u0000${dedupId}`

/**
 * Answers repeated dedup_ids without a database round trip. Only a shortcut: the unique
 * (organization_id, dedup_id) constraint stays the authority, across processes too.
 */
export function createDedupCache (maxSize: number): DedupCache {
  const cache = new LRUCache<string, StoredEventRef>({ max: maxSize })
  let hits = 0
  let misses = 0
  return {
    lookup (organizationId, dedupId) {
      const found = cache.get(dedupKey(organizationId, dedupId))
      if (found) hits++
      else misses++
      return found
    },
    remember (organizationId, event) {
      if (event.dedup_id !== null) cache.set(dedupKey(organizationId, event.dedup_id), event)
    },
    stats: () => ({ size: cache.size, max_size: maxSize, hits, misses })
  }
}
