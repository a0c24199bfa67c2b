import type { FastifyInstance } from 'fastify'
import type { Teardown } from './helpers.js'
import { waitFor } from './webhooks.js'

/**
 * What an app's long polls did, seen through the app's own seams: each look at the database (the lease query,
 * 'lease-events', answered) and each wait for an arrival (wakeUps.nextArrival, settled). A poll subscribes
 * before it looks, so `wakeUps.waiting` alone does not say the look is over: a poll is surely waiting once
 * its look has answered too.
 */
export interface LongPollWatch {
  /** Lease looks answered. */
  readonly looks: number
  /** Waits ended by an arrival (or a listener reconnect): the poll was woken and looks again. */
  readonly woken: number
  /** Waits ended otherwise: the look found events, the deadline passed, the client left or the app closed. */
  readonly notWoken: number
  /**
   * Resolves once `count` polls wait (no other long poll or stream is open) and at least `looked` lease looks
   * have answered since watching started (by default `count`: one each).
   */
  waiting: (count: number, looked?: number) => Promise<void>
}

interface NamedQuery { name?: unknown }

/** Starts watching; the app's functions are put back when the test ends. */
export function watchLongPolls (t: Teardown, app: FastifyInstance): LongPollWatch {
  let looks = 0
  let woken = 0
  let notWoken = 0
  const query = app.pg.query
  app.pg.query = ((...args: Parameters<typeof query>) => {
    const result = query.apply(app.pg.pool, args) as unknown
    const [first] = args as unknown[]
    if (typeof first === 'object' && first !== null && (first as NamedQuery).name === 'lease-events' && result instanceof Promise) {
      // Counted before the route sees the rows (this callback is attached first).
      result.then(() => { looks++ }, () => {})
    }
    return result
  }) as typeof query
  const nextArrival = app.wakeUps.nextArrival
  app.wakeUps.nextArrival = async (...args) => {
    const arrived = await nextArrival(...args)
    if (arrived) woken++
    else notWoken++
    return arrived
  }
  t.teardown(() => {
    app.pg.query = query
    app.wakeUps.nextArrival = nextArrival
  })
  return {
    get looks () { return looks },
    get woken () { return woken },
    get notWoken () { return notWoken },
    waiting: (count, looked = count) => waitFor(`${count} long polls to look and wait`, () => app.wakeUps.waiting === count && looks >= looked)
  }
}
