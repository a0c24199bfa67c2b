import t from 'tap'
import pg from 'pg'
import { buildTestApp, checkedOutAfterSettling, createOrganization, type TestOrganization } from '../../../support/helpers.js'
import { listen, openStream, within, type Frame } from '../../../support/event-streams.js'
import { request, sendEvents, times, type ErrorBody } from '../../../support/subscriptions.js'
import { waitFor } from '../../../support/webhooks.js'
import type { FastifyInstance } from 'fastify'

const countOf = (frame: Frame | undefined) => (JSON.parse(frame?.data ?? '{}') as { count?: number }).count

/** The ids of the organization's inbox events after `cursor` (all of them: acked or not), in inbox order. */
async function inboxAfter (app: FastifyInstance, organization: TestOrganization, cursor: string): Promise<string[]> {
  const response = await request(app, organization, 'GET', `/api/inbox?limit=100&cursor=${encodeURIComponent(cursor)}`)
  t.equal(response.statusCode, 200, 'the stream\'s id is an inbox cursor')
  return response.json<{ events: Array<{ event_id: string }> }>().events.map((event) => event.event_id)
}

t.test('the inbox stream counts new events in frames whose id is the last one\'s position; a reconnect with Last-Event-ID is told of what came meanwhile', async (t) => {
  const app = await buildTestApp(t)
  const baseUrl = await listen(app)
  const organization = await createOrganization(app)
  const url = `${baseUrl}/api/inbox/stream`
  await sendEvents(app, organization, times(4))

  const first = await openStream(url, organization.headers)
  t.equal(first.response.status, 200)
  t.match(first.response.headers.get('content-type'), /text\/event-stream/)
  await sendEvents(app, organization, times(3))
  const frames = await first.dataFrames(1)
  if (!frames) throw new Error('the stream ended')
  t.equal(first.frames[0]?.retry, '2000', 'a retry hint first')
  t.equal(countOf(frames[0]), 3, 'the three new events in one frame; the four from before the stream are not counted')
  const seen = frames[0]?.id ?? ''
  t.same(await inboxAfter(app, organization, seen), [], 'the id is the position of the last event counted')
  first.close()

  // Sent while no stream is open: the reconnect's first frame counts exactly them.
  const missed = await sendEvents(app, organization, times(5))
  const second = await openStream(url, { ...organization.headers, 'last-event-id': seen })
  const resumed = await second.dataFrames(1)
  if (!resumed) throw new Error('the stream ended')
  t.equal(countOf(resumed[0]), 5, 'the events sent while away')
  t.same(await inboxAfter(app, organization, seen), missed, 'the ones after the old id')
  t.same(await inboxAfter(app, organization, resumed[0]?.id ?? ''), [], 'and the new id is after all of them')
  await sendEvents(app, organization, times(2))
  const live = await second.dataFrames(2)
  t.equal(live && countOf(live[1]), 2, 'then live arrivals, none counted twice')
  second.close()

  const fromCursor = await openStream(`${url}?after=${encodeURIComponent(seen)}`, organization.headers)
  const counted = await fromCursor.dataFrames(1)
  t.equal(counted && countOf(counted[0]), 7, '?after counts from the cursor given')
  fromCursor.close()
})

t.test('events committed behind an older transaction still running are announced once it ends, with no further arrival', async (t) => {
  const app = await buildTestApp(t)
  const baseUrl = await listen(app)
  const organization = await createOrganization(app)
  // What the stream's looks answered when asked whether events wait to become readable (the app's own seam).
  const awaitingAnswers: boolean[] = []
  const query = app.pg.query
  app.pg.query = ((...args: Parameters<typeof query>) => {
    const result = query.apply(app.pg.pool, args) as unknown
    const [first] = args as unknown[]
    if (typeof first === 'object' && first !== null && (first as { name?: unknown }).name === 'events-awaiting-readability' && result instanceof Promise) {
      result.then((answer: { rows: Array<{ waiting: boolean }> }) => { awaitingAnswers.push(answer.rows[0]?.waiting === true) }, () => {})
    }
    return result
  }) as typeof query
  t.teardown(() => { app.pg.query = query })
  const stream = await openStream(`${baseUrl}/api/inbox/stream`, organization.headers)
  // Holds a transaction id from before the event's: the event is committed but not readable until this ends.
  const older = new pg.Client({ connectionString: app.config.DATABASE_URL })
  await older.connect()
  t.teardown(() => older.end())
  await older.query('BEGIN')
  await older.query('SELECT pg_current_xact_id()')
  await sendEvents(app, organization, times(1))
  // The arrival came and its look found the event waiting behind the older transaction (not readable: no frame).
  await waitFor('the stream to find the event waiting', async () => awaitingAnswers.some((waiting) => waiting))
  t.equal(stream.frames.filter((frame) => frame.data !== undefined).length, 0, 'nothing announced while the event is not readable')
  await older.query('COMMIT')
  const frames = await within(stream.dataFrames(1), 'the frame after the older transaction ended')
  t.equal(frames && countOf(frames[0]), 1, 'announced after the older transaction ended, by a look of the stream\'s own')
  stream.close()
})

t.test('the inbox stream sends heartbeats and closes on shutdown', async (t) => {
  const app = await buildTestApp(t, { INBOX_STREAM_HEARTBEAT_SECONDS: '1' })
  const baseUrl = await listen(app)
  const organization = await createOrganization(app)
  const response = await fetch(`${baseUrl}/api/inbox/stream`, { headers: organization.headers })
  t.equal(response.status, 200)
  const reader = response.body?.getReader()
  if (!reader) throw new Error('no body')
  const decoder = new TextDecoder()
  let received = ''
  const readUntil = async (pattern: RegExp) => {
    while (!pattern.test(received)) {
      const { value, done } = await reader.read()
      if (done) return false
      received += decoder.decode(value)
    }
    return true
  }
  t.ok(await readUntil(/: connected/), 'the stream opens with a comment')
  t.ok(await readUntil(/: heartbeat/), 'heartbeat comments keep the connection alive')
  await app.close()
  t.notOk(await readUntil(/never/), 'the stream ends when the server shuts down')
})

t.test('the inbox stream needs an API key and refuses ids that are not cursors; it holds no pool client', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  t.equal((await app.inject({ method: 'GET', url: '/api/inbox/stream' })).statusCode, 401)
  const badId = await app.inject({ method: 'GET', url: '/api/inbox/stream', headers: { ...organization.headers, 'last-event-id': 'not a cursor' } })
  t.equal(badId.statusCode, 400)
  t.equal(badId.json<ErrorBody>().code, 'invalid_cursor')
  t.match(badId.json<ErrorBody>().message, /Last-Event-ID/)
  const badAfter = await request(app, organization, 'GET', '/api/inbox/stream?after=%21%21%21')
  t.equal(badAfter.statusCode, 400)
  t.equal(badAfter.json<ErrorBody>().code, 'invalid_cursor')
  t.equal(await checkedOutAfterSettling(app), 0)
})
