import { runner } from 'node-pg-migrate'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/** Plain-SQL migrations live in the top-level migrations/ folder (copied next to the build in dist/). */
const MIGRATIONS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'migrations')

interface MigrationLogger {
  info: (message: string) => void
}

/**
 * Applies every pending migration in one transaction. Instances starting together wait on
 * node-pg-migrate's advisory lock instead of failing, so exactly one of them migrates.
 */
export async function runMigrations (databaseUrl: string, log: MigrationLogger): Promise<string[]> {
  const applied = await runner({
    databaseUrl,
    dir: MIGRATIONS_DIR,
    direction: 'up',
    migrationsTable: 'pgmigrations',
    singleTransaction: true,
    checkOrder: true,
    advisoryLockMode: 'wait',
    log: () => {}
  })
  const names = applied.map((migration) => migration.name)
  if (names.length > 0) log.info(`applied migrations: ${names.join(', ')}`)
  return names
}
