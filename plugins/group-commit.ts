import fp from 'fastify-plugin'
import { createGroupCommit, type GroupCommit } from '../lib/group-commit.js'

declare module 'fastify' {
  interface FastifyInstance {
    groupCommit: GroupCommit
  }
}

/**
 * The one path by which new events reach the database: concurrent requests share INSERTs and commits.
 * Closing writes what is still queued before the pool ends.
 */
export default fp(async (fastify) => {
  const groupCommit = createGroupCommit(fastify.pg, {
    waitMs: fastify.config.INGEST_GROUP_WAIT_MS,
    maxEvents: fastify.config.INGEST_GROUP_MAX_EVENTS,
    maxConcurrentGroups: fastify.config.INGEST_GROUP_CONCURRENCY
  })
  fastify.decorate('groupCommit', groupCommit)
  fastify.addHook('onClose', async () => { await groupCommit.drain() })
}, { name: 'group-commit', dependencies: ['db', 'config'] })
