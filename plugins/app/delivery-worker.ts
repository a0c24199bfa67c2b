import fp from 'fastify-plugin'
import { createDeliveryWorker, type AttemptObserver } from '../../lib/webhooks/delivery-worker.js'

export interface DeliveryWorkerPluginOptions {
  /** Where each attempt is counted: the API's metrics, or the separate worker's own. */
  onAttempt: AttemptObserver
}

/**
 * Runs the webhook delivery loop (lib/webhooks/delivery-worker.ts): inside the API process unless
 * WEBHOOK_WORKER=off, and in the separate worker's (worker.ts). It starts once the app is ready and stops in
 * preClose, while the pool is still open; the process's wake-up listener wakes it.
 */
export default fp<DeliveryWorkerPluginOptions>(async (fastify, { onAttempt }) => {
  const worker = createDeliveryWorker(fastify.config, {
    pool: fastify.pg.pool,
    wakeUps: fastify.wakeUps,
    secrets: fastify.webhookSecrets,
    log: { info: (message) => fastify.log.info(message), warn: (details, message) => fastify.log.warn(details, message) },
    onAttempt
  })
  fastify.addHook('onReady', async () => { worker.start() })
  fastify.addHook('preClose', async () => { await worker.stop() })
}, { name: 'delivery-worker', dependencies: ['postgres', 'config', 'wake-ups', 'webhook-secrets'] })
