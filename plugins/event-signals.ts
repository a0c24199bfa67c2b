import fp from 'fastify-plugin'
import { EventEmitter, once } from 'node:events'
import pg from 'pg'
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

const RECONNECT_DELAY_MS = 1000

/**
 * One dedicated connection LISTENs for new events (outside the pool, so waiting requests hold no pool
 * client) and fans the notifications out in-process. Written here rather than taken from a library because
 * it is a few lines over pg's own LISTEN support and must tie into our shutdown order.
 */
export default fp<{ databaseUrl: string }>(async (fastify, { databaseUrl }) => {
  const arrivals = new EventEmitter()
  arrivals.setMaxListeners(0)
  const closing = new AbortController()
  let listener: pg.Client | undefined
  let reconnectTimer: NodeJS.Timeout | undefined

  const onNotification = (message: pg.Notification) => {
    const [organizationId, count] = (message.payload ?? '').split(':')
    if (organizationId) arrivals.emit(organizationId, Number(count) || 1)
  }

  const connect = async (): Promise<void> => {
    const client = new pg.Client({ connectionString: databaseUrl, application_name: 'triggers-api-listener' })
    client.on('notification', onNotification)
    client.on('error', (error) => {
      fastify.log.warn({ err: error }, 'event listener connection failed; reconnecting')
      dropListener(client)
    })
    client.on('end', () => dropListener(client))
    try {
      await client.connect()
      await client.query(`LISTEN ${EVENTS_CHANNEL}`)
    } catch (error) {
      client.removeAllListeners('end')
      await client.end().catch(() => {})
      throw error
    }
    listener = client
  }

  // While disconnected, long polls still end at their deadline; they only lose the early wake-up.
  const scheduleReconnect = () => {
    if (closing.signal.aborted || reconnectTimer) return
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined
      connect().catch((error: unknown) => {
        fastify.log.warn({ err: error }, 'event listener could not reconnect; retrying')
        scheduleReconnect()
      })
    }, RECONNECT_DELAY_MS)
  }

  const dropListener = (client: pg.Client) => {
    if (listener !== client) return
    listener = undefined
    client.removeAllListeners('end')
    client.end().catch(() => {})
    scheduleReconnect()
  }

  await connect()

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
  fastify.addHook('onClose', async () => {
    clearTimeout(reconnectTimer)
    const client = listener
    listener = undefined
    client?.removeAllListeners('end')
    await client?.end()
  })
}, { name: 'event-signals' })
