import fp from 'fastify-plugin'
import { EventEmitter, once, setMaxListeners } from 'node:events'
import { EVENTS_CHANNEL, notifyEventsAvailable } from '../../db/events.js'
import { createCoalescedNotifier } from './coalesced-notify.js'

export interface EventSignals {
  /**
   * Resolves true when events arrive for the organization, false at the timeout, when `signal` aborts or
   * when the server shuts down. Call it before checking the database so an arrival in between is not missed.
   */
  nextArrival: (organizationId: string, timeoutMs: number, signal: AbortSignal) => Promise<boolean>
  /** Calls `listener` with the number of new events each time some arrive; returns the unsubscribe function. */
  subscribe: (organizationId: string, listener: (count: number) => void) => () => void
  /**
   * Tells every instance that `count` events became available to the organization. Sent after a short
   * coalescing delay, so a busy organization costs a few NOTIFYs per second, not one per commit.
   */
  announce: (organizationId: string, count: number) => void
  /** Aborted when the server starts closing: long polls and streams end. */
  closing: AbortSignal
}

declare module 'fastify' {
  interface FastifyInstance {
    eventSignals: EventSignals
  }
}

// Long polls and streams wake at most this much after an event commits.
const ANNOUNCE_DELAY_MS = 20

/**
 * Announces new events to every instance (one NOTIFY statement for all organizations with news) and fans
 * the announcements it hears out to long polls and streams in this process, per organization.
 */
export default fp(async (fastify) => {
  const arrivals = new EventEmitter()
  arrivals.setMaxListeners(0)
  const closing = new AbortController()
  // Every open stream listens on it (up to INBOX_STREAMS_PER_ORGANIZATION per organization): not a leak.
  setMaxListeners(0, closing.signal)

  fastify.notifications.listen(EVENTS_CHANNEL, (payload) => {
    const [organizationId, count] = payload.split(':')
    if (organizationId) arrivals.emit(organizationId, Number(count) || 1)
  })
  // Announcements sent while the listener was down are lost: every waiter looks again once it is back.
  fastify.notifications.onConnect(() => {
    for (const organizationId of arrivals.eventNames()) arrivals.emit(organizationId, 0)
  })

  const announcements = createCoalescedNotifier(
    (counts) => notifyEventsAvailable(fastify.pg, counts),
    ANNOUNCE_DELAY_MS,
    (error) => fastify.log.warn({ err: error }, 'could not announce new events'))

  const nextArrival = async (organizationId: string, timeoutMs: number, signal: AbortSignal): Promise<boolean> => {
    const deadline = new AbortController()
    const timer = setTimeout(() => deadline.abort(), Math.max(0, timeoutMs))
    try {
      await once(arrivals, organizationId, { signal: AbortSignal.any([signal, closing.signal, deadline.signal]) })
      return true
    } catch {
      return false
    } finally {
      clearTimeout(timer)
    }
  }

  const subscribe = (organizationId: string, onArrival: (count: number) => void) => {
    arrivals.on(organizationId, onArrival)
    return () => { arrivals.off(organizationId, onArrival) }
  }

  fastify.decorate<EventSignals>('eventSignals', { nextArrival, subscribe, announce: announcements.add, closing: closing.signal })

  // preClose runs before the server waits for in-flight requests, so waiting long polls end promptly.
  fastify.addHook('preClose', async () => { closing.abort() })
  // Runs before the pool closes (registered after it): what is pending still goes out.
  fastify.addHook('onClose', async () => { await announcements.flush() })
}, { name: 'event-signals', dependencies: ['db', 'notifications'] })
