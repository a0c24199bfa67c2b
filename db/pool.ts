import pg, { type Pool, type PoolClient } from 'pg'

/**
 * Makes database restarts survivable. pg removes the pool's error listener from a client while it is checked
 * out, and a dying connection can emit 'error' more than once (the server's 57P01, then "Connection
 * terminated"): with no listener left, Node turns that into an uncaught exception that ends the process.
 * Every client therefore gets a listener of its own for its whole life; the query in flight still rejects,
 * and the pool discards the broken client when it is released.
 */
export function survivePoolErrors (pool: Pool, onError: (error: Error) => void): void {
  // The pool re-emits an idle client's error; the client's own listener below has reported it already.
  pool.on('error', () => {})
  pool.on('connect', (client: PoolClient) => {
    client.on('error', onError)
  })
}

export interface PoolSettings {
  connectionString: string
  applicationName: string
  max: number
  connectTimeoutMs: number
  statementTimeoutMs: number
  /**
   * False when DATABASE_URL is a pooler that does not keep named prepared statements between transactions
   * (PgBouncer in transaction mode before 1.21): every query then goes out unnamed.
   */
  preparedStatements: boolean
  /**
   * True when connections go through a pooler (DATABASE_DIRECT_URL is set apart from DATABASE_URL): PgBouncer
   * refuses startup parameters it does not track, so statement_timeout is not sent (see poolConfig).
   */
  pooled: boolean
}

/**
 * The one place a process's pg pool is configured (the API's and the separate worker's), so the pooler
 * settings apply to every query of the service. A stuck statement cannot hold a connection forever: directly
 * connected, statement_timeout is a startup parameter of every connection; through a pooler that would be
 * refused ("unsupported startup parameter"), and a session-level SET would leak to other clients of the
 * pooler, so the limit belongs to the pooler (PgBouncer's query_timeout) or the role (checkStatementTimeout).
 */
export function poolConfig (settings: PoolSettings): pg.PoolConfig {
  const timeout = settings.statementTimeoutMs > 0 && !settings.pooled ? { statement_timeout: settings.statementTimeoutMs } : {}
  return {
    connectionString: settings.connectionString,
    application_name: settings.applicationName,
    max: settings.max,
    connectionTimeoutMillis: settings.connectTimeoutMs,
    keepAlive: true,
    ...timeout,
    ...(settings.preparedStatements ? {} : { Client: UnnamedStatementsClient })
  }
}

/**
 * A pg client that sends every query unnamed: `name` is taken off plain query configs, so the SQL modules in
 * db/ keep their names (used when prepared statements are on) and nothing else changes. An unnamed statement
 * lives only until the next one on the connection, which is all a transaction-mode pooler can keep.
 */
class UnnamedStatementsClient extends pg.Client {
  constructor (config?: string | pg.ClientConfig) {
    super(config)
    const query = this.query.bind(this) as (...args: unknown[]) => unknown
    this.query = ((first: unknown, ...rest: unknown[]) => query(withoutName(first), ...rest)) as pg.Client['query']
  }
}

/** A plain query config without its `name`; anything else (text, a Submittable such as a cursor) unchanged. */
function withoutName (config: unknown): unknown {
  if (typeof config !== 'object' || config === null || Object.getPrototypeOf(config) !== Object.prototype || !('name' in config)) return config
  const { name: _name, ...unnamed } = config as Record<string, unknown>
  return unnamed
}

export interface TimeoutLog {
  warn: (details: object, message: string) => void
}

/**
 * Through a pooler the service cannot set statement_timeout itself (see poolConfig): it reads what the pooled
 * sessions get and warns when it is not the limit DATABASE_STATEMENT_TIMEOUT_MS asks for.
 */
export async function checkStatementTimeout (pool: Pool, statementTimeoutMs: number, log: TimeoutLog): Promise<void> {
  if (statementTimeoutMs === 0) return
  const { rows } = await pool.query<{ ms: string }>('SELECT setting AS ms FROM pg_settings WHERE name = \'statement_timeout\'')
  const actual = Number(rows[0]?.ms ?? 0)
  if (actual === statementTimeoutMs) return
  log.warn({ statement_timeout_ms: actual, wanted_ms: statementTimeoutMs },
    'DATABASE_URL is a pooler, which cannot pass statement_timeout from the service; set it on the database role ' +
    '(ALTER ROLE <user> SET statement_timeout = ...) or use the pooler\'s own limit (PgBouncer: query_timeout)')
}
