import fp from 'fastify-plugin'
import { createDedupCache, type DedupCache } from '../../lib/dedup-cache.js'

declare module 'fastify' {
  interface FastifyInstance {
    dedup: DedupCache
  }
}

/** This process's cache of recent dedup_ids (lib/dedup-cache.ts), DEDUP_CACHE_SIZE entries. */
export default fp(async (fastify) => {
  fastify.decorate('dedup', createDedupCache(fastify.config.DEDUP_CACHE_SIZE))
}, { name: 'dedup', dependencies: ['config'] })
