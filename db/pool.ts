import type { Pool, PoolClient } from 'pg'

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

/** Client settings for every pool connection: a stuck statement cannot hold a connection forever. */
export function poolClientSettings (statementTimeoutMs: number): { statement_timeout?: number, keepAlive: boolean } {
  return { keepAlive: true, ...(statementTimeoutMs > 0 ? { statement_timeout: statementTimeoutMs } : {}) }
}
