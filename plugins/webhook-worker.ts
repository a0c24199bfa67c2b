import fp from 'fastify-plugin'
import { createDeliveryWorker } from '../lib/webhooks/delivery-worker.js'

/**
 * Runs the webhook delivery loop inside the API process unless WEBHOOK_WORKER=off (then run `npm run worker`).
 * It starts once the app is ready and stops in preClose, while the pool is still open.
 */
export default fp<{ databaseUrl: string }>(async (fastify, { databaseUrl }) => {
  if (fastify.config.WEBHOOK_WORKER === 'off') return
  const worker = createDeliveryWorker(fastify.config, fastify.pg.pool, databaseUrl, {
    info: (message) => fastify.log.info(message),
    warn: (details, message) => fastify.log.warn(details, message)
  })
  fastify.addHook('onReady', async () => { await worker.start() })
  fastify.addHook('preClose', async () => { await worker.stop() })
}, { name: 'webhook-worker', dependencies: ['db', 'config'] })
