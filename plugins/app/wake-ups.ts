import fp from 'fastify-plugin'
import { createListener, type Notifications } from '../../lib/wake-ups/listener.js'

declare module 'fastify' {
  interface FastifyInstance {
    notifications: Notifications
  }
}

/**
 * The process's one reconnecting LISTEN connection (lib/listener.ts), shared by every wake-up: new events for
 * long polls and streams, deliveries for the in-process worker, key-cache invalidation. It connects when the
 * app is ready and closes last.
 */
export default fp<{ databaseUrl: string }>(async (fastify, { databaseUrl }) => {
  const listener = createListener({
    connectionString: databaseUrl,
    applicationName: 'triggers-api-listener',
    log: { warn: (details, message) => fastify.log.warn(details, message), info: (message) => fastify.log.info(message) }
  })
  fastify.decorate<Notifications>('notifications', listener)
  fastify.addHook('onReady', listener.start)
  fastify.addHook('onClose', listener.close)
}, { name: 'notifications' })
