import closeWithGrace from 'close-with-grace'
import type { FastifyInstance } from 'fastify'
import pino, { type Logger } from 'pino'
import { buildApp } from './app.js'
import { openDatabase, type DatabaseHandle } from './db/embedded-postgres.js'
import { loggerOptions } from './lib/logging.js'
import { loadConfig, type Config } from './plugins/config.js'

const NAME = 'triggers-api'
const CLOSE_DELAY_MS = 10_000
const SHUTDOWN_SIGNALS = ['SIGINT', 'SIGTERM'] as const
/**
 * Ctrl-C under `npm start` arrives twice: the terminal signals the whole foreground group, and npm relays the
 * same SIGINT to its script (npm/cli#5021). A repeat this soon is that echo; a later one means "stop now".
 */
const SIGNAL_ECHO_MS = 1_000

interface Running {
  app?: FastifyInstance
  database?: DatabaseHandle
}

/**
 * Entry point: validates settings, uses DATABASE_URL or starts the embedded PostgreSQL, listens, and on
 * SIGINT/SIGTERM closes the app (answering waiting long polls, then closing pool and Redis) before it stops
 * the embedded server.
 */
async function main (): Promise<void> {
  const config = loadConfigOrExit()
  const startupLog = pino({ ...loggerOptions(config.LOG_LEVEL), name: NAME })
  const running: Running = {}
  closeOnSignals(running, startupLog)
  try {
    running.database = await openDatabase(config, startupLog, { exitOnSignal: false })
    running.app = await buildApp({ config, databaseUrl: running.database.url })
    await running.app.listen({ port: config.PORT, host: config.HOST })
  } catch (error) {
    startupLog.fatal({ err: error }, 'start-up failed')
    await closeAll(running).catch((closeError: unknown) => startupLog.error({ err: closeError }, 'could not close after the failed start-up'))
    process.exit(1)
  }
}

function loadConfigOrExit (): Config {
  try {
    return loadConfig()
  } catch (error) {
    pino({ ...loggerOptions('info'), name: NAME }).fatal(error instanceof Error ? error.message : String(error))
    process.exit(1)
  }
}

/**
 * Installed before start-up, so a signal during it still stops what has started. The app closes first (waiting
 * long polls get their empty answer, streams end), then the embedded PostgreSQL stops; after CLOSE_DELAY_MS the
 * process exits regardless.
 */
function closeOnSignals (running: Running, startupLog: Logger): void {
  const log = () => running.app?.log ?? startupLog
  const closer = closeWithGrace({
    delay: CLOSE_DELAY_MS,
    skip: [...SHUTDOWN_SIGNALS],
    logger: { error: (message: unknown) => log().error(message) }
  }, async ({ err }) => {
    if (err) log().error({ err }, 'closing after an unexpected error')
    await closeAll(running)
  })
  let firstSignalAt: number | undefined
  const onSignal = (signal: NodeJS.Signals) => {
    if (firstSignalAt === undefined) {
      firstSignalAt = Date.now()
      log().info({ signal }, 'shutting down')
      closer.close()
    } else if (Date.now() - firstSignalAt >= SIGNAL_ECHO_MS) {
      log().error({ signal }, 'second signal; exiting without waiting')
      process.exit(1)
    }
  }
  for (const signal of SHUTDOWN_SIGNALS) process.on(signal, onSignal)
}

/** The app first (it still needs the database to answer what is in flight), then the embedded PostgreSQL. */
async function closeAll (running: Running): Promise<void> {
  await running.app?.close()
  await running.database?.stop()
}

await main()
