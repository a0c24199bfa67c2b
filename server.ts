import closeWithGrace from 'close-with-grace'
import cluster from 'node:cluster'
import type { FastifyInstance } from 'fastify'
import pino, { type Logger } from 'pino'
import { buildApp } from './app.js'
import { openDatabase, type DatabaseHandle } from './db/embedded-postgres.js'
import { runMigrations } from './db/migrate.js'
import { startCluster, type Cluster } from './lib/cluster.js'
import { loggerOptions } from './lib/logging.js'
import { loadConfig, processPoolMax, type Config } from './lib/config.js'

const NAME = 'triggers-api'
/**
 * Connections the kernel may hold for us before they are accepted (Node's default is 511; Linux caps it at
 * net.core.somaxconn). Clients whose shed answer closed their connection reconnect in bursts: beyond the
 * backlog their SYNs are dropped and retried after 1, 3, 7 s, which is all the latency they then see.
 */
const LISTEN_BACKLOG = 4096
const CLOSE_DELAY_MS = 10_000
const SHUTDOWN_SIGNALS = ['SIGINT', 'SIGTERM'] as const
/**
 * Ctrl-C under `npm start` arrives twice: the terminal signals the whole foreground group, and npm relays the
 * same SIGINT to its script (npm/cli#5021). A repeat this soon is that echo; a later one means "stop now".
 */
const SIGNAL_ECHO_MS = 1_000

/** The primary of WEB_CONCURRENCY processes waits this much longer than its children, which close first. */
const PRIMARY_EXTRA_DELAY_MS = 5_000

interface Running {
  app?: FastifyInstance
  /** In the primary of WEB_CONCURRENCY > 1 processes, instead of an app. */
  cluster?: Cluster
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
  if (cluster.isPrimary && config.WEB_CONCURRENCY > 1) {
    await runPrimary(config, startupLog)
    return
  }
  const running: Running = {}
  closeOnSignals(running, startupLog, CLOSE_DELAY_MS)
  try {
    // A cluster child gets DATABASE_URL from the primary (which started the embedded server, if any, and migrated).
    running.database = await openDatabase(config, startupLog, { exitOnSignal: false })
    running.app = await buildApp({ config, databaseUrl: running.database.url, migrate: cluster.isPrimary })
    await running.app.listen({ port: config.PORT, host: config.HOST, backlog: LISTEN_BACKLOG })
  } catch (error) {
    startupLog.fatal({ err: error }, 'start-up failed')
    await closeAll(running).catch((closeError: unknown) => startupLog.error({ err: closeError }, 'could not close after the failed start-up'))
    process.exit(1)
  }
}

/**
 * WEB_CONCURRENCY > 1: this process starts the embedded PostgreSQL (unless DATABASE_URL is set) and migrates,
 * once, then runs that many API processes on the one port (lib/cluster.ts). Only the child in slot 0 runs the
 * in-process delivery worker. On SIGINT/SIGTERM the children close gracefully, then the database stops.
 */
async function runPrimary (config: Config, log: Logger): Promise<void> {
  const running: Running = {}
  closeOnSignals(running, log, CLOSE_DELAY_MS + PRIMARY_EXTRA_DELAY_MS)
  try {
    const database = await openDatabase(config, log, { exitOnSignal: false })
    running.database = database
    await runMigrations(config.DATABASE_DIRECT_URL ?? database.url, log)
    if (config.REDIS_URL === undefined) {
      log.warn({ processes: config.WEB_CONCURRENCY }, 'REDIS_URL is not set: each API process counts rate limits on its own, ' +
        'so an organization may get up to WEB_CONCURRENCY times its budget')
    }
    running.cluster = startCluster({
      processes: config.WEB_CONCURRENCY,
      env: (slot) => ({ DATABASE_URL: database.url, WEBHOOK_WORKER: slot === 0 ? config.WEBHOOK_WORKER : 'off' }),
      log,
      stopTimeoutMs: CLOSE_DELAY_MS + PRIMARY_EXTRA_DELAY_MS / 2
    })
    await running.cluster.ready
    log.info({ processes: config.WEB_CONCURRENCY, pool_per_process: processPoolMax(config), port: config.PORT }, 'all API processes listening')
  } catch (error) {
    log.fatal({ err: error }, 'start-up failed')
    await closeAll(running).catch((closeError: unknown) => log.error({ err: closeError }, 'could not close after the failed start-up'))
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
function closeOnSignals (running: Running, startupLog: Logger, delay: number): void {
  const log = () => running.app?.log ?? startupLog
  const closer = closeWithGrace({
    delay,
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

/** The app (or the cluster's children) first: it still needs the database to answer what is in flight. */
async function closeAll (running: Running): Promise<void> {
  await running.app?.close()
  await running.cluster?.stop()
  await running.database?.stop()
}

await main()
