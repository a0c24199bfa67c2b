import t from 'tap'
import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, createOrganization, sendEvent, type TestOrganization } from '../../../support/helpers.js'

async function sendMany (app: FastifyInstance, organization: TestOrganization, count: number, type = 'inbox.test'): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < count; i++) ids.push((await sendEvent(app, organization, { type, payload: { i } })).json().event_id)
  return ids
}

function inbox (app: FastifyInstance, organization: TestOrganization, query = '') {
  return app.inject({ method: 'GET', url: `/api/inbox${query}`, headers: organization.headers })
}

t.test('the inbox lists pending events oldest first and pages through each exactly once', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const sent = await sendMany(app, organization, 23)

  const seen: string[] = []
  let cursor: string | null = null
  let more = true
  let pages = 0
  while (more && pages < 20) {
    const response = await inbox(app, organization, `?limit=5${cursor ? `&cursor=${cursor}` : ''}`)
    t.equal(response.statusCode, 200)
    const page = response.json()
    t.equal(page.count, page.events.length)
    seen.push(...page.events.map((event: { event_id: string }) => event.event_id))
    cursor = page.next_cursor
    more = page.has_more
    pages++
  }
  t.equal(pages, 5)
  t.same(seen, sent, 'every event once, in the order sent')

  const defaults = (await inbox(app, organization)).json()
  t.equal(defaults.count, 23, 'default limit is 50')
  t.equal(defaults.has_more, false)
  t.type(defaults.next_cursor, 'string', 'a cursor to resume from, also on the last page')
  t.match(defaults.events[0], { event_id: sent[0], type: 'inbox.test', payload: { i: 0 }, status: 'pending', delivery_status: 'none', acknowledged_at: null })

  const tail = (await inbox(app, organization, `?cursor=${defaults.next_cursor}`)).json()
  t.equal(tail.count, 0, 'nothing after the last event yet')
  t.equal(tail.next_cursor, defaults.next_cursor, 'an empty page keeps the place')
  const [later] = await sendMany(app, organization, 1)
  const next = (await inbox(app, organization, `?cursor=${tail.next_cursor}`)).json()
  t.same(next.events.map((event: { event_id: string }) => event.event_id), [later], 'tailing from it finds the next event')
})

t.test('inbox filters by type, status and since', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const [first] = await sendMany(app, organization, 2, 'kind.a')
  const before = new Date().toISOString()
  const [later] = await sendMany(app, organization, 1, 'kind.b')
  await app.inject({ method: 'POST', url: `/api/ack/${first}`, headers: organization.headers })

  t.equal((await inbox(app, organization, '?type=kind.a')).json().count, 1, 'acknowledged kind.a no longer pending')
  t.equal((await inbox(app, organization, '?type=kind.b')).json().count, 1)
  t.same((await inbox(app, organization, '?status=acknowledged')).json().events.map((event: { event_id: string }) => event.event_id), [first])
  t.equal((await inbox(app, organization, '?status=all')).json().count, 3)
  const since = (await inbox(app, organization, `?status=all&since=${encodeURIComponent(before)}`)).json()
  t.same(since.events.map((event: { event_id: string }) => event.event_id), [later])
})

t.test('bad inbox queries answer 400', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  for (const query of ['?limit=0', '?limit=101', '?limit=abc', '?status=bogus', '?since=yesterday', '?cursor=%%%', '?cursor=bm90LWEtbnVtYmVy', '?unknown=1']) {
    const response = await inbox(app, organization, query)
    t.equal(response.statusCode, 400, query)
    t.ok(['validation_failed', 'invalid_cursor'].includes(response.json().code), query)
  }
})

t.test('acknowledging is idempotent, available on both paths and scoped to the organization', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const stranger = await createOrganization(app)
  const [one, two] = await sendMany(app, organization, 2)

  const first = await app.inject({ method: 'POST', url: `/api/events/${one}/ack`, headers: organization.headers })
  t.equal(first.statusCode, 200)
  t.match(first.json(), { event_id: one, status: 'acknowledged', acknowledged_at: String })
  const again = await app.inject({ method: 'POST', url: `/api/ack/${one}`, headers: organization.headers })
  t.equal(again.statusCode, 200)
  t.equal(again.json().acknowledged_at, first.json().acknowledged_at, 'the first acknowledgement time is kept')

  const foreign = await app.inject({ method: 'POST', url: `/api/ack/${two}`, headers: stranger.headers })
  t.equal(foreign.statusCode, 404)
  t.equal(foreign.json().code, 'not_found')
  const unknown = await app.inject({ method: 'POST', url: `/api/events/${randomUUID()}/ack`, headers: organization.headers })
  t.equal(unknown.statusCode, 404)

  const event = await app.inject({ method: 'GET', url: `/api/events/${one}`, headers: organization.headers })
  t.match(event.json(), { status: 'acknowledged', acknowledged_at: first.json().acknowledged_at })
  t.same((await inbox(app, organization)).json().events.map((item: { event_id: string }) => item.event_id), [two])
})

t.test('bulk acknowledge reports what was not found', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const stranger = await createOrganization(app)
  const mine = await sendMany(app, organization, 3)
  const [theirs] = await sendMany(app, stranger, 1)
  const missing = randomUUID()

  const response = await app.inject({
    method: 'POST', url: '/api/ack', headers: organization.headers, payload: { event_ids: [...mine, theirs, missing] }
  })
  t.equal(response.statusCode, 200)
  t.same(response.json(), { acknowledged: mine, not_found: [theirs, missing] })
  t.equal((await inbox(app, organization)).json().count, 0)
  t.equal((await inbox(app, stranger)).json().count, 1, 'the other organization\'s event is untouched')

  for (const payload of [{ event_ids: [] }, { event_ids: Array(101).fill(missing) }, { event_ids: ['nope'] }, {}]) {
    const bad = await app.inject({ method: 'POST', url: '/api/ack', headers: organization.headers, payload })
    t.equal(bad.statusCode, 400)
  }
})
