import type { FastifyInstance } from 'fastify'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import t from 'tap'
import { buildTestApp, createOrganization, sendEvent, type Teardown, type TestOrganization } from '../../support/helpers.js'
import { watchLongPolls } from '../../support/long-polls.js'
import { waitFor } from '../../support/webhooks.js'

const createWebhookRequest = (app: FastifyInstance, organization: TestOrganization, n: number) =>
  app.inject({ method: 'POST', url: '/api/webhooks', headers: organization.headers, payload: { url: `http://127.0.0.1:9/hook-${n}` } })

const tally = (statuses: number[]) => statuses.reduce<Record<number, number>>((counts, status) => ({ ...counts, [status]: (counts[status] ?? 0) + 1 }), {})

t.test('the 51st webhook is refused, even when 60 are created at once', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const responses = await Promise.all(Array.from({ length: 60 }, (_, n) => createWebhookRequest(app, organization, n)))
  t.same(tally(responses.map((response) => response.statusCode)), { 201: 50, 409: 10 }, 'the default cap is 50')
  t.match(responses.find((response) => response.statusCode === 409)?.json(), { statusCode: 409, code: 'webhook_limit_reached', message: /at most 50/ })
  const listed = await app.inject({ method: 'GET', url: '/api/webhooks', headers: organization.headers })
  t.equal(listed.json().webhooks.length, 50)

  const fiftyFirst = await createWebhookRequest(app, organization, 51)
  t.equal(fiftyFirst.statusCode, 409)
  const first = responses.find((response) => response.statusCode === 201)?.json<{ id: string }>()
  await app.inject({ method: 'DELETE', url: `/api/webhooks/${first?.id ?? ''}`, headers: organization.headers })
  t.equal((await createWebhookRequest(app, organization, 52)).statusCode, 201, 'deleting one makes room for one')
  t.equal((await createWebhookRequest(app, await createOrganization(app), 1)).statusCode, 201, 'the cap is per organization')
})

t.test('WEBHOOKS_PER_ORGANIZATION sets the cap', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true', WEBHOOKS_PER_ORGANIZATION: '2' })
  const organization = await createOrganization(app)
  const statuses = []
  for (let n = 0; n < 3; n++) statuses.push((await createWebhookRequest(app, organization, n)).statusCode)
  t.same(statuses, [201, 201, 409])
})

async function listen (app: FastifyInstance): Promise<number> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

/** Opens a stream over its own connection; resolves with the response once its status has arrived. */
function openStream (port: number, organization: TestOrganization): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    httpRequest({ host: '127.0.0.1', port, path: '/api/inbox/stream', headers: organization.headers, agent: false }, resolve)
      .on('error', reject)
      .end()
  })
}

type IntervalCallback = (...args: unknown[]) => void

/**
 * Counts the intervals set from now on that are still running (an open stream's heartbeat is one); the global
 * timer functions are put back when the test ends.
 */
function trackIntervals (t: Teardown): { live: () => number } {
  const live = new Set<unknown>()
  const { setInterval: set, clearInterval: clear, clearTimeout: clearTimer } = globalThis
  globalThis.setInterval = ((callback: IntervalCallback, ms?: number, ...args: unknown[]) => {
    const timer = set(callback, ms, ...args)
    live.add(timer)
    return timer
  }) as typeof setInterval
  // clearTimeout clears an interval too.
  globalThis.clearInterval = ((timer?: NodeJS.Timeout | string | number) => {
    live.delete(timer)
    clear(timer)
  }) as typeof clearInterval
  globalThis.clearTimeout = ((timer?: NodeJS.Timeout | string | number) => {
    live.delete(timer)
    clearTimer(timer)
  }) as typeof clearTimeout
  t.teardown(() => {
    globalThis.setInterval = set
    globalThis.clearInterval = clear
    globalThis.clearTimeout = clearTimer
  })
  return { live: () => live.size }
}

/** Opens `count` streams at once; resolves with the responses once every status has arrived. */
const openStreams = (port: number, organization: TestOrganization, count: number) =>
  Promise.all(Array.from({ length: count }, () => openStream(port, organization)))

t.test('1 000 event streams from one organization: the cap is served, the rest get 429', async (t) => {
  const app = await buildTestApp(t)
  const port = await listen(app)
  const organization = await createOrganization(app)
  const intervals = trackIntervals(t)
  const responses: IncomingMessage[] = []
  // Closed whatever happens, so no socket outlives the test.
  t.teardown(() => { for (const response of responses) response.destroy() })
  for (let opened = 0; opened < 1000; opened += 100) responses.push(...await openStreams(port, organization, 100))
  const statuses = responses.map((response) => response.statusCode ?? 0)
  t.same(tally(statuses), { 200: 100, 429: 900 }, 'INBOX_STREAMS_PER_ORGANIZATION defaults to 100')
  const refused = responses.find((response) => response.statusCode === 429)
  const body = await new Promise<string>((resolve) => {
    let text = ''
    refused?.on('data', (chunk: Buffer) => { text += chunk.toString() }).on('end', () => resolve(text))
  })
  t.match(JSON.parse(body), { statusCode: 429, code: 'too_many_streams' })

  const neighbour = await openStream(port, await createOrganization(app))
  responses.push(neighbour)
  t.equal(neighbour.statusCode, 200, 'other organizations keep their own streams')

  t.equal(app.wakeUps.waiting, 101, 'each open stream is subscribed to arrivals')
  t.equal(intervals.live(), 101, 'and has its heartbeat')

  for (const response of responses) response.destroy()
  // The server sees each close and gives everything back: the subscription, the heartbeat and the slot.
  await waitFor('closed streams to unsubscribe', () => app.wakeUps.waiting === 0)
  t.equal(intervals.live(), 0, 'no heartbeat outlives its stream')
  const again = await openStreams(port, organization, 100)
  responses.push(...again)
  t.same(tally(again.map((response) => response.statusCode ?? 0)), { 200: 100 }, 'closed streams free all their slots')
  const beyond = await openStream(port, organization)
  responses.push(beyond)
  t.equal(beyond.statusCode, 429, 'and no more than those')
  for (const response of again) response.destroy()
  await waitFor('the second round of streams to unsubscribe', () => app.wakeUps.waiting === 0)
  t.equal(intervals.live(), 0)
})

t.test('long polls beyond the cap are refused at once; the waiting ones are served', async (t) => {
  const app = await buildTestApp(t, { INBOX_LONG_POLLS_PER_ORGANIZATION: '3' })
  const watch = watchLongPolls(t, app)
  const organization = await createOrganization(app)
  const lease = (waitSeconds: number) => app.inject({ method: 'POST', url: '/api/inbox/lease', headers: organization.headers, payload: { limit: 1, wait_seconds: waitSeconds } })
  const settled: number[] = []
  const polls = Array.from({ length: 10 }, () => lease(20).then((response) => {
    settled.push(response.statusCode)
    return response
  }))
  await waitFor('the polls over the cap to be refused', () => settled.length >= 7)
  await watch.waiting(3)
  t.same(settled, Array(7).fill(429), 'only the polls beyond the cap answered before any event')
  t.equal(settled.length, 7)
  t.equal((await lease(0)).statusCode, 200, 'a call that does not wait is not counted')

  for (let n = 0; n < 3; n++) await sendEvent(app, organization, { type: 'wake', payload: { n } })
  const answers = await Promise.all(polls)
  const served = answers.filter((response) => response.statusCode === 200)
  t.equal(served.length, 3)
  t.ok(served.every((response) => response.json().events.length === 1), 'each waiting poll got an event')
  t.match(answers.find((response) => response.statusCode === 429)?.json(), { code: 'too_many_long_polls' })
  t.equal(app.wakeUps.waiting, 0, 'served polls wait no more')
  t.equal((await lease(1)).statusCode, 200, 'answered polls give their slot back')

  // All three slots are free again: three polls wait, a fourth is refused.
  const looked = watch.looks
  const again = Array.from({ length: 3 }, () => lease(20))
  await watch.waiting(3, looked + 3)
  const fourth = await lease(20)
  t.equal(fourth.statusCode, 429, 'the cap is full with the three new polls')
  for (let n = 0; n < 3; n++) await sendEvent(app, organization, { type: 'wake.again', payload: { n } })
  t.same((await Promise.all(again)).map((response) => response.statusCode), [200, 200, 200])
})
