import fp from 'fastify-plugin'
import fastifyPostgres from '@fastify/postgres'
import { runMigrations } from '../db/migrate.js'
import { poolClientSettings, survivePoolErrors } from '../db/pool.js'

export interface DbOptions {
  databaseUrl: string
  poolMax: number
  connectTimeoutMs: number
  statementTimeoutMs: number
}

/**
 * One pg pool per process, migrated before the first request. @fastify/postgres ends the pool on close.
 */
export default fp<DbOptions>(async (fastify, options) => {
  await runMigrations(options.databaseUrl, fastify.log)
  await fastify.register(fastifyPostgres, {
    connectionString: options.databaseUrl,
    max: options.poolMax,
    connectionTimeoutMillis: options.connectTimeoutMs,
    application_name: 'triggers-api',
    ...poolClientSettings(options.statementTimeoutMs)
  })
  survivePoolErrors(fastify.pg.pool, (error) => fastify.log.warn({ err: error }, 'database connection failed'))
}, { name: 'db' })
