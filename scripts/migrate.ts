import pino from 'pino'
import { openDatabase } from '../db/embedded-postgres.js'
import { runMigrations } from '../db/migrate.js'
import { loadConfig } from '../plugins/config.js'

// `npm run migrate`: applies pending migrations to DATABASE_URL (or the embedded server) and exits.
const log = pino({ name: 'migrate' })
const database = await openDatabase(loadConfig(process.env, { listens: false }), log)
try {
  const applied = await runMigrations(database.url, log)
  log.info(applied.length === 0 ? 'database is up to date' : `${applied.length} migration(s) applied`)
} finally {
  await database.stop()
}
