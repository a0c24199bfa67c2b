import type { FastifyInstance } from 'fastify'
import type { DeliveryWorkerOptions } from '../../lib/webhooks/delivery-worker.js'
import { parseRetrySchedule } from '../../lib/webhooks/retry-schedule.js'

/** A delivery worker's options on an app's pool, listener and secrets, with small test defaults and `settings` on top. */
export function testWorkerOptions (app: FastifyInstance, settings: Partial<DeliveryWorkerOptions> = {}): DeliveryWorkerOptions {
  return {
    pool: app.pg.pool,
    wakeUps: app.wakeUps,
    log: { info: () => {}, warn: () => {} },
    schedule: parseRetrySchedule('0,1,1,1,1'),
    timeoutMs: 5000,
    allowPrivateUrls: true,
    disableAfterFailures: 0,
    endpointConcurrency: 8,
    endpointMaxConcurrency: 16,
    workerConcurrency: 64,
    claimSeconds: 30,
    pollIntervalMs: 200,
    secrets: app.webhookSecrets,
    ...settings
  }
}
