import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { randomUUID } from 'node:crypto'
import { buildTestApp, createOrganization, sendEvent, type TestOrganization } from '../../../support/helpers.js'

interface Page {
  events: Array<{ event_id: string }>
  next_cursor: string
  has_more: boolean
}

async function page (app: FastifyInstance, organization: TestOrganization, cursor: string | null): Promise<Page> {
  const query = `?status=all&limit=100${cursor === null ? '' : `&cursor=${cursor}`}`
  const response = await app.inject({ method: 'GET', url: `/api/inbox${query}`, headers: organization.headers })
  if (response.statusCode !== 200) throw new Error(`inbox answered ${response.statusCode}: ${response.body}`)
  return response.json<Page>()
}

/** Follows next_cursor, alternating between instances, until `done()` and the inbox has nothing more. */
async function tail (apps: FastifyInstance[], organization: TestOrganization, done: () => boolean, until: () => boolean): Promise<string[]> {
  const seen: string[] = []
  let cursor: string | null = null
  const deadline = Date.now() + 120_000
  for (let read = 0; Date.now() < deadline; read++) {
    const app = apps[read % apps.length] as FastifyInstance
    const result = await page(app, organization, cursor)
    seen.push(...result.events.map((event) => event.event_id))
    cursor = result.next_cursor
    if (done() && !result.has_more && until()) break
    if (!result.has_more) await sleep(5)
  }
  return seen
}

t.test('a tailing reader finds every event exactly once, with 16 writers on two instances', async (t) => {
  const apps = [await buildTestApp(t), await buildTestApp(t)]
  const organization = await createOrganization(apps[0] as FastifyInstance)
  const accepted: string[] = []
  let writing = true
  const writers = Array.from({ length: 16 }, async (_, writer) => {
    for (let i = 0; i < 60; i++) {
      const response = await sendEvent(apps[(writer + i) % 2] as FastifyInstance, organization, { type: 'tail.test', payload: { writer, i } })
      if (response.statusCode === 201) accepted.push(response.json<{ event_id: string }>().event_id)
    }
  })
  const reading = tail(apps, organization, () => !writing, () => true)
  await Promise.all(writers)
  writing = false
  const seen = await reading
  t.equal(accepted.length, 16 * 60, 'every write accepted')
  t.equal(new Set(seen).size, seen.length, 'no event seen twice')
  t.same([...seen].sort(), [...accepted].sort(), 'every accepted event seen')
})

t.test('an event whose transaction commits after later ones were read is not skipped', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const first = (await sendEvent(app, organization, { type: 'tail.order', payload: { n: 1 } })).json<{ event_id: string }>().event_id

  // A writer that took its position (txid, seq) before the next events but commits after they are read.
  const slow = new pg.Client({ connectionString: process.env.DATABASE_URL })
  await slow.connect()
  t.teardown(() => slow.end())
  const late = randomUUID()
  await slow.query('BEGIN')
  await slow.query('INSERT INTO events (id, organization_id, type, payload) VALUES ($1, $2, $3, $4)', [late, organization.id, 'tail.order', { n: 'late' }])

  const later = (await sendEvent(app, organization, { type: 'tail.order', payload: { n: 2 } })).json<{ event_id: string }>().event_id
  const before = await page(app, organization, null)
  t.same(before.events.map((event) => event.event_id), [first], 'events behind an open transaction wait for it')
  await slow.query('COMMIT')

  const after = await page(app, organization, before.next_cursor)
  t.same(after.events.map((event) => event.event_id), [late, later], 'the late commit and what followed it, in order')
  const again = await page(app, organization, after.next_cursor)
  t.same(again.events, [], 'nothing twice')
})

t.test('a cursor that does not parse or overflows is 400 invalid_cursor', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const encode = (text: string) => Buffer.from(text).toString('base64url')
  const bad = ['%%%', encode('abc'), encode('1.2.3'), encode('18446744073709551616.1'), encode('1.9223372036854775808'), encode('99999999999999999999999.1'), 'x'.repeat(200)]
  for (const cursor of bad) {
    const response = await app.inject({ method: 'GET', url: `/api/inbox?cursor=${encodeURIComponent(cursor)}`, headers: organization.headers })
    t.equal(response.statusCode, 400, cursor)
    t.equal(response.json().code, 'invalid_cursor', cursor)
  }
  const legacy = await app.inject({ method: 'GET', url: `/api/inbox?cursor=${encode('12')}`, headers: organization.headers })
  t.equal(legacy.statusCode, 200, 'a cursor from before this version (a bare seq) still works')
})
