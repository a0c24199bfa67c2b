import t from 'tap'
import { randomUUID } from 'node:crypto'
import type { NewEvent } from '../../db/events.js'
import { createGroupCommit, type GroupCommitOptions } from '../../lib/group-commit.js'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, checkedOutAfterSettling, createOrganization, sendEvent, type TestOrganization } from '../support/helpers.js'

const OPTIONS: GroupCommitOptions = { waitMs: 0, maxEvents: 1000, maxConcurrentGroups: 4, maxBytes: 8 * 1024 * 1024, maxQueuedEvents: 100_000, maxQueueWaitMs: 0, isolatedRetryConcurrency: 2 }

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

t.test('a failure after the commit fails only the writes that needed it, and writes nothing twice', async (t) => {
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
  t.same(results.map((result) => result.status), ['fulfilled', 'rejected', 'fulfilled'],
    'only the duplicate, whose original could not be looked up, fails; the inserted writes are answered')
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

/** JSON text of a payload nested `depth` levels deep, {"a":{"a":...}}, written out (JSON.stringify would overflow). */
function nestedJson (depth: number): string {
  return `${'{"a":'.repeat(depth - 1)}{}${'}'.repeat(depth - 1)}`
}

function sendJson (app: FastifyInstance, organization: TestOrganization, url: string, body: string) {
  return app.inject({ method: 'POST', url, headers: { ...organization.headers, 'content-type': 'application/json' }, payload: body })
}

t.test('a payload nested too deep is refused with 400 and fails none of its neighbours', async (t) => {
  const { app, organization, checkedOut } = await setUp(t)
  const other = await createOrganization(app)
  for (let round = 0; round < 5; round++) {
    const good = Array.from({ length: 100 }, (_, i) => sendEvent(app, other, { type: 'group.good', payload: { i } }))
    const deep = [64, 65, 5000].map((depth) => sendJson(app, organization, '/api/events', `{"type":"group.deep","payload":${nestedJson(depth)}}`))
    const [goodAnswers, deepAnswers] = await Promise.all([Promise.all(good), Promise.all(deep)])
    t.same(goodAnswers.map((response) => response.statusCode), goodAnswers.map(() => 201), 'all 100 good writes of the other organization stored')
    t.same(deepAnswers.map((response) => response.statusCode), [201, 400, 400], 'the default limit is 64 levels')
    t.equal(deepAnswers[2]?.json().code, 'payload_too_deep')
  }
  const batch = await sendJson(app, organization, '/api/events/batch',
    `{"events":[{"type":"batch.deep","payload":${nestedJson(30_000)}},{"type":"batch.fine","payload":{"ok":true}}]}`)
  t.equal(batch.statusCode, 200)
  t.match(batch.json(), { accepted: 1, rejected: 1, results: [{ status: 'rejected', error: /deeper than 64/ }, { status: 'accepted' }] })
  t.equal(await checkedOut(), 0, 'no pool client checked out')
})

t.test('a write that cannot be serialized fails alone when it is queued', async (t) => {
  const { app, organization } = await setUp(t)
  const groupCommit = createGroupCommit(app.pg, OPTIONS)
  const results = await Promise.allSettled([
    groupCommit.write([event(organization.id)]),
    groupCommit.write([event(organization.id, { payload: { big: 10n } })]),
    groupCommit.write([event(organization.id)])
  ])
  t.same(results.map((result) => result.status), ['fulfilled', 'rejected', 'fulfilled'])
  const [, refused] = results
  t.match(refused?.status === 'rejected' ? refused.reason : undefined, { statusCode: 400, code: 'invalid_payload' })
})

t.test('a group never exceeds maxBytes unless a single write is larger', async (t) => {
  const { app, organization } = await setUp(t)
  const payload = { text: 'x'.repeat(1000) }
  const groupCommit = createGroupCommit(app.pg, { ...OPTIONS, maxBytes: 5000 })
  await Promise.all(Array.from({ length: 20 }, () => groupCommit.write([event(organization.id, { payload })])))
  t.equal(groupCommit.stats().largest_group, 4, 'four ~1.2 KB events fit in 5000 bytes, a fifth would not')
  await groupCommit.write(Array.from({ length: 10 }, () => event(organization.id, { payload })))
  t.equal(groupCommit.stats().largest_group, 10, 'a write larger than the bound goes alone, unsplit')
})

t.test('a full queue answers 503 overloaded with Retry-After instead of growing', async (t) => {
  const { app, organization, checkedOut } = await setUp(t)
  const groupCommit = createGroupCommit(app.pg, { ...OPTIONS, maxConcurrentGroups: 1, maxEvents: 10, maxQueuedEvents: 20 })
  const results = await Promise.allSettled(Array.from({ length: 100 }, () => groupCommit.write([event(organization.id)])))
  const refused = results.flatMap((result) => result.status === 'rejected' ? [result.reason] : [])
  t.ok(refused.length > 0, `${refused.length} of 100 writes refused while the queue was full`)
  t.ok(refused.every((error) => error.code === 'overloaded' && error.statusCode === 503 && error.headers['retry-after'] === '1'))
  t.equal(groupCommit.stats().overloaded, refused.length)
  const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE organization_id = $1', [organization.id])
  t.equal(rows[0]?.n, 100 - refused.length, 'every write not refused was stored')

  const tight = await buildTestApp(t, { INGEST_QUEUE_MAX_EVENTS: '1', INGEST_GROUP_CONCURRENCY: '1' })
  const tenant = await createOrganization(tight)
  const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => sendEvent(tight, tenant, { type: 'group.full', payload: { i } })))
  const busy = answers.filter((response) => response.statusCode === 503)
  t.ok(busy.length > 0, `${busy.length} of 50 requests answered 503`)
  t.ok(busy.every((response) => response.json().code === 'overloaded' && response.headers['retry-after'] === '1'))
  t.same(answers.filter((response) => response.statusCode !== 503).map((response) => response.statusCode), answers.filter((response) => response.statusCode !== 503).map(() => 201))
  t.equal(await checkedOut(), 0, 'no pool client checked out')
})

t.test('a queue that is behind (its oldest write waited past maxQueueWaitMs) refuses new writes until it catches up', async (t) => {
  const { app, organization, checkedOut } = await setUp(t)
  let release = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  let holding = true
  // The first INSERT is held, as a slow commit would be: the writes behind it wait in the queue.
  const slow = {
    query: async (config: Parameters<typeof app.pg.query>[0], values?: unknown[]) => {
      if (holding && (config as { name?: string }).name === 'insert-events') {
        holding = false
        await held
      }
      return await app.pg.query(config, values)
    }
  } as unknown as Parameters<typeof createGroupCommit>[0]
  const groupCommit = createGroupCommit(slow, { ...OPTIONS, maxConcurrentGroups: 1, maxQueueWaitMs: 5 })
  const inFlight = groupCommit.write([event(organization.id)])
  await new Promise((resolve) => setImmediate(resolve))
  const queued = groupCommit.write([event(organization.id)])
  await new Promise((resolve) => setTimeout(resolve, 50))
  const refused = await groupCommit.write([event(organization.id)]).then(() => undefined, (error: unknown) => error)
  t.match(refused, { statusCode: 503, code: 'overloaded', headers: { 'retry-after': '1' } }, 'a write behind a queue waiting for longer than the bound is refused')
  release()
  t.equal((await inFlight)[0]?.status, 'accepted')
  t.equal((await queued)[0]?.status, 'accepted', 'what was queued is stored')
  const later = await groupCommit.write([event(organization.id)])
  t.equal(later[0]?.status, 'accepted', 'once the queue has caught up, writes are accepted again')
  t.equal(groupCommit.stats().overloaded, 1)
  const { rows } = await app.pg.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE organization_id = $1', [organization.id])
  t.equal(rows[0]?.n, 3, 'the refused write was not stored')
  t.equal(await checkedOut(), 0, 'no pool client checked out')
})

t.test('writes of a refused group are retried alone a few at a time', async (t) => {
  const { app, organization, checkedOut } = await setUp(t)
  let running = 0
  let most = 0
  const counting = {
    query: async (config: Parameters<typeof app.pg.query>[0], values?: unknown[]) => {
      running++
      most = Math.max(most, running)
      try {
        return await app.pg.query(config, values)
      } finally {
        running--
      }
    }
  } as unknown as Parameters<typeof createGroupCommit>[0]
  const groupCommit = createGroupCommit(counting, { ...OPTIONS, maxConcurrentGroups: 1, isolatedRetryConcurrency: 3 })
  const results = await Promise.allSettled(Array.from({ length: 40 }, (_, i) =>
    groupCommit.write([event(organization.id, { payload: i % 4 === 0 ? { text: 'a\u0000b' } : { i } })])))
  t.equal(results.filter((result) => result.status === 'rejected').length, 10, 'only the 10 unstorable writes fail')
  t.ok(most <= 3, `at most 3 statements at once while retrying alone (saw ${most})`)
  t.equal(groupCommit.stats().isolated_failures, 10)
  t.equal(await checkedOut(), 0, 'no pool client checked out')
})
