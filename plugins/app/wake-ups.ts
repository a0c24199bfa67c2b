import fp from 'fastify-plugin'
import { notifyDeliveriesQueued, notifyEventsAvailable } from '../../db/wake-ups.js'
import { createCoalescedNotifier } from '../../lib/wake-ups/coalesced-notify.js'
import { createEventArrivals, type EventArrivals } from '../../lib/wake-ups/event-arrivals.js'
import { createListener, type WakeUpListener } from '../../lib/wake-ups/listener.js'

export interface WakeUps extends WakeUpListener, EventArrivals {
  /** Tells every instance that `count` events became available to the organization (coalesced). */
  announceEvents: (organizationId: string, count: number) => void
  /** Wakes every delivery worker: new deliveries were committed (coalesced). */
  announceDeliveries: (count: number) => void
}

declare module 'fastify' {
  interface FastifyInstance {
    wakeUps: WakeUps
  }
}

// Listeners hear of new work at most this much after it commits; a busy system sends a few NOTIFYs a second, not one per commit.
const ANNOUNCE_DELAY_MS = 20

/**
 * The process's one wake-up path: one reconnecting LISTEN connection (lib/wake-ups/listener.ts) serving every
 * channel — key-cache invalidation, new events for long polls and streams, new deliveries for the worker — and
 * the coalesced NOTIFYs that announce this process's commits to every instance.
 */
export default fp<{ databaseUrl: string, applicationName: string }>(async (fastify, { databaseUrl, applicationName }) => {
  const listener = createListener({
    connectionString: databaseUrl,
    applicationName,
    log: { warn: (details, message) => fastify.log.warn(details, message), info: (message) => fastify.log.info(message) }
  })
  const arrivals = createEventArrivals(listener)
  const warn = (what: string) => (error: unknown) => fastify.log.warn({ err: error }, what)
  const events = createCoalescedNotifier((counts) => notifyEventsAvailable(fastify.pg, counts), ANNOUNCE_DELAY_MS, warn('could not announce new events'))
  const deliveries = createCoalescedNotifier(() => notifyDeliveriesQueued(fastify.pg), ANNOUNCE_DELAY_MS, warn('could not wake the delivery workers; they will poll'))

  fastify.decorate<WakeUps>('wakeUps', {
    listen: listener.listen,
    onConnect: listener.onConnect,
    get connected () { return listener.connected },
    nextArrival: arrivals.nextArrival,
    subscribe: arrivals.subscribe,
    get waiting () { return arrivals.waiting },
    closing: arrivals.closing,
    close: arrivals.close,
    announceEvents: events.add,
    announceDeliveries: (count) => { deliveries.add('', count) }
  })
  fastify.addHook('onReady', listener.start)
  // preClose runs before the server waits for in-flight requests, so waiting long polls end promptly.
  fastify.addHook('preClose', async () => { arrivals.close() })
  // Runs before the pool closes (registered after it): announcements still pending go out; the listener closes last.
  fastify.addHook('onClose', async () => {
    await Promise.all([events.flush(), deliveries.flush()])
    await listener.close()
  })
}, { name: 'wake-ups', dependencies: ['postgres'] })
