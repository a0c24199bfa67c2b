import fp from 'fastify-plugin'
import { EventEmitter, once } from 'node:events'
import { EVENTS_CHANNEL } from '../db/events.js'

export interface EventSignals {
  /**
   * Resolves true when events arrive for the organization, false at the timeout, when `signal` aborts or
   * when the server shuts down. Call it before checking the database so an arrival in between is not missed.
   */
  nextArrival: (organizationId: string, timeoutMs: number, signal: AbortSignal) => Promise<boolean>
  /** Calls `listener` with the number of new events each time some arrive; returns the unsubscribe function. */
  subscribe: (organizationId: string, listener: (count: number) => void) => () => void
  /** Aborted when the server starts closing: long polls and streams end. */
  closing: AbortSignal
}

declare module 'fastify' {
  interface FastifyInstance {
    eventSignals: EventSignals
  }
}

/**
 * Fans new-event notifications (migration 002's insert trigger, and releases/requeues) out to long polls and
 * streams in this process, per organization.
 */
export default fp(async (fastify) => {
  const arrivals = new EventEmitter()
  arrivals.setMaxListeners(0)
  const closing = new AbortController()

  fastify.notifications.listen(EVENTS_CHANNEL, (payload) => {
    const [organizationId, count] = payload.split(':')
    if (organizationId) arrivals.emit(organizationId, Number(count) || 1)
  })

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

  fastify.decorate<EventSignals>('eventSignals', { nextArrival, subscribe, closing: closing.signal })

  // preClose runs before the server waits for in-flight requests, so waiting long polls end promptly.
  fastify.addHook('preClose', async () => { closing.abort() })
}, { name: 'event-signals', dependencies: ['notifications'] })
