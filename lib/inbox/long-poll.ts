import type { FastifyReply, FastifyRequest } from 'fastify'
import { apiError } from '../api-error.js'
import { createSlots } from '../slots.js'
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
  /** How soon to look again without an arrival (a rate cap's next token); undefined: at the next arrival. */
  lookAgainIn?: (result: T) => number | undefined
}

/**
 * Looks until a look finds something, the wait runs out, the client leaves or the process starts closing;
 * returns the last look. Waiting holds no pool client: it is a wake-up subscription (lib/wake-ups), taken
 * before each look so an event committed between the look and the wait still wakes it.
 */
export async function longPoll<T> ({ arrivals, organizationId, waitMs, clientGone, look, found, lookAgainIn }: LongPollOptions<T>): Promise<T> {
  const deadline = Date.now() + waitMs
  const stillWaiting = () => Date.now() < deadline && !clientGone.aborted && !arrivals.closing.aborted
  for (;;) {
    const stopListening = new AbortController()
    const arrival = arrivals.nextArrival(organizationId, deadline - Date.now(), AbortSignal.any([clientGone, stopListening.signal]))
    try {
      const result = await look()
      if (found(result) || !stillWaiting()) return result
      const again = lookAgainIn?.(result)
      await (again === undefined ? arrival : Promise.race([arrival, pause(Math.min(again, deadline - Date.now()), stopListening.signal)]))
    } finally {
      stopListening.abort()
      await arrival
    }
  }
}

/** Resolves after `ms`, or at once when `signal` aborts (its timer cleared). */
async function pause (ms: number, signal: AbortSignal): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, Math.max(0, ms))
    function done () {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })
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

/** What a lease call found: the events it leased, in order, and until when. */
export interface LeaseFound<E> {
  events: E[]
  leasedUntil: Date | null
  /** Set when a rate cap held the lease back: a token is there this soon. */
  lookAgainInMs?: number
}

/**
 * The lease calls' long polls (inbox and subscriptions): each organization may have `maxWaiting` of them waiting
 * on this process per kind of call; `wait_seconds` 0 answers from one look without taking a slot.
 */
export function createLeasePolls (arrivals: LongPollOptions<unknown>['arrivals'], maxWaiting: number) {
  const waiting = createSlots(maxWaiting)
  return async function leaseWaiting<E> (request: FastifyRequest, reply: FastifyReply, organizationId: string, waitSeconds: number, look: () => Promise<LeaseFound<E>>): Promise<LeaseFound<E>> {
    const release = waitSeconds > 0 ? waiting.acquire(organizationId) : () => {}
    if (!release) {
      throw apiError('tooManyRequests', 'too_many_long_polls', `At most ${maxWaiting} long polls (wait_seconds > 0) per organization may wait at once`)
    }
    const clientGone = watchClientGone(request, reply)
    try {
      return await longPoll({ arrivals, organizationId, waitMs: waitSeconds * 1000, clientGone: clientGone.signal, look, found: (leased) => leased.events.length > 0, lookAgainIn: (leased) => leased.lookAgainInMs })
    } finally {
      clientGone.dispose()
      release()
    }
  }
}
