import fp from 'fastify-plugin'
import { createDeliveryWorker } from '../../lib/webhooks/delivery-worker.js'

/**
 * Runs the webhook delivery loop inside the API process unless WEBHOOK_WORKER=off (then run `npm run worker`).
 * It starts once the app is ready and stops in preClose, while the pool is still open; the app's listener wakes it.
 */
export default fp(async (fastify) => {
  if (fastify.config.WEBHOOK_WORKER === 'off') return
  const worker = createDeliveryWorker(fastify.config, fastify.pg.pool, fastify.notifications, {
    info: (message) => fastify.log.info(message),
    warn: (details, message) => fastify.log.warn(details, message)
  }, fastify.metrics.observeAttempt)
  fastify.addHook('onReady', async () => { worker.start() })
  fastify.addHook('preClose', async () => { await worker.stop() })
}, { name: 'webhook-worker', dependencies: ['db', 'config', 'notifications', 'metrics'] })
