import closeWithGrace from 'close-with-grace'
import pino from 'pino'
import { buildWorkerApp } from './app.js'
import { loadConfig } from './lib/config.js'
import { WorkerMetrics } from './lib/metrics.js'
import { serveMetrics, type MetricsServer } from './lib/metrics-server.js'
import { createDeliveryWorker } from './lib/webhooks/delivery-worker.js'

/**
 * `npm run worker` / `node dist/worker.js`: the webhook delivery loop as its own process, for running the API
 * with WEBHOOK_WORKER=off or adding delivery capacity. Needs DATABASE_URL (the API's database). With
 * WORKER_METRICS_PORT set it serves its own /metrics on HOST.
 */
async function main (): Promise<void> {
  const config = loadConfig(process.env, { listens: false })
  if (config.DATABASE_URL === undefined) {
    throw new Error('DATABASE_URL is required for a separate worker (for the embedded default: postgres://postgres:postgres@127.0.0.1:54329/triggers)')
  }
  const app = await buildWorkerApp({ config, databaseUrl: config.DATABASE_URL })
  const { log } = app
  const metrics = new WorkerMetrics({ pool: app.pg.pool, wakeUps: app.wakeUps, log })
  const worker = createDeliveryWorker(config, {
    pool: app.pg.pool,
    wakeUps: app.wakeUps,
    secrets: app.webhookSecrets,
    log: { info: (message) => log.info(message), warn: (details, message) => log.warn(details, message) },
    onAttempt: metrics.observeAttempt
  })
  let metricsServer: MetricsServer | undefined
  closeWithGrace({ delay: config.WEBHOOK_TIMEOUT_MS + 5000 }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'closing after an unexpected error')
    else log.info({ signal }, 'worker shutting down')
    await worker.stop()
    // Before the pool ends: a scrape reads the queue through it.
    await metricsServer?.close()
    await app.close()
  })
  // First, so a port already taken stops start-up before anything is claimed.
  if (config.WORKER_METRICS_PORT > 0) {
    metricsServer = await serveMetrics(metrics, { host: config.HOST, port: config.WORKER_METRICS_PORT, token: config.METRICS_TOKEN, log })
    log.info({ host: config.HOST, port: metricsServer.port }, 'worker metrics at /metrics')
  }
  // Connects the wake-up listener.
  await app.ready()
  worker.start()
  log.info('webhook worker running')
}

main().catch((error: unknown) => {
  pino({ name: 'triggers-worker' }).fatal(error instanceof Error ? error.message : String(error))
  process.exit(1)
})
