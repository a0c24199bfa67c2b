import { randomUUID } from 'node:crypto'
import pg from 'pg'
import { directDatabaseUrl, type Teardown } from './helpers.js'

/**
 * Teardowns run last-registered first (tap runs a test's own in order), so an app built on a database of the
 * test's own closes before that database is dropped.
 */
export function lastFirst (t: Teardown): Teardown {
  const stack: Array<() => unknown> = []
  t.teardown(async () => {
    for (const fn of stack.reverse()) await fn()
  })
  return { teardown: (fn) => { stack.push(fn) } }
}

async function onServer (query: string): Promise<void> {
  const admin = new pg.Client({ connectionString: directDatabaseUrl(process.env.DATABASE_URL as string) })
  await admin.connect()
  try {
    await admin.query(query)
  } finally {
    await admin.end()
  }
}

/**
 * An empty database of the test's own on the suite's server (an app built on it migrates it), for tests that
 * break its schema or count all of its rows; dropped when the test ends. Register it on a `lastFirst` scope
 * before the apps that use it.
 */
export async function ownDatabase (t: Teardown, prefix: string): Promise<string> {
  const name = `${prefix}_${randomUUID().replaceAll('-', '')}`
  await onServer(`CREATE DATABASE ${name}`)
  t.teardown(() => onServer(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  const url = new URL(process.env.DATABASE_URL as string)
  url.pathname = `/${name}`
  return url.toString()
}
