import type { FastifyInstance } from 'fastify'
import http from 'node:http'
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { buildTestApp, createOrganization, type TestOrganization } from '../../support/helpers.js'
import { waitFor } from '../../support/webhooks.js'

interface Answer {
  status: number
  dedupId: string
  code?: string
  retryAfter: string | null
}

async function listening (app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return `http://127.0.0.1:${address.port}`
}

/** `count` events sent at once over real connections, each with a dedup_id of its own to find its row by. */
async function sendEvents (baseUrl: string, organization: TestOrganization, count: number): Promise<Answer[]> {
  return await Promise.all(Array.from({ length: count }, async () => {
    const dedupId = randomUUID()
    const response = await fetch(`${baseUrl}/api/events`, {
      method: 'POST',
      headers: { ...organization.headers, 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'overload.test', payload: { n: 1 }, dedup_id: dedupId })
    })
    const body = await response.json() as { code?: string }
    return { status: response.status, dedupId, code: body.code, retryAfter: response.headers.get('retry-after') }
  }))
}

const statusCounts = (answers: Answer[]) => answers.reduce<Record<number, number>>((counts, { status }) => ({ ...counts, [status]: (counts[status] ?? 0) + 1 }), {})

async function storedDedupIds (app: FastifyInstance, organization: TestOrganization): Promise<Set<string>> {
  const { rows } = await app.pg.query<{ dedup_id: string }>('SELECT dedup_id FROM events WHERE organization_id = $1', [organization.id])
  return new Set(rows.map((row) => row.dedup_id))
}

/** Keeps the event loop busy, as a flood of work would: every timer runs late while it is on. */
function keepEventLoopBusy (): () => void {
  const busy = setInterval(() => {
    const end = Date.now() + 150
    while (Date.now() < end) { /* busy on purpose */ }
  }, 1)
  return () => clearInterval(busy)
}

t.test('while event-loop delay is over its bound, requests get 503 overloaded with Retry-After; nothing shed is stored and nothing accepted lost', async (t) => {
  const app = await buildTestApp(t, { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '100', OVERLOAD_SAMPLE_INTERVAL_MS: '100', OVERLOAD_RETRY_AFTER_SECONDS: '2' })
  await waitFor('the first samples of the serving process', () => !app.overloaded())
  const organization = await createOrganization(app)
  const baseUrl = await listening(app)
  const before = await sendEvents(baseUrl, organization, 20)

  const stopBusy = keepEventLoopBusy()
  await waitFor('the delay to be sampled', () => app.overloaded())
  const during = await sendEvents(baseUrl, organization, 20)
  const ready = await fetch(`${baseUrl}/health/ready`)
  const readyBody = await ready.json() as { code: string, pressure: { overloaded: boolean, event_loop_delay_ms: number } }
  const live = await fetch(`${baseUrl}/health`)

  stopBusy()
  await waitFor('a sample within bounds again', () => !app.overloaded())
  const after = await sendEvents(baseUrl, organization, 20)

  t.same(before.map((answer) => answer.status), Array(20).fill(201), 'accepted before the bound was passed')
  t.same(during.map((answer) => answer.status), Array(20).fill(503), `shed while over it (${JSON.stringify(statusCounts(during))})`)
  t.ok(during.every((answer) => answer.code === 'overloaded' && answer.retryAfter === '2'), 'with code overloaded and Retry-After')
  t.same(after.map((answer) => answer.status), Array(20).fill(201), 'accepted again once the delay was back under the bound')
  t.equal(ready.status, 503, 'readiness reports the pressure, so a load balancer can steer away')
  t.equal(readyBody.code, 'overloaded')
  t.equal(readyBody.pressure.overloaded, true)
  t.ok(readyBody.pressure.event_loop_delay_ms > 100 || readyBody.pressure.event_loop_delay_ms === -1, 'with the delay that passed the bound')
  t.equal(live.status, 200, 'liveness still answers: the process is alive, only busy')

  const stored = await storedDedupIds(app, organization)
  const answers = [...before, ...during, ...after]
  t.ok(answers.filter((answer) => answer.status === 201).every((answer) => stored.has(answer.dedupId)), 'every 201 is stored')
  t.ok(answers.filter((answer) => answer.status === 503).every((answer) => !stored.has(answer.dedupId)), 'no 503 is stored')
  t.equal(stored.size, 40, 'and nothing else')
  const metrics = await app.inject({ method: 'GET', url: '/metrics' })
  t.match(metrics.body, /^triggers_requests_shed_total 20$/m, 'the shed requests are counted')
})

t.test('a memory bound sheds every request but liveness, readiness and metrics', async (t) => {
  const app = await buildTestApp(t, { OVERLOAD_MAX_RSS_MB: '1', OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0', OVERLOAD_SAMPLE_INTERVAL_MS: '10' })
  await waitFor('the first samples of the serving process', () => app.overloaded())
  const requests = [
    { method: 'POST', url: '/api/keys/generate', headers: { 'x-admin-token': app.config.ADMIN_TOKEN ?? '' }, payload: { organization_name: 'shed' } },
    { method: 'GET', url: '/api/inbox', headers: { 'x-api-key': 'sk_whatever' } },
    { method: 'GET', url: '/openapi.json' }
  ] as const
  for (const request of requests) {
    const answer = await app.inject(request)
    t.equal(answer.statusCode, 503, request.url)
    t.match(answer.json(), { code: 'overloaded', message: /memory too large/ })
    t.equal(answer.headers['retry-after'], '1')
  }
  const ready = await app.inject({ method: 'GET', url: '/health/ready' })
  t.equal(ready.statusCode, 503)
  t.match(ready.json(), { code: 'overloaded', pressure: { overloaded: true, rss_mb: Number } })
  t.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/metrics' })).statusCode, 200)
})

t.test('within bounds, readiness reports the load', async (t) => {
  const app = await buildTestApp(t, { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '1000' })
  const ready = await app.inject({ method: 'GET', url: '/health/ready' })
  t.equal(ready.statusCode, 200)
  t.match(ready.json(), { status: 'ok', pressure: { overloaded: false, event_loop_delay_ms: Number, heap_used_mb: Number, rss_mb: Number } })
})

t.test('requests beyond OVERLOAD_MAX_IN_FLIGHT in progress are shed; long polls do not count', async (t) => {
  let release = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  let entered = 0
  const app = await buildTestApp(t, { OVERLOAD_MAX_IN_FLIGHT: '2' }, (app) => {
    app.get('/test/hold', { config: { rateLimit: false } }, async () => {
      entered++
      await held
      return { ok: true }
    })
  })
  await waitFor('the first samples of the serving process', () => !app.overloaded())
  const organization = await createOrganization(app)
  const baseUrl = await listening(app)
  const longPoll = fetch(`${baseUrl}/api/inbox/lease`, {
    method: 'POST', headers: { ...organization.headers, 'content-type': 'application/json' }, body: JSON.stringify({ wait_seconds: 2 })
  })
  const holding = [fetch(`${baseUrl}/test/hold`), fetch(`${baseUrl}/test/hold`)]
  await waitFor('two requests in progress', () => entered === 2)
  const refused = await fetch(`${baseUrl}/test/hold`)
  t.equal(refused.status, 503, 'a third request in progress is one too many')
  t.match(await refused.json(), { code: 'overloaded', message: /too many requests in progress/ })
  t.equal(refused.headers.get('retry-after'), '1')
  t.equal(refused.headers.get('connection'), 'keep-alive', 'and its connection stays open')
  t.equal((await fetch(`${baseUrl}/health`)).status, 200, 'liveness is never shed')
  release()
  t.same(await Promise.all(holding.map(async (response) => (await response).status)), [200, 200], 'the requests let in are answered')
  t.equal((await fetch(`${baseUrl}/test/hold`)).status, 200, 'once they are, new requests are let in again')
  t.equal((await longPoll).status, 200, 'the long poll waiting meanwhile was not counted and was answered')
})

t.test('the app\'s own 503 with Retry-After (a full ingest queue) holds its connection as the gate\'s refusals do', async (t) => {
  const app = await buildTestApp(t, {}, (app) => {
    app.get('/test/full', { config: { rateLimit: false } }, async () => {
      // As the ingest queue refuses: an error carrying its answer's Retry-After (10 s: the hold lasts 5 to 10 s).
      throw Object.assign(new Error('Too many events are waiting to be stored; retry shortly'), {
        statusCode: 503, code: 'overloaded', headers: { 'retry-after': '10' }
      })
    })
  })
  const baseUrl = await listening(app)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const get = (path: string, via?: http.Agent) => new Promise<number>((resolve, reject) => {
    http.get(`${baseUrl}${path}`, { agent: via ?? false }, (response) => {
      response.resume()
      response.on('end', () => resolve(response.statusCode ?? 0))
    }).on('error', reject)
  })
  t.equal(await get('/test/full', agent), 503)
  let answered = false
  get('/health', agent).then(() => { answered = true }, () => {})
  t.equal(await get('/health'), 200, 'a request on another connection is answered')
  t.notOk(answered, 'while the next request on the refused connection is not read yet')
})
