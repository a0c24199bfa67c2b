import pino from 'pino'
import { openDatabase } from '../db/embedded-postgres.js'
import { runMigrations } from '../db/migrate.js'
import { loadConfig } from '../lib/config.js'

// `npm run migrate`: applies pending migrations to DATABASE_DIRECT_URL, DATABASE_URL or the embedded server, and
// exits. Not through a transaction-mode pooler: node-pg-migrate holds a session-level advisory lock.
const log = pino({ name: 'migrate' })
const config = loadConfig(process.env, { listens: false })
const database = await openDatabase(config, log)
try {
  const applied = await runMigrations(config.DATABASE_DIRECT_URL ?? database.url, log)
  log.info(applied.length === 0 ? 'database is up to date' : `${applied.length} migration(s) applied`)
} finally {
  await database.stop()
}
