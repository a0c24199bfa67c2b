import fp from 'fastify-plugin'
import { EventEmitter, once } from 'node:events'
import { EVENTS_CHANNEL, notifyEventsAvailable } from '../db/events.js'

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

// Longest an announcement waits for others to share its NOTIFY; long polls wake this much later at most.
const ANNOUNCE_DELAY_MS = 20

/**
 * Announces new events to every instance (one NOTIFY statement for all organizations with news) and fans
 * the announcements it hears out to long polls and streams in this process, per organization.
 */
export default fp(async (fastify) => {
  const arrivals = new EventEmitter()
  arrivals.setMaxListeners(0)
  const closing = new AbortController()

  fastify.notifications.listen(EVENTS_CHANNEL, (payload) => {
    const [organizationId, count] = payload.split(':')
    if (organizationId) arrivals.emit(organizationId, Number(count) || 1)
  })

  let pending = new Map<string, number>()
  let announceTimer: NodeJS.Timeout | undefined
  const sending = new Set<Promise<void>>()
  const sendAnnouncements = () => {
    clearTimeout(announceTimer)
    announceTimer = undefined
    if (pending.size === 0) return
    const counts = [...pending]
    pending = new Map()
    // Losing an announcement only delays waiters until their deadline, so a failure is logged, not thrown.
    const sent = notifyEventsAvailable(fastify.pg, counts)
      .catch((error: unknown) => fastify.log.warn({ err: error }, 'could not announce new events'))
      .finally(() => sending.delete(sent))
    sending.add(sent)
  }
  const announce = (organizationId: string, count: number) => {
    pending.set(organizationId, (pending.get(organizationId) ?? 0) + count)
    announceTimer ??= setTimeout(sendAnnouncements, ANNOUNCE_DELAY_MS)
  }

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

  fastify.decorate<EventSignals>('eventSignals', { nextArrival, subscribe, announce, closing: closing.signal })

  // preClose runs before the server waits for in-flight requests, so waiting long polls end promptly.
  fastify.addHook('preClose', async () => { closing.abort() })
  // Runs before the pool closes (registered after it): what is pending still goes out.
  fastify.addHook('onClose', async () => {
    sendAnnouncements()
    await Promise.all(sending)
  })
}, { name: 'event-signals', dependencies: ['db', 'notifications'] })
