import http, { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { createShedGate, guardRequestListener, pressureBounds, pressureReason, type RequestListener, type ShedGateOptions } from '../../lib/overload.js'

/**
 * A server whose listener answers 200 at once, or holds `/hold` until `release`, behind a gate with `options`;
 * closed when the test ends.
 */
async function gatedServer (t: { teardown: (fn: () => unknown) => void }, options: Partial<ShedGateOptions> & { routes?: Array<[string, { shed?: boolean, longLived?: boolean }]> }) {
  const state = { overloaded: false, shed: 0, entered: 0 }
  const held: Array<() => void> = []
  const listener: RequestListener = (request, response) => {
    state.entered++
    if (request.url === '/hold') held.push(() => response.end('held'))
    else if (request.url === '/full') {
      // As the app answers a full queue: a 503 that asks the client to wait.
      gate.holdAfter(response, 2)
      response.writeHead(503, { 'retry-after': '2' }).end('full')
    } else response.end('ok')
  }
  const gate = createShedGate({
    overloaded: () => state.overloaded,
    reason: () => 'event loop behind',
    maxInFlight: 0,
    retryAfterSeconds: 3,
    onShed: () => { state.shed++ },
    ...options
  })
  for (const [url, config] of options.routes ?? []) gate.addRoute(url, config)
  const server: Server = createServer(listener)
  guardRequestListener(server, gate.guard)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return { state, base, release: () => { for (const end of held.splice(0)) end() }, heldCount: () => held.length }
}

t.test('while overloaded, the gate answers 503 with the reason and Retry-After, keeping the connection; unshed routes pass', async (t) => {
  const { state, base } = await gatedServer(t, { routes: [['/health', { shed: false }]] })
  t.equal((await fetch(`${base}/anything`)).status, 200, 'let through within bounds')
  state.overloaded = true
  const refused = await fetch(`${base}/anything?x=1`, { headers: { 'x-request-id': 'client-id-1' } })
  t.equal(refused.status, 503)
  t.match(await refused.json(), { code: 'overloaded', message: /event loop behind.*retry in 3 s/ })
  t.equal(refused.headers.get('retry-after'), '3')
  t.equal(refused.headers.get('connection'), 'keep-alive')
  t.equal(refused.headers.get('x-request-id'), 'client-id-1', 'the client\'s request id is kept')
  t.equal((await fetch(`${base}/health?verbose=1`)).status, 200, 'a route with shed: false answers anyway, whatever its query')
  t.equal(state.shed, 1, 'each refusal is counted')
  t.equal(state.entered, 2, 'the refused request never reached the listener')
})

t.test('beyond maxInFlight the gate refuses; long-lived routes do not count; answered requests free their room', async (t) => {
  const { state, base, release, heldCount } = await gatedServer(t, { maxInFlight: 2, routes: [['/wait', { longLived: true }]] })
  const holding = [fetch(`${base}/hold`), fetch(`${base}/hold`)]
  while (heldCount() < 2) await new Promise((resolve) => setTimeout(resolve, 5))
  const refused = await fetch(`${base}/hold`)
  t.equal(refused.status, 503)
  t.match(await refused.json(), { message: /too many requests in progress/ })
  t.equal((await fetch(`${base}/wait`)).status, 200, 'a long-lived route is let in beside them')
  release()
  t.same(await Promise.all(holding.map(async (response) => (await response).status)), [200, 200])
  t.equal((await fetch(`${base}/anything`)).status, 200, 'room again once they are answered')
  t.equal(state.shed, 1)
})

/** Timers the test fires itself, in place of the gate's setTimeout. */
function manualTimers () {
  const timers: Array<{ ms: number, fire: () => void, cancelled: boolean }> = []
  const later = (ms: number, fire: () => void) => {
    const timer = { ms, fire, cancelled: false }
    timers.push(timer)
    return () => { timer.cancelled = true }
  }
  return { timers, later }
}

/** One request on `agent` (one kept-alive connection), answered with its status and connection header. */
function requestOn (agent: http.Agent, url: string): Promise<{ status: number, connection: string | undefined }> {
  return new Promise((resolve, reject) => {
    http.get(url, { agent }, (response) => {
      response.resume()
      response.on('end', () => resolve({ status: response.statusCode ?? 0, connection: response.headers.connection }))
    }).on('error', reject)
  })
}

function oneConnection (t: { teardown: (fn: () => unknown) => void }): http.Agent {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  return agent
}

t.test('a connection answered 503 is not read until its Retry-After has passed; its next request is then let in or refused as any other', async (t) => {
  const { timers, later } = manualTimers()
  const { state, base } = await gatedServer(t, { later })
  const agent = oneConnection(t)
  state.overloaded = true
  t.same(await requestOn(agent, `${base}/first`), { status: 503, connection: 'keep-alive' })
  t.equal(timers.length, 1, 'the connection is held')
  const [hold] = timers
  t.ok(hold !== undefined && hold.ms >= 1500 && hold.ms <= 3000, 'for between half and all of the 3 s asked')
  state.overloaded = false
  let answered = false
  const next = requestOn(agent, `${base}/next`).then((answer) => { answered = true; return answer })
  t.equal((await fetch(`${base}/other`)).status, 200, 'another connection is read meanwhile')
  t.notOk(answered, 'the held connection\'s request is not read')
  t.equal(state.entered, 1, 'only the other connection\'s request reached the listener')
  hold?.fire()
  t.same(await next, { status: 200, connection: 'keep-alive' }, 'once the wait is over it is read, and let in')
  state.overloaded = true
  t.equal((await requestOn(agent, `${base}/again`)).status, 503, 'and refused again as any other while overloaded')
  t.equal(timers.length, 2)
})

t.test('a 503 with Retry-After from behind the gate holds its connection too; a client that goes away frees its hold', async (t) => {
  const { timers, later } = manualTimers()
  const { base } = await gatedServer(t, { later })
  const agent = oneConnection(t)
  t.same(await requestOn(agent, `${base}/full`), { status: 503, connection: 'keep-alive' })
  t.equal(timers.length, 1, 'the app\'s own 503 held the connection')
  t.ok((timers[0]?.ms ?? 0) <= 2000, 'for no longer than its Retry-After')
  t.equal((await requestOn(oneConnection(t), `${base}/ok`)).status, 200, 'a 200 holds nothing')
  t.equal(timers.length, 1)
  agent.destroy()
  while (timers[0] !== undefined && !timers[0].cancelled) await new Promise((resolve) => setTimeout(resolve, 5))
  t.pass('the hold of a closed connection is cancelled')
})

t.test('a gate needs exactly one request listener to guard', async (t) => {
  const server = createServer()
  t.throws(() => guardRequestListener(server, (listener) => listener), /exactly one request listener/)
  server.on('request', () => {})
  server.on('request', () => {})
  t.throws(() => guardRequestListener(server, (listener) => listener), /exactly one request listener/)
})

t.test('the reason names the first bound passed, in under-pressure\'s order; 0 leaves a bound off', async (t) => {
  const MB = 1024 * 1024
  const bounds = pressureBounds({
    OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: 100, OVERLOAD_MAX_HEAP_USED_MB: 10, OVERLOAD_MAX_RSS_MB: 0, OVERLOAD_SAMPLE_INTERVAL_MS: 1000, OVERLOAD_RETRY_AFTER_SECONDS: 1
  })
  t.equal(pressureReason({ eventLoopDelay: 200, heapUsed: 20 * MB, rssBytes: 0 }, bounds), 'event loop behind')
  t.equal(pressureReason({ eventLoopDelay: 50, heapUsed: 20 * MB, rssBytes: 0 }, bounds), 'heap too large')
  t.equal(pressureReason({ eventLoopDelay: 50, heapUsed: 5 * MB, rssBytes: 10_000 * MB }, bounds), 'busy', 'the RSS bound is off')
})
