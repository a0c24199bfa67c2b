import { randomBytes, randomUUID } from 'node:crypto'

/**
 * What the fault suite runs against and with. The faults themselves (pg_ctlcluster, redis-cli) act on the
 * machine's PostgreSQL 15 cluster and its Redis on 6379, so the URLs may only be changed to other databases or
 * key spaces of those same servers.
 */
export const DATABASE_URL = process.env.FAULTS_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test'
export const REDIS_HOST = '127.0.0.1'
export const REDIS_PORT = 6379
export const REDIS_URL = `redis://${REDIS_HOST}:${REDIS_PORT}`

/** One id per run: it names the run's Redis keys, database connections, organizations and dedup_ids. */
export const RUN_ID = randomUUID().slice(0, 8)
export const ADMIN_TOKEN = randomBytes(24).toString('base64url')

export const CONNECTIONS = positiveInteger('FAULTS_CONNECTIONS', 32)
/**
 * Requests per second over all connections. Bounded so that the two cores keep headroom: recovery times
 * should measure the service, not a machine starved by its own load generator.
 */
export const REQUESTS_PER_SECOND = positiveInteger('FAULTS_RATE', 400)
/** Every Nth request of the load carries a type the healthy webhook subscribes to. */
export const HOOK_EVERY = 10
export const REQUEST_TIMEOUT_MS = 10_000

export const POOL_MAX = 10
export const WEBHOOK_TIMEOUT_MS = 2000
export const RETRY_SCHEDULE = [0, 1, 1]
/** The shortest the service allows (timeout + 5 s): a killed worker's claims come back quickly. */
export const CLAIM_SECONDS = Math.ceil(WEBHOOK_TIMEOUT_MS / 1000) + 5
/** Polling as rare as allowed, so that a prompt delivery can only have been woken by a notification. */
export const POLL_INTERVAL_MS = 60_000
export const ENDPOINT_CONCURRENCY = 32

/**
 * Event types: the healthy endpoint takes `faults.hook.*`, the faulty receivers only `faults.hook.faulty`; no
 * webhook takes `faults.prep`, the events sent before the phases for the subscriptions.
 */
export const TYPES = {
  plain: 'faults.load',
  prep: 'faults.prep',
  hooked: 'faults.hook.load',
  faulty: 'faults.hook.faulty',
  wakeUp: 'faults.hook.wakeup'
} as const

function positiveInteger (name: string, fallback: number): number {
  const value = process.env[name]
  if (value === undefined || value === '') return fallback
  const parsed = Number(value)
  if (!Number.isInteger(parsed) || parsed <= 0) throw new Error(`${name} must be a positive integer`)
  return parsed
}

/** The database URL with an application_name, so pg_stat_activity tells the suite's processes apart. */
export function databaseUrlFor (applicationName: string): string {
  const url = new URL(DATABASE_URL)
  url.searchParams.set('application_name', applicationName)
  return url.toString()
}
