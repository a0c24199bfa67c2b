import closeWithGrace from 'close-with-grace'
import pg from 'pg'
import pino from 'pino'
import { runMigrations } from './db/migrate.js'
import { checkStatementTimeout, poolConfig, survivePoolErrors } from './db/pool.js'
import { createListener } from './lib/wake-ups/listener.js'
import { loggerOptions } from './lib/logging.js'
import { WorkerMetrics } from './lib/metrics.js'
import { serveMetrics, type MetricsServer } from './lib/metrics-server.js'
import { createDeliveryWorker } from './lib/webhooks/delivery-worker.js'
import { createSecretBox } from './lib/webhooks/secret-box.js'
import { loadConfig } from './lib/config.js'

/**
 * `npm run worker` / `node dist/worker.js`: the webhook delivery loop as its own process, for running the API
 * with WEBHOOK_WORKER=off or adding delivery capacity. Needs DATABASE_URL (the API's database). With
 * WORKER_METRICS_PORT set it serves its own /metrics on HOST.
 */
async function main (): Promise<void> {
  const config = loadConfig(process.env, { listens: false })
  const log = pino({ name: 'triggers-worker', ...loggerOptions(config.LOG_LEVEL) })
  if (config.DATABASE_URL === undefined) {
    throw new Error('DATABASE_URL is required for a separate worker (for the embedded default: postgres://postgres:postgres@127.0.0.1:54329/triggers)')
  }
  // LISTEN and the migrations' advisory lock need a session of their own: DATABASE_DIRECT_URL behind a pooler.
  const directUrl = config.DATABASE_DIRECT_URL ?? config.DATABASE_URL
  await runMigrations(directUrl, log)
  const pool = new pg.Pool(poolConfig({
    connectionString: config.DATABASE_URL,
    applicationName: 'triggers-worker',
    max: config.DATABASE_POOL_MAX,
    connectTimeoutMs: config.DATABASE_CONNECT_TIMEOUT_MS,
    statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
    preparedStatements: config.DATABASE_PREPARED_STATEMENTS,
    pooled: directUrl !== config.DATABASE_URL
  }))
  survivePoolErrors(pool, (error) => log.warn({ err: error }, 'database connection failed'))
  if (directUrl !== config.DATABASE_URL) {
    await checkStatementTimeout(pool, config.DATABASE_STATEMENT_TIMEOUT_MS, log)
      .catch((error: unknown) => log.warn({ err: error }, 'could not read statement_timeout through the pooler'))
  }
  const listener = createListener({
    connectionString: directUrl,
    applicationName: 'triggers-worker-listener',
    log: { warn: (details, message) => log.warn(details, message), info: (message) => log.info(message) }
  })
  const metrics = new WorkerMetrics({ pool, wakeUps: listener, log })
  const worker = createDeliveryWorker(config, {
    pool,
    wakeUps: listener,
    secrets: createSecretBox(config.WEBHOOK_SECRET_KEYS),
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
    await listener.close()
    await pool.end()
  })
  // First, so a port already taken stops start-up before anything is claimed.
  if (config.WORKER_METRICS_PORT > 0) {
    metricsServer = await serveMetrics(metrics, { host: config.HOST, port: config.WORKER_METRICS_PORT, token: config.METRICS_TOKEN, log })
    log.info({ host: config.HOST, port: metricsServer.port }, 'worker metrics at /metrics')
  }
  await listener.start()
  worker.start()
  log.info('webhook worker running')
}

main().catch((error: unknown) => {
  pino({ name: 'triggers-worker' }).fatal(error instanceof Error ? error.message : String(error))
  process.exit(1)
})
