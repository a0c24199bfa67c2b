import type { FastifyReply, FastifyRequest } from 'fastify'
import type { EventArrivals } from '../wake-ups/event-arrivals.js'

export interface LongPollOptions<T> {
  arrivals: Pick<EventArrivals, 'nextArrival' | 'closing'>
  organizationId: string
  waitMs: number
  /** Aborted when the client goes away. */
  clientGone: AbortSignal
  /** One look at the database. */
  look: () => Promise<T>
  /** Whether a look found something worth answering with now. */
  found: (result: T) => boolean
}

/**
 * Looks until a look finds something, the wait runs out, the client leaves or the process starts closing;
 * returns the last look. Waiting holds no pool client: it is a wake-up subscription (lib/wake-ups), taken
 * before each look so an event committed between the look and the wait still wakes it.
 */
export async function longPoll<T> ({ arrivals, organizationId, waitMs, clientGone, look, found }: LongPollOptions<T>): Promise<T> {
  const deadline = Date.now() + waitMs
  const stillWaiting = () => Date.now() < deadline && !clientGone.aborted && !arrivals.closing.aborted
  for (;;) {
    const stopListening = new AbortController()
    const arrival = arrivals.nextArrival(organizationId, deadline - Date.now(), AbortSignal.any([clientGone, stopListening.signal]))
    try {
      const result = await look()
      if (found(result) || !stillWaiting()) return result
      await arrival
    } finally {
      stopListening.abort()
      await arrival
    }
  }
}

/** A signal aborted when the client closes its connection before the answer; `dispose` stops watching. */
export function watchClientGone (request: FastifyRequest, reply: FastifyReply): { signal: AbortSignal, dispose: () => void } {
  const gone = new AbortController()
  const onClose = () => gone.abort()
  reply.raw.once('close', onClose)
  // A client that left while its key was being looked up has already had its 'close'.
  if (request.raw.socket.destroyed) gone.abort()
  return { signal: gone.signal, dispose: () => { reply.raw.off('close', onClose) } }
}
