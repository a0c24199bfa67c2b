import pg from 'pg'
import { randomUUID } from 'node:crypto'
import { poolConfig } from '../db/pool.js'
import { findEvent, insertEvents, type NewEvent } from '../db/events.js'

/**
 * `node dist/bench/prepared-statements.js` (after `npm run build`, with DATABASE_URL): what
 * DATABASE_PREPARED_STATEMENTS=false costs. The service's own db/ functions run on one connection with named
 * statements and on one without, in alternating rounds so that a busy machine weighs on both alike; prints
 * milliseconds per call. Creates one organization and deletes it (with its events) at the end.
 */
const databaseUrl = process.env.DATABASE_URL
if (!databaseUrl) throw new Error('DATABASE_URL is required')
const ROUNDS = Number(process.env.ROUNDS ?? 6)
const CALLS = Number(process.env.CALLS ?? 300)
const GROUP = 15
const PAYLOAD = { text: 'x'.repeat(900) }

type Kind = 'named' | 'unnamed'
type Timings = Record<'insert1' | 'insertGroup' | 'findById', number>

const pool = (preparedStatements: boolean) => new pg.Pool(poolConfig({
  connectionString: databaseUrl, applicationName: 'bench-prepared-statements', max: 1, connectTimeoutMs: 5000, statementTimeoutMs: 0, preparedStatements, pooled: false
}))

async function timed (work: () => Promise<unknown>, calls: number): Promise<number> {
  const started = process.hrtime.bigint()
  for (let i = 0; i < calls; i++) await work()
  return Number(process.hrtime.bigint() - started) / 1e6
}

const admin = new pg.Client({ connectionString: databaseUrl })
await admin.connect()
const { rows } = await admin.query<{ id: string }>(
  'INSERT INTO organizations (name, tier, key_hash, key_prefix) VALUES (\'bench-prepared-statements\', \'free\', sha256(gen_random_uuid()::text::bytea), \'sk_bench\') RETURNING id')
const organizationId = rows[0]?.id as string
const pools: Record<Kind, pg.Pool> = { named: pool(true), unnamed: pool(false) }
const totals: Record<Kind, Timings> = { named: { insert1: 0, insertGroup: 0, findById: 0 }, unnamed: { insert1: 0, insertGroup: 0, findById: 0 } }
const newEvent = (): NewEvent => ({ id: randomUUID(), organization_id: organizationId, type: 'bench', payload: PAYLOAD, dedup_id: randomUUID(), source: null })
try {
  for (let round = 0; round < ROUNDS; round++) {
    const order: Kind[] = round % 2 === 0 ? ['named', 'unnamed'] : ['unnamed', 'named']
    for (const kind of order) {
      const db = pools[kind]
      const last = newEvent()
      await insertEvents(db, JSON.stringify([last]))
      totals[kind].insert1 += await timed(() => insertEvents(db, JSON.stringify([newEvent()])), CALLS)
      totals[kind].insertGroup += await timed(() => insertEvents(db, JSON.stringify(Array.from({ length: GROUP }, newEvent))), CALLS / 5)
      totals[kind].findById += await timed(() => findEvent(db, organizationId, last.id), CALLS)
    }
  }
  for (const kind of ['named', 'unnamed'] as const) {
    const total = totals[kind]
    console.log(`${kind}: insert-events 1 event ${(total.insert1 / ROUNDS / CALLS).toFixed(2)} ms, ` +
      `${GROUP} events ${(total.insertGroup / ROUNDS / (CALLS / 5)).toFixed(2)} ms, event-by-id ${(total.findById / ROUNDS / CALLS).toFixed(2)} ms per call`)
  }
} finally {
  await admin.query('DELETE FROM organizations WHERE id = $1', [organizationId])
  await admin.end()
  await Promise.all([pools.named.end(), pools.unnamed.end()])
}
