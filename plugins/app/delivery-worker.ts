import fp from 'fastify-plugin'
import { createDeliveryWorker } from '../../lib/webhooks/delivery-worker.js'

/**
 * Runs the webhook delivery loop (lib/webhooks/delivery-worker.ts) inside the API process unless
 * WEBHOOK_WORKER=off (then run `npm run worker`). It starts once the app is ready and stops in preClose, while
 * the pool is still open; the process's wake-up listener wakes it.
 */
export default fp(async (fastify) => {
  if (fastify.config.WEBHOOK_WORKER === 'off') return
  const worker = createDeliveryWorker(fastify.config, {
    pool: fastify.pg.pool,
    wakeUps: fastify.wakeUps,
    secrets: fastify.webhookSecrets,
    log: { info: (message) => fastify.log.info(message), warn: (details, message) => fastify.log.warn(details, message) },
    onAttempt: fastify.metrics.observeAttempt
  })
  fastify.addHook('onReady', async () => { worker.start() })
  fastify.addHook('preClose', async () => { await worker.stop() })
}, { name: 'delivery-worker', dependencies: ['postgres', 'config', 'wake-ups', 'metrics', 'webhook-secrets'] })
