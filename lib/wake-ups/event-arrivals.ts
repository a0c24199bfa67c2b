import { EventEmitter, once, setMaxListeners } from 'node:events'
import { EVENTS_CHANNEL } from '../../db/wake-ups.js'
import type { WakeUpListener } from './listener.js'

export interface EventArrivals {
  /**
   * Resolves true when events arrive for the organization, false at the timeout, when `signal` aborts or
   * when the process starts closing. Call it before checking the database so an arrival in between is not missed.
   */
  nextArrival: (organizationId: string, timeoutMs: number, signal: AbortSignal) => Promise<boolean>
  /** Calls `listener` with the number of new events each time some arrive; returns the unsubscribe function. */
  subscribe: (organizationId: string, listener: (count: number) => void) => () => void
  /** How many arrival waiters and subscribers this process holds now (long polls and streams). */
  readonly waiting: number
  /** Aborted when the process starts closing: long polls and streams end. */
  closing: AbortSignal
  /** Ends every waiter and stream. */
  close: () => void
}

/**
 * Fans the EVENTS_CHANNEL notifications this process hears out to its long polls and streams, per organization.
 */
export function createEventArrivals (listener: WakeUpListener): EventArrivals {
  const arrivals = new EventEmitter()
  arrivals.setMaxListeners(0)
  const closing = new AbortController()
  // Every open stream listens on it (up to INBOX_STREAMS_PER_ORGANIZATION per organization): not a leak.
  setMaxListeners(0, closing.signal)

  listener.listen(EVENTS_CHANNEL, (payload) => {
    const [organizationId, count] = payload.split(':')
    if (organizationId) arrivals.emit(organizationId, Number(count) || 1)
  })
  // Announcements sent while the listener was down are lost: every waiter looks again once it is back.
  listener.onConnect(() => {
    for (const organizationId of arrivals.eventNames()) arrivals.emit(organizationId, 0)
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

  return {
    nextArrival,
    subscribe,
    get waiting () {
      // events.once (nextArrival) also puts an 'error' listener on the emitter for each waiter: not a waiter of its own.
      return arrivals.eventNames().reduce((total, name) => name === 'error' ? total : total + arrivals.listenerCount(name), 0)
    },
    closing: closing.signal,
    close: () => { closing.abort() }
  }
}
