import t from 'tap'
import { createWebhookSender } from '../../../lib/webhooks/send.js'
import { signWebhook } from '../../../lib/webhooks/signing.js'
import { buildTestApp, createOrganization } from '../../support/helpers.js'
import { OK_HEAD, answerOk, endlessBody, startScriptedReceiver, trickle, type ScriptedRequest } from '../../support/scripted-receiver.js'
import { createWebhook, waitFor } from '../../support/webhooks.js'

// Sends below get one attempt's deadline each; receivers trickle far slower than that, so no answer could
// complete within it (the head takes OK_HEAD.length × 100 ms, several seconds).
const TRICKLE_EVERY_MS = 100
const signed = () => signWebhook('msg_deadline', 'deadline.test', '{}', ['whsec_' + Buffer.alloc(24, 7).toString('base64')])

t.test('a receiver trickling its status line is aborted at the deadline and its connection closed', async (t) => {
  const receiver = await startScriptedReceiver(t)
  receiver.answer = (request) => trickle(request, OK_HEAD, TRICKLE_EVERY_MS)
  const sender = createWebhookSender({ timeoutMs: 400, allowPrivateUrls: true })
  t.teardown(() => sender.close())
  const outcome = await sender.send(receiver.url('/trickle'), signed())
  t.match(outcome, { succeeded: false, responseStatus: null, timedOut: true, congested: true, error: 'timed out after 400 ms' })
  const [request] = receiver.requests
  if (!request) throw new Error('nothing received')
  t.ok(request.written < OK_HEAD.length, `the answer was still trickling when the attempt ended (${request.written} of ${OK_HEAD.length} bytes)`)
  await waitFor('the trickling connection to close', () => request.closed)
  t.ok(request.closedBySender, 'the sender closed it; the receiver would have trickled on')
})

t.test('the status line decides: a body trickling after it is cut off and the outcome is the status\'s', async (t) => {
  const receiver = await startScriptedReceiver(t)
  const sender = createWebhookSender({ timeoutMs: 10_000, allowPrivateUrls: true })
  t.teardown(() => sender.close())
  const slowBody = (status: string, headers = '') => (request: ScriptedRequest) => {
    const head = `HTTP/1.1 ${status}\r\n${headers}Content-Length: 1000\r\n\r\n`
    request.socket.write(head)
    // The written count starts after the head, so it counts body bytes only.
    trickle(request, 'x'.repeat(1000), TRICKLE_EVERY_MS)
  }

  receiver.answer = slowBody('200 OK')
  const accepted = await sender.send(receiver.url('/accepted'), signed())
  t.match(accepted, { succeeded: true, responseStatus: 200, timedOut: false, error: null })
  receiver.answer = slowBody('503 Service Unavailable', 'Retry-After: 9\r\n')
  const refused = await sender.send(receiver.url('/refused'), signed())
  t.match(refused, { succeeded: false, responseStatus: 503, congested: true, timedOut: false, retryAfterSeconds: 9, error: 'receiver answered 503' })

  for (const request of receiver.requests) {
    t.ok(request.written < 1000, `${request.path}: decided while its body was still arriving (${request.written} of 1000 bytes)`)
    await waitFor(`${request.path}: its connection to close`, () => request.closed)
    t.ok(request.closedBySender, `${request.path}: closed by the sender (the unread rest made it unusable)`)
  }
})

t.test('a 200 without Content-Length on a kept-alive connection is a success at once, and that connection is closed', async (t) => {
  const receiver = await startScriptedReceiver(t)
  receiver.answer = endlessBody
  // A deadline far beyond the wait below: only not waiting for the body explains an outcome within it.
  const sender = createWebhookSender({ timeoutMs: 120_000, allowPrivateUrls: true })
  t.teardown(() => sender.close())
  const outcome = await sender.send(receiver.url('/endless'), signed())
  t.match(outcome, { succeeded: true, responseStatus: 200, timedOut: false, error: null })
  const [request] = receiver.requests
  if (!request) throw new Error('nothing received')
  await waitFor('the endless answer\'s connection to close', () => request.closed)
  t.ok(request.closedBySender, 'closed by the sender: its body could never end')
})

t.test('a body that ends with its answer leaves the connection kept alive and reused', async (t) => {
  const receiver = await startScriptedReceiver(t)
  receiver.answer = answerOk
  const sender = createWebhookSender({ timeoutMs: 5000, allowPrivateUrls: true })
  t.teardown(() => sender.close())
  for (let i = 0; i < 6; i++) t.match(await sender.send(receiver.url('/ok'), signed()), { succeeded: true, responseStatus: 200 })
  // undici may open a second connection while it checks the first one after its answer, so not exactly one.
  const connections = new Set(receiver.requests.map((request) => request.socket)).size
  t.ok(connections < receiver.requests.length, `six sends over ${connections} connection(s): connections were reused`)
  t.notOk(receiver.requests.some((request) => request.closed), 'none was closed after its answer')
})

t.test('a send waiting for a connection is settled at its deadline and never written afterwards', async (t) => {
  const receiver = await startScriptedReceiver(t)
  const held: ScriptedRequest[] = []
  receiver.answer = (request) => { if (request.path === '/held') held.push(request); else answerOk(request) }
  // One connection to the origin, so the second send waits inside undici for the first's.
  const sender = createWebhookSender({ timeoutMs: 10_000, allowPrivateUrls: true, connectionsPerOrigin: 1 })
  t.teardown(() => sender.close())
  const first = sender.send(receiver.url('/held'), signed())
  await waitFor('the first send to arrive', () => held.length === 1)
  const queued = await sender.send(receiver.url('/queued'), signed(), undefined, 300)
  t.match(queued, { succeeded: false, timedOut: true, error: 'timed out after 300 ms' })
  t.notOk(held[0]?.closed, 'settled while the connection it waited for was still busy')
  held[0]?.response.writeHead(200, { 'content-length': '0' }).end()
  t.match(await first, { succeeded: true })
  t.match(await sender.send(receiver.url('/after'), signed()), { succeeded: true }, 'a later send to the same origin goes out')
  t.same(receiver.requests.map((request) => request.path), ['/held', '/after'], 'the queued request was never written')
})

t.test('a send aborted by its caller is a shutdown, not a timeout', async (t) => {
  const receiver = await startScriptedReceiver(t)
  receiver.answer = () => {}
  const sender = createWebhookSender({ timeoutMs: 10_000, allowPrivateUrls: true })
  t.teardown(() => sender.close())
  const stop = new AbortController()
  const sending = sender.send(receiver.url('/hang'), signed(), stop.signal)
  await waitFor('the send to arrive', () => receiver.requests.length === 1)
  stop.abort()
  t.match(await sending, { succeeded: false, timedOut: false, error: /aborted: worker shutting down/ })
  t.match(await sender.send(receiver.url('/late'), signed(), stop.signal), { succeeded: false, error: /aborted/ }, 'an already aborted signal sends nothing')
  t.equal(receiver.requests.length, 1)
})

t.test('POST /api/webhooks/:id/test answers within its deadline against a trickling receiver', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true', WEBHOOK_TIMEOUT_MS: '500' })
  const organization = await createOrganization(app)
  const receiver = await startScriptedReceiver(t)
  receiver.answer = (request) => {
    if (request.path === '/trickle-head') trickle(request, OK_HEAD, TRICKLE_EVERY_MS)
    else {
      request.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n')
      trickle(request, 'x'.repeat(1000), TRICKLE_EVERY_MS)
    }
  }
  const headHook = await createWebhook(t, app, organization, { url: receiver.url('/trickle-head') })
  const bodyHook = await createWebhook(t, app, organization, { url: receiver.url('/trickle-body') })

  const timedOut = await app.inject({ method: 'POST', url: `/api/webhooks/${headHook.id}/test`, headers: organization.headers })
  t.equal(timedOut.statusCode, 200)
  t.match(timedOut.json(), { success: false, response_status: null, error: 'timed out after 500 ms' })
  const headRequest = receiver.requests.find((request) => request.path === '/trickle-head')
  t.ok(headRequest !== undefined && headRequest.written < OK_HEAD.length, 'answered while the receiver was still trickling its head')

  const accepted = await app.inject({ method: 'POST', url: `/api/webhooks/${bodyHook.id}/test`, headers: organization.headers })
  t.match(accepted.json(), { success: true, response_status: 200, error: null }, 'a 200 whose body trickles is a success, decided by its status line')
  const bodyRequest = receiver.requests.find((request) => request.path === '/trickle-body')
  t.ok(bodyRequest !== undefined && bodyRequest.written < 1000, 'answered while the body was still trickling')
  await waitFor('both test sends\' connections to close', () => receiver.requests.every((request) => request.closed))
  t.ok(receiver.requests.every((request) => request.closedBySender), 'closed by the sender')
})

t.test('a test send is not held behind other organizations\' test sends stuck on the same host', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true', WEBHOOK_TIMEOUT_MS: '5000' })
  const stuckOrganization = await createOrganization(app)
  const other = await createOrganization(app)
  const receiver = await startScriptedReceiver(t)
  receiver.answer = (request) => { if (request.path === '/ok') answerOk(request); else trickle(request, OK_HEAD, TRICKLE_EVERY_MS) }
  const stuckHook = await createWebhook(t, app, stuckOrganization, { url: receiver.url('/trickle') })
  const okHook = await createWebhook(t, app, other, { url: receiver.url('/ok') })
  const stuckTests = [1, 2, 3].map(() => app.inject({ method: 'POST', url: `/api/webhooks/${stuckHook.id}/test`, headers: stuckOrganization.headers }))
  await waitFor('three stuck test sends at the receiver', () => receiver.requests.length === 3)
  const ok = await app.inject({ method: 'POST', url: `/api/webhooks/${okHook.id}/test`, headers: other.headers })
  t.match(ok.json(), { success: true, response_status: 200 })
  t.ok(receiver.requests.filter((request) => request.path === '/trickle').every((request) => !request.closed), 'answered while all three were still trickling')
  for (const stuck of await Promise.all(stuckTests)) t.match(stuck.json(), { success: false, error: 'timed out after 5000 ms' })
})
