import pg from 'pg'

export type NotificationHandler = (payload: string) => void

/** What users of the listener see: subscribe to channels, hear about (re)connections. */
export interface WakeUpListener {
  /** Calls `handler` with the payload of every NOTIFY on `channel`, from now on and after every reconnect. */
  listen: (channel: string, handler: NotificationHandler) => void
  /**
   * Calls `handler` each time the listening connection is (re)established. Notifications sent while it was
   * down are lost, so anything that relies on them (caches, sleepers) must look afresh here.
   */
  onConnect: (handler: () => void) => void
  /** False while the listening connection is down (before start, between reconnects, after close). */
  readonly connected: boolean
}

export interface ListeningConnection extends WakeUpListener {
  /** Connects; if the database is not reachable yet, keeps trying in the background. */
  start: () => Promise<void>
  close: () => Promise<void>
}

export interface ListenerOptions {
  connectionString: string
  applicationName: string
  log: { warn: (details: object, message: string) => void, info: (message: string) => void }
  /** First reconnect delay; doubles per failed try up to maxReconnectDelayMs. */
  reconnectDelayMs?: number
  maxReconnectDelayMs?: number
  /** A connection that does not answer a ping within pingTimeoutMs is dropped and replaced. */
  pingIntervalMs?: number
  pingTimeoutMs?: number
}

/**
 * One dedicated connection per process LISTENs on every channel the process needs (outside the pool, so
 * nothing waiting on a notification holds a pool client) and dispatches in-process. It survives database
 * restarts and failovers: errors and ends trigger a reconnect with backoff, TCP keepalive plus a periodic
 * ping catch connections that died silently. Our own code because it is a few lines over pg's LISTEN support
 * and must tie into the API's and the worker's start-up and shutdown order.
 */
export function createListener (options: ListenerOptions): ListeningConnection {
  const initialDelay = options.reconnectDelayMs ?? 250
  const maxDelay = options.maxReconnectDelayMs ?? 5000
  const pingIntervalMs = options.pingIntervalMs ?? 30_000
  const pingTimeoutMs = options.pingTimeoutMs ?? 10_000
  const handlers = new Map<string, NotificationHandler[]>()
  const connectHandlers: Array<() => void> = []
  let client: pg.Client | undefined
  let reconnectTimer: NodeJS.Timeout | undefined
  let pingTimer: NodeJS.Timeout | undefined
  let delay = initialDelay
  let closed = false

  const dispatch = (message: pg.Notification) => {
    for (const handler of handlers.get(message.channel) ?? []) handler(message.payload ?? '')
  }

  const listenOn = async (target: pg.Client, channel: string) => {
    await target.query(`LISTEN ${pg.escapeIdentifier(channel)}`)
  }

  /** Forgets a connection (once) and schedules the next one. */
  const drop = (candidate: pg.Client) => {
    if (client !== candidate) return
    client = undefined
    clearInterval(pingTimer)
    candidate.removeAllListeners('end')
    // Not awaited: ending a connection that died silently can take as long as TCP does to give up.
    candidate.end().catch(() => {})
    scheduleReconnect()
  }

  const ping = (target: pg.Client) => {
    const timeout = setTimeout(() => {
      options.log.warn({ timeout_ms: pingTimeoutMs }, 'notification listener stopped answering; reconnecting')
      drop(target)
    }, pingTimeoutMs)
    target.query('SELECT 1').then(() => clearTimeout(timeout), () => clearTimeout(timeout))
  }

  const connect = async (): Promise<void> => {
    const candidate = new pg.Client({
      connectionString: options.connectionString,
      application_name: options.applicationName,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000
    })
    candidate.on('notification', dispatch)
    candidate.on('error', (error) => {
      if (client === candidate) options.log.warn({ err: error }, 'notification listener connection failed; reconnecting')
      drop(candidate)
    })
    candidate.on('end', () => drop(candidate))
    try {
      await candidate.connect()
      for (const channel of handlers.keys()) await listenOn(candidate, channel)
    } catch (error) {
      candidate.removeAllListeners('end')
      await candidate.end().catch(() => {})
      throw error
    }
    if (closed) {
      await candidate.end().catch(() => {})
      return
    }
    client = candidate
    delay = initialDelay
    pingTimer = setInterval(() => ping(candidate), pingIntervalMs)
    pingTimer.unref()
    for (const handler of connectHandlers) handler()
  }

  function scheduleReconnect (): void {
    if (closed || reconnectTimer) return
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined
      connect().then(
        () => { if (client) options.log.info('notification listener connected') },
        (error: unknown) => {
          options.log.warn({ err: error, retry_in_ms: delay }, 'notification listener could not connect; retrying')
          scheduleReconnect()
        })
    }, delay)
    delay = Math.min(delay * 2, maxDelay)
  }

  return {
    listen (channel, handler) {
      const known = handlers.has(channel)
      handlers.set(channel, [...handlers.get(channel) ?? [], handler])
      // Subscribing while connected: LISTEN now; a failure here drops the connection, and the reconnect listens.
      const current = client
      if (!known && current) listenOn(current, channel).catch(() => drop(current))
    },
    onConnect (handler) { connectHandlers.push(handler) },
    get connected () { return client !== undefined },
    async start () {
      await connect().catch((error: unknown) => {
        options.log.warn({ err: error }, 'notification listener could not connect; retrying in the background')
        scheduleReconnect()
      })
    },
    async close () {
      closed = true
      clearTimeout(reconnectTimer)
      clearInterval(pingTimer)
      const current = client
      client = undefined
      current?.removeAllListeners('end')
      await current?.end().catch(() => {})
    }
  }
}
