import t from 'tap'
import { randomUUID } from 'node:crypto'
import type { NewEvent } from '../db/events.js'
import { createGroupCommit, type GroupCommitOptions } from '../lib/group-commit.js'
import { buildTestApp, checkedOutAfterSettling, createOrganization, sendEvent } from './helpers.js'

const OPTIONS: GroupCommitOptions = { waitMs: 0, maxEvents: 1000, maxConcurrentGroups: 4 }

function event (organizationId: string, fields: Partial<NewEvent> = {}): NewEvent {
  return { id: randomUUID(), organization_id: organizationId, type: 'group.test', payload: { n: 1 }, dedup_id: null, source: null, ...fields }
}

async function setUp (t: Parameters<typeof buildTestApp>[0]) {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  return { app, organization, checkedOut: () => checkedOutAfterSettling(app) }
}

t.test('writes issued together share INSERTs and each gets its own outcomes', async (t) => {
  const { app, organization, checkedOut } = await setUp(t)
  const other = await createOrganization(app)
  const groupCommit = createGroupCommit(app.pg, OPTIONS)
  const shared = `shared-${randomUUID()}`
  const writes = Array.from({ length: 200 }, (_, i) => {
    const owner = i < 100 ? organization.id : other.id
    // Every tenth write repeats one dedup_id of its organization: one of them wins, the rest are duplicates.
    return [event(owner, { dedup_id: i % 10 === 0 ? shared : `own-${i}-${randomUUID()}`, payload: { i } }), event(owner, { payload: { i, second: true } })]
  })
  const outcomes = await Promise.all(writes.map((events) => groupCommit.write(events)))

  const stats = groupCommit.stats()
  t.equal(stats.events, 400, 'every event was written')
  t.ok(stats.groups < writes.length, `${stats.groups} groups for ${writes.length} writes`)
  t.equal(outcomes.flat().length, 400)
  for (const [index, result] of outcomes.entries()) {
    const [first, second] = result
    t.equal(second?.status, 'accepted')
    t.equal(second?.event.id, writes[index]?.[1]?.id, 'an event without dedup_id keeps its own id')
    if (index % 10 !== 0) t.equal(first?.event.id, writes[index]?.[0]?.id)
  }
  for (const owner of [organization.id, other.id]) {
    const racing = outcomes.filter((_, index) => index % 10 === 0 && writes[index]?.[0]?.organization_id === owner).map((result) => result[0])
    t.equal(racing.filter((outcome) => outcome?.status === 'accepted').length, 1, 'one write of the shared dedup_id wins per organization')
    t.equal(new Set(racing.map((outcome) => outcome?.event.id)).size, 1, 'the others resolve to its id')
  }
  const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE organization_id = ANY($1::uuid[])', [[organization.id, other.id]])
  t.equal(rows[0]?.n, 400 - 18, 'one row per event except the 18 duplicates')
  t.equal(await checkedOut(), 0, 'no pool client checked out')
})

t.test('a group never exceeds maxEvents unless a single write is larger', async (t) => {
  const { app, organization } = await setUp(t)
  const groupCommit = createGroupCommit(app.pg, { ...OPTIONS, maxEvents: 25 })
  await Promise.all(Array.from({ length: 30 }, () => groupCommit.write(Array.from({ length: 10 }, () => event(organization.id)))))
  t.equal(groupCommit.stats().largest_group, 20, 'two writes of 10 fit, a third would exceed 25')
  await groupCommit.write(Array.from({ length: 40 }, () => event(organization.id)))
  t.equal(groupCommit.stats().largest_group, 40, 'a write larger than the bound goes alone, unsplit')
})

t.test('a write PostgreSQL refuses fails alone; its group neighbours are stored', async (t) => {
  const { app, organization, checkedOut } = await setUp(t)
  const groupCommit = createGroupCommit(app.pg, OPTIONS)
  for (let round = 0; round < 20; round++) {
    const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) =>
      groupCommit.write([event(organization.id, { payload: i === 3 ? { bad: 'nul \u0000 inside' } : { i } })])))
    t.same(results.map((result) => result.status), ['fulfilled', 'fulfilled', 'fulfilled', 'rejected', ...Array(6).fill('fulfilled')])
    const rejected = results[3]
    t.equal(rejected?.status === 'rejected' ? (rejected.reason as { code?: string }).code : undefined, '22P05')
  }
  t.equal(groupCommit.stats().isolated_failures, 20)
  const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE organization_id = $1', [organization.id])
  t.equal(rows[0]?.n, 180)
  t.equal(await checkedOut(), 0, 'no pool client checked out')
})

t.test('with the database unreachable every write of the group fails, and nothing is left queued', async (t) => {
  const broken = createGroupCommit({ query: async () => { throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) } }, OPTIONS)
  const results = await Promise.allSettled(Array.from({ length: 5 }, () => broken.write([event(randomUUID())])))
  t.same(results.map((result) => result.status), Array(5).fill('rejected'))
  t.equal(broken.stats().isolated_failures, 0, 'not worth retrying one by one')
  await broken.drain()
})

t.test('a failure after the commit fails its writes without writing anything twice', async (t) => {
  const { app, organization, checkedOut } = await setUp(t)
  // The lookup of duplicates' originals fails with a code that would be retried if it came from the INSERT.
  const failingLookup = {
    query: (config: { name?: string }, values?: unknown[]) => config.name === 'events-by-dedup-keys'
      ? Promise.reject(Object.assign(new Error('could not serialize access'), { code: '40001' }))
      : app.pg.query(config as Parameters<typeof app.pg.query>[0], values)
  } as unknown as Parameters<typeof createGroupCommit>[0]
  const groupCommit = createGroupCommit(failingLookup, OPTIONS)
  const dedupId = `after-commit-${randomUUID()}`
  const results = await Promise.allSettled([
    groupCommit.write([event(organization.id, { dedup_id: dedupId })]),
    groupCommit.write([event(organization.id, { dedup_id: dedupId })]),
    groupCommit.write([event(organization.id)])
  ])
  t.same(results.map((result) => result.status), ['rejected', 'rejected', 'rejected'], 'the group shares the failure')
  t.equal(groupCommit.stats().isolated_failures, 0, 'nothing was retried alone')
  const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE organization_id = $1', [organization.id])
  t.equal(rows[0]?.n, 2, 'the committed rows exist once: the dedup_id once, the event without one once')
  t.equal(await checkedOut(), 0, 'no pool client checked out')
})

t.test('drain writes what is queued before it resolves', async (t) => {
  const { app, organization } = await setUp(t)
  const groupCommit = createGroupCommit(app.pg, { ...OPTIONS, waitMs: 50 })
  const pending = Promise.all(Array.from({ length: 5 }, () => groupCommit.write([event(organization.id)])))
  await groupCommit.drain()
  t.equal(groupCommit.stats().events, 5)
  t.equal((await pending).length, 5)
})

t.test('through HTTP, one unstorable event among concurrent requests is the only 400', async (t) => {
  const { app, organization, checkedOut } = await setUp(t)
  for (let round = 0; round < 10; round++) {
    const responses = await Promise.all(Array.from({ length: 20 }, (_, i) =>
      sendEvent(app, organization, { type: 'group.http', payload: i === 7 ? { text: 'a\u0000b' } : { i } })))
    t.same(responses.map((response) => response.statusCode), responses.map((_, i) => i === 7 ? 400 : 201))
    t.equal(responses[7]?.json().code, 'unsupported_character')
  }
  const stats = (await app.inject({ method: 'GET', url: '/stats/ingest', headers: organization.headers })).json()
  t.equal(stats.events, 10 * 20, 'every request went through the group commit')
  t.equal(await checkedOut(), 0, 'no pool client checked out')
})
