import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildTestApp, createOrganization, type TestOrganization } from '../../../support/helpers.js'

async function listen (app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return `http://127.0.0.1:${address.port}`
}

function leaseOverHttp (baseUrl: string, organization: TestOrganization, body: object, signal?: AbortSignal) {
  return fetch(`${baseUrl}/api/inbox/lease`, {
    method: 'POST', headers: { ...organization.headers, 'content-type': 'application/json' }, body: JSON.stringify(body), signal
  })
}

function sendOverHttp (baseUrl: string, organization: TestOrganization, events: object[]) {
  return fetch(`${baseUrl}/api/events/batch`, {
    method: 'POST', headers: { ...organization.headers, 'content-type': 'application/json' }, body: JSON.stringify({ events })
  })
}

interface LeaseBody {
  lease_id: string | null
  events: Array<{ type: string }>
}

const checkedOut = (app: FastifyInstance) => app.pg.pool.totalCount - app.pg.pool.idleCount

t.test('a long poll is woken by a new event, long before its deadline', async (t) => {
  const app = await buildTestApp(t)
  const baseUrl = await listen(app)
  const organization = await createOrganization(app)
  const started = Date.now()
  const waiting = leaseOverHttp(baseUrl, organization, { wait_seconds: 20 })
  await sleep(300)
  await sendOverHttp(baseUrl, organization, [{ type: 'wake.up', payload: { n: 1 } }])
  const response = await waiting
  t.equal(response.status, 200)
  const body = await response.json() as LeaseBody
  t.equal(body.events.length, 1)
  t.equal(body.events[0]?.type, 'wake.up')
  t.ok(Date.now() - started < 15_000, 'answered by the notification, not by the 20 s deadline')
})

t.test('a long poll with nothing to lease ends empty at its deadline', async (t) => {
  const app = await buildTestApp(t)
  const baseUrl = await listen(app)
  const organization = await createOrganization(app)
  const other = await createOrganization(app)
  const waiting = leaseOverHttp(baseUrl, organization, { wait_seconds: 1 })
  await sendOverHttp(baseUrl, other, [{ type: 'not.yours', payload: {} }])
  const response = await waiting
  t.same(await response.json(), { lease_id: null, leased_until: null, events: [] }, 'another organization\'s event does not count')
})

t.test('200 concurrent long polls hold no pool client, and all end on shutdown', async (t) => {
  const app = await buildTestApp(t, { INBOX_LONG_POLLS_PER_ORGANIZATION: '200' })
  const baseUrl = await listen(app)
  const organization = await createOrganization(app)
  const polls = Array.from({ length: 200 }, () => leaseOverHttp(baseUrl, organization, { wait_seconds: 20 }).then(async (response) => ({
    status: response.status, body: await response.json() as LeaseBody
  })))
  // Let every poll make its first (empty) lease attempt and start waiting.
  for (let i = 0; i < 100 && (app.pg.pool.waitingCount > 0 || checkedOut(app) > 0 || i < 10); i++) await sleep(50)
  t.equal(checkedOut(app), 0, 'waiting polls hold no pool client')
  t.equal(app.pg.pool.waitingCount, 0)

  const aborted = new AbortController()
  const gone = leaseOverHttp(baseUrl, organization, { wait_seconds: 20 }, aborted.signal).catch((error: Error) => error.name)
  aborted.abort()
  t.equal(await gone, 'AbortError')

  await app.close()
  const results = await Promise.all(polls)
  t.equal(results.length, 200)
  t.ok(results.every((result) => result.status === 200 && result.body.events.length === 0), 'every poll ended with an empty answer')
  t.equal(app.pg.pool.totalCount, 0, 'the pool is closed')
})

t.test('the event stream notifies new events, sends heartbeats and closes on shutdown', async (t) => {
  const app = await buildTestApp(t, { INBOX_STREAM_HEARTBEAT_SECONDS: '1' })
  const baseUrl = await listen(app)
  const organization = await createOrganization(app)
  const response = await fetch(`${baseUrl}/api/inbox/stream`, { headers: organization.headers })
  t.equal(response.status, 200)
  t.match(response.headers.get('content-type'), /text\/event-stream/)
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
  await sendOverHttp(baseUrl, organization, [{ type: 'a', payload: {} }, { type: 'b', payload: {} }, { type: 'c', payload: {} }])
  t.ok(await readUntil(/data: \{"count":3\}/), 'one coalesced frame for the three events')
  t.ok(await readUntil(/: heartbeat/), 'heartbeat comments keep the connection alive')

  await app.close()
  t.notOk(await readUntil(/never/), 'the stream ends when the server shuts down')
})

t.test('the event stream needs an API key', async (t) => {
  const app = await buildTestApp(t)
  const response = await app.inject({ method: 'GET', url: '/api/inbox/stream' })
  t.equal(response.statusCode, 401)
})
