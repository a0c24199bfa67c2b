import fp from 'fastify-plugin'
import fastifyPostgres from '@fastify/postgres'
import { runMigrations } from '../db/migrate.js'

export interface DbOptions {
  databaseUrl: string
  poolMax: number
  connectTimeoutMs: number
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
    application_name: 'triggers-api'
  })
  // An idle client losing its connection (database restart) must not crash the process.
  fastify.pg.pool.on('error', (error) => fastify.log.warn({ err: error }, 'idle database client failed'))
}, { name: 'db' })
