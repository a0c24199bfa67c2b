import fp from 'fastify-plugin'
import pg from 'pg'

export type NotificationHandler = (payload: string) => void

export interface Notifications {
  /** Calls `handler` with the payload of every NOTIFY on `channel`. Register before the app is ready. */
  listen: (channel: string, handler: NotificationHandler) => void
  /**
   * Calls `handler` each time the listening connection is (re)established. Notifications sent while it was
   * down are lost, so anything that caches on the strength of them must start afresh here.
   */
  onConnect: (handler: () => void) => void
  /** False while the listening connection is down (before start, between reconnects, after close). */
  readonly connected: boolean
}

declare module 'fastify' {
  interface FastifyInstance {
    notifications: Notifications
  }
}

const RECONNECT_DELAY_MS = 1000

/**
 * One dedicated connection per process LISTENs on every channel the app needs (outside the pool, so nothing
 * waiting on a notification holds a pool client) and dispatches in-process. Written here rather than taken
 * from a library because it is a few lines over pg's own LISTEN support and must tie into our start-up and
 * shutdown order: it connects when the app is ready and reconnects until it closes.
 */
export default fp<{ databaseUrl: string }>(async (fastify, { databaseUrl }) => {
  const handlers = new Map<string, NotificationHandler[]>()
  const connectHandlers: Array<() => void> = []
  let client: pg.Client | undefined
  let reconnectTimer: NodeJS.Timeout | undefined
  let closed = false

  const dispatch = (message: pg.Notification) => {
    for (const handler of handlers.get(message.channel) ?? []) handler(message.payload ?? '')
  }

  const connect = async (): Promise<void> => {
    const candidate = new pg.Client({ connectionString: databaseUrl, application_name: 'triggers-api-listener' })
    candidate.on('notification', dispatch)
    candidate.on('error', (error) => {
      fastify.log.warn({ err: error }, 'notification listener connection failed; reconnecting')
      drop(candidate)
    })
    candidate.on('end', () => drop(candidate))
    try {
      await candidate.connect()
      for (const channel of handlers.keys()) await candidate.query(`LISTEN ${pg.escapeIdentifier(channel)}`)
    } catch (error) {
      candidate.removeAllListeners('end')
      await candidate.end().catch(() => {})
      throw error
    }
    client = candidate
    for (const handler of connectHandlers) handler()
  }

  const scheduleReconnect = () => {
    if (closed || reconnectTimer) return
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined
      connect().catch((error: unknown) => {
        fastify.log.warn({ err: error }, 'notification listener could not reconnect; retrying')
        scheduleReconnect()
      })
    }, RECONNECT_DELAY_MS)
  }

  const drop = (candidate: pg.Client) => {
    if (client !== candidate) return
    client = undefined
    candidate.removeAllListeners('end')
    candidate.end().catch(() => {})
    scheduleReconnect()
  }

  fastify.decorate<Notifications>('notifications', {
    listen (channel, handler) {
      if (client) throw new Error(`listen(${channel}) after the listener connected; register handlers before ready`)
      handlers.set(channel, [...handlers.get(channel) ?? [], handler])
    },
    onConnect (handler) { connectHandlers.push(handler) },
    get connected () { return client !== undefined }
  })

  fastify.addHook('onReady', connect)
  fastify.addHook('onClose', async () => {
    closed = true
    clearTimeout(reconnectTimer)
    const current = client
    client = undefined
    current?.removeAllListeners('end')
    await current?.end()
  })
}, { name: 'notifications' })
