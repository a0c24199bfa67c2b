import fp from 'fastify-plugin'
import fastifyPostgres from '@fastify/postgres'
import { runMigrations } from '../../db/migrate.js'
import { checkStatementTimeout, poolConfig, survivePoolErrors } from '../../db/pool.js'

export interface DbOptions {
  /** How the pool's connections name themselves in pg_stat_activity. */
  applicationName: string
  /** The pool's server: DATABASE_URL, which may be a transaction-mode pooler. */
  databaseUrl: string
  /** A direct connection (DATABASE_DIRECT_URL, else databaseUrl): migrations and their advisory lock. */
  directUrl: string
  /** False in a cluster child: the primary has migrated before forking. */
  migrate: boolean
  poolMax: number
  connectTimeoutMs: number
  statementTimeoutMs: number
  preparedStatements: boolean
}

/**
 * One pg pool per process, migrated before the first request (over the direct connection: node-pg-migrate
 * holds a session-level advisory lock, which a transaction-mode pooler would hand to other clients).
 * @fastify/postgres ends the pool on close.
 */
export default fp<DbOptions>(async (fastify, options) => {
  if (options.migrate) await runMigrations(options.directUrl, fastify.log)
  const pooled = options.directUrl !== options.databaseUrl
  await fastify.register(fastifyPostgres, poolConfig({
    connectionString: options.databaseUrl,
    applicationName: options.applicationName,
    max: options.poolMax,
    connectTimeoutMs: options.connectTimeoutMs,
    statementTimeoutMs: options.statementTimeoutMs,
    preparedStatements: options.preparedStatements,
    pooled
  }))
  survivePoolErrors(fastify.pg.pool, (error) => fastify.log.warn({ err: error }, 'database connection failed'))
  if (pooled) {
    fastify.addHook('onReady', async () => {
      await checkStatementTimeout(fastify.pg.pool, options.statementTimeoutMs, fastify.log)
        .catch((error: unknown) => fastify.log.warn({ err: error }, 'could not read statement_timeout through the pooler'))
    })
  }
}, { name: 'postgres' })
