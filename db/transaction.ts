import type { Pool, PoolClient } from 'pg'

/**
 * Runs `work` in a transaction on one client. Unlike @fastify/postgres's transact, it waits for ROLLBACK
 * before rethrowing, so the client is back in the pool when the caller sees the error.
 */
export async function inTransaction<T> (pool: Pool, work: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    const result = await work(client)
    await client.query('COMMIT')
    client.release()
    return result
  } catch (error) {
    // A failed ROLLBACK means the connection is broken: release(error) discards it instead of pooling it.
    await client.query('ROLLBACK').then(() => client.release(), (rollbackError: Error) => client.release(rollbackError))
    throw error
  }
}
