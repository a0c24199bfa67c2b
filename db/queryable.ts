import type { Pool, PoolClient } from 'pg'

/** A pool or a checked-out client: table modules take either, so they work inside transactions too. */
export type Queryable = Pick<Pool | PoolClient, 'query'>
