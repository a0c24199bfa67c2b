import { createServer, type Server } from 'node:http'
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
    else response.end('ok')
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

t.test('while overloaded, the gate answers 503 with the reason, Retry-After and a closing connection; unshed routes pass', async (t) => {
  const { state, base } = await gatedServer(t, { routes: [['/health', { shed: false }]] })
  t.equal((await fetch(`${base}/anything`)).status, 200, 'let through within bounds')
  state.overloaded = true
  const refused = await fetch(`${base}/anything?x=1`, { headers: { 'x-request-id': 'client-id-1' } })
  t.equal(refused.status, 503)
  t.match(await refused.json(), { code: 'overloaded', message: /event loop behind.*retry in 3 s/ })
  t.equal(refused.headers.get('retry-after'), '3')
  t.equal(refused.headers.get('connection'), 'close')
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
