import fp from 'fastify-plugin'
import { notifyDeliveriesQueued } from '../../db/deliveries.js'
import { createCoalescedNotifier } from '../../lib/wake-ups/coalesced-notify.js'
import { createGroupCommit, type GroupCommit } from '../../lib/group-commit.js'

// Delivery workers hear of new deliveries at most this much after they commit (else at their next poll).
const WAKE_WORKERS_DELAY_MS = 20

declare module 'fastify' {
  interface FastifyInstance {
    groupCommit: GroupCommit
  }
}

/**
 * The one path by which new events reach the database: concurrent requests share INSERTs and commits, and
 * each commit is announced to long polls, streams and delivery workers. Closing writes what is still queued before the pool ends.
 */
export default fp(async (fastify) => {
  const deliveriesQueued = createCoalescedNotifier(
    () => notifyDeliveriesQueued(fastify.pg),
    WAKE_WORKERS_DELAY_MS,
    (error) => fastify.log.warn({ err: error }, 'could not wake the delivery workers; they will poll'))
  const groupCommit = createGroupCommit(fastify.pg, {
    waitMs: fastify.config.INGEST_GROUP_WAIT_MS,
    maxEvents: fastify.config.INGEST_GROUP_MAX_EVENTS,
    maxConcurrentGroups: fastify.config.INGEST_GROUP_CONCURRENCY,
    maxBytes: fastify.config.INGEST_GROUP_MAX_BYTES,
    maxQueuedEvents: fastify.config.INGEST_QUEUE_MAX_EVENTS,
    isolatedRetryConcurrency: fastify.config.INGEST_ISOLATED_RETRY_CONCURRENCY,
    onGroup: (events) => { fastify.metrics.observeGroupSize(events) },
    onCommitted: (inserted, outboxRows) => {
      const counts = new Map<string, number>()
      for (const event of inserted) counts.set(event.organization_id, (counts.get(event.organization_id) ?? 0) + 1)
      for (const [organizationId, count] of counts) fastify.eventSignals.announce(organizationId, count)
      if (outboxRows > 0) deliveriesQueued.add('', outboxRows)
    }
  })
  fastify.decorate('groupCommit', groupCommit)
  // Registered after event signals, so this runs first on close: the last commits are still announced.
  fastify.addHook('onClose', async () => {
    await groupCommit.drain()
    await deliveriesQueued.flush()
  })
}, { name: 'group-commit', dependencies: ['db', 'config', 'event-signals', 'metrics'] })
