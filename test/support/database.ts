import pg from 'pg'

/** One short-lived connection for a test's or the bench's own queries (set-up, row checks, clean-up), always closed. */
export async function withClient<T> (databaseUrl: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  try {
    return await work(client)
  } finally {
    await client.end()
  }
}
