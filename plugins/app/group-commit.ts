import fp from 'fastify-plugin'
import { createGroupCommit, type GroupCommit } from '../../lib/group-commit.js'

declare module 'fastify' {
  interface FastifyInstance {
    groupCommit: GroupCommit
  }
}

/**
 * The one path by which new events reach the database (lib/group-commit.ts): concurrent requests share INSERTs
 * and commits, and each commit is announced to long polls, streams and delivery workers.
 */
export default fp(async (fastify) => {
  const groupCommit = createGroupCommit(fastify.pg, {
    waitMs: fastify.config.INGEST_GROUP_WAIT_MS,
    maxEvents: fastify.config.INGEST_GROUP_MAX_EVENTS,
    maxConcurrentGroups: fastify.config.INGEST_GROUP_CONCURRENCY,
    maxBytes: fastify.config.INGEST_GROUP_MAX_BYTES,
    maxQueuedEvents: fastify.config.INGEST_QUEUE_MAX_EVENTS,
    maxQueueWaitMs: fastify.config.INGEST_QUEUE_MAX_WAIT_MS,
    isolatedRetryConcurrency: fastify.config.INGEST_ISOLATED_RETRY_CONCURRENCY,
    onGroup: (events) => { fastify.metrics.observeGroupSize(events) },
    onCommitted: (inserted, outboxRows) => {
      const counts = new Map<string, number>()
      for (const event of inserted) counts.set(event.organization_id, (counts.get(event.organization_id) ?? 0) + 1)
      for (const [organizationId, count] of counts) fastify.wakeUps.announceEvents(organizationId, count)
      if (outboxRows > 0) fastify.wakeUps.announceDeliveries(outboxRows)
    }
  })
  fastify.decorate('groupCommit', groupCommit)
  // Registered after wake-ups, so this runs first on close: what is still queued is written and announced.
  fastify.addHook('onClose', async () => { await groupCommit.drain() })
}, { name: 'group-commit', dependencies: ['postgres', 'config', 'wake-ups', 'metrics'] })
