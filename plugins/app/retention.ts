import fp from 'fastify-plugin'
import { maintainPartitions, type MaintenanceResult, type RetentionSettings } from '../../lib/retention.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Runs partition maintenance now (or at `now`, for tests); see lib/retention.ts. */
    maintainPartitions: (now?: Date) => Promise<MaintenanceResult>
  }
}

// Partitions exist this many days ahead: inserts keep working through a week without maintenance.
const AHEAD_DAYS = 7
const LOCK_TIMEOUT_MS = 2000

/**
 * Retention: partition maintenance at start-up, before the first request, and then every
 * RETENTION_MAINTENANCE_INTERVAL_SECONDS, in every API instance (one at a time does the work, under an advisory
 * lock). A failed run is logged; partitions made ahead keep inserts working until a later run succeeds.
 */
export default fp(async (fastify) => {
  const settings: RetentionSettings = {
    eventDays: fastify.config.EVENT_RETENTION_DAYS,
    attemptDays: fastify.config.DELIVERY_ATTEMPT_RETENTION_DAYS,
    aheadDays: AHEAD_DAYS,
    lockTimeoutMs: LOCK_TIMEOUT_MS
  }
  const maintain = async (now?: Date) => {
    const result = await maintainPartitions(fastify.pg.pool, settings, now)
    if (result.created.length > 0 || result.dropped.length > 0) {
      fastify.log.info({ created: result.created, dropped: result.dropped }, 'partitions maintained')
    }
    return result
  }
  fastify.decorate('maintainPartitions', maintain)

  let running: Promise<unknown> = Promise.resolve()
  const runLogged = () => maintain().catch((error: unknown) => fastify.log.error({ err: error }, 'partition maintenance failed'))
  await runLogged()
  const timer = setInterval(() => { running = runLogged() }, fastify.config.RETENTION_MAINTENANCE_INTERVAL_SECONDS * 1000).unref()
  // Registered after the pool: runs before it closes, so a run under way finishes first.
  fastify.addHook('onClose', async () => {
    clearInterval(timer)
    await running
  })
}, { name: 'retention', dependencies: ['postgres', 'config'] })
