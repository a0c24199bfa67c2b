import fp from 'fastify-plugin'
import { LRUCache } from 'lru-cache'
import type { StoredEventRef } from '../../db/events.js'

export interface DedupCache {
  /** The stored event for this organization's dedup_id, if this process has seen it. */
  lookup: (organizationId: string, dedupId: string) => StoredEventRef | undefined
  remember: (organizationId: string, event: StoredEventRef) => void
  stats: () => { size: number, max_size: number, hits: number, misses: number }
}

declare module 'fastify' {
  interface FastifyInstance {
    dedup: DedupCache
  }
}

/**
 * Answers repeated dedup_ids without a database round trip. The cache is only a shortcut: the unique
 * (organization_id, dedup_id) constraint stays the authority, across processes too.
 */
export default fp(async (fastify) => {
  const maxSize = fastify.config.DEDUP_CACHE_SIZE
  const cache = new LRUCache<string, StoredEventRef>({ max: maxSize })
  let hits = 0
  let misses = 0
  const keyOf = (organizationId: string, dedupId: string) => `${organizationId}\u0000${dedupId}`

  fastify.decorate<DedupCache>('dedup', {
    lookup (organizationId, dedupId) {
      const found = cache.get(keyOf(organizationId, dedupId))
      if (found) hits++
      else misses++
      return found
    },
    remember (organizationId, event) {
      if (event.dedup_id !== null) cache.set(keyOf(organizationId, event.dedup_id), event)
    },
    stats: () => ({ size: cache.size, max_size: maxSize, hits, misses })
  })
}, { name: 'dedup', dependencies: ['config'] })
