import closeWithGrace from 'close-with-grace'
import pino from 'pino'
import { buildWorkerApp } from './app.js'
import { loadConfig } from './lib/config.js'

/**
 * `npm run worker` / `node dist/worker.js`: the webhook delivery loop as its own process, for running the API
 * with WEBHOOK_WORKER=off or adding delivery capacity. Needs DATABASE_URL (the API's database). With
 * WORKER_METRICS_PORT set it serves its own /metrics on HOST. The plugins do the work (app.ts buildWorkerApp);
 * this file only starts them and closes them on a signal.
 */
async function main (): Promise<void> {
  const config = loadConfig(process.env, { listens: false })
  if (config.DATABASE_URL === undefined) {
    throw new Error('DATABASE_URL is required for a separate worker (for the embedded default: postgres://postgres:postgres@127.0.0.1:54329/triggers)')
  }
  const app = await buildWorkerApp({ config, databaseUrl: config.DATABASE_URL })
  closeWithGrace({ delay: config.WEBHOOK_TIMEOUT_MS + 5000 }, async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'closing after an unexpected error')
    else app.log.info({ signal }, 'worker shutting down')
    // The worker stops first (preClose: its sends finish, its claims are given back), then metrics, listener, pool.
    await app.close()
  })
  // Connects the wake-up listener, then starts the worker (onReady).
  await app.ready()
  app.log.info('webhook worker running')
}

main().catch((error: unknown) => {
  pino({ name: 'triggers-worker' }).fatal(error instanceof Error ? error.message : String(error))
  process.exit(1)
})
