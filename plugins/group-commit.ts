import fp from 'fastify-plugin'
import { createGroupCommit, type GroupCommit } from '../lib/group-commit.js'

declare module 'fastify' {
  interface FastifyInstance {
    groupCommit: GroupCommit
  }
}

/**
 * The one path by which new events reach the database: concurrent requests share INSERTs and commits, and
 * each commit is announced to long polls and streams. Closing writes what is still queued before the pool ends.
 */
export default fp(async (fastify) => {
  const groupCommit = createGroupCommit(fastify.pg, {
    waitMs: fastify.config.INGEST_GROUP_WAIT_MS,
    maxEvents: fastify.config.INGEST_GROUP_MAX_EVENTS,
    maxConcurrentGroups: fastify.config.INGEST_GROUP_CONCURRENCY,
    onCommitted: (inserted) => {
      const counts = new Map<string, number>()
      for (const event of inserted) counts.set(event.organization_id, (counts.get(event.organization_id) ?? 0) + 1)
      for (const [organizationId, count] of counts) fastify.eventSignals.announce(organizationId, count)
    }
  })
  fastify.decorate('groupCommit', groupCommit)
  fastify.addHook('onClose', async () => { await groupCommit.drain() })
}, { name: 'group-commit', dependencies: ['db', 'config', 'event-signals'] })
