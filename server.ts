import closeWithGrace from 'close-with-grace'
import pino from 'pino'
import { buildApp } from './app.js'
import { openDatabase, type DatabaseHandle } from './db/embedded-postgres.js'
import { loadConfig } from './plugins/config.js'

/**
 * Entry point: validates settings, uses DATABASE_URL or starts the embedded PostgreSQL, listens, and on
 * SIGINT/SIGTERM closes the app (pool, Redis) before stopping the embedded server.
 */
async function main (): Promise<void> {
  const startupLog = pino({ name: 'triggers-api' })
  let config
  try {
    config = loadConfig()
  } catch (error) {
    startupLog.fatal(error instanceof Error ? error.message : String(error))
    process.exit(1)
  }
  startupLog.level = config.LOG_LEVEL

  let database: DatabaseHandle | undefined
  const stopEmbedded = async () => { await database?.stop() }
  try {
    database = await openDatabase(config, startupLog)
    const app = await buildApp({ config, databaseUrl: database.url })
    closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
      if (err) app.log.error({ err }, 'closing after an unexpected error')
      else app.log.info({ signal }, 'shutting down')
      await app.close()
      await stopEmbedded()
    })
    await app.listen({ port: config.PORT, host: config.HOST })
  } catch (error) {
    startupLog.fatal({ err: error }, 'start-up failed')
    await stopEmbedded()
    process.exit(1)
  }
}

await main()
