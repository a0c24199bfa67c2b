import t from 'tap'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { nextRetryDelayMs, parseRetryAfter, parseRetrySchedule } from '../../../lib/webhooks/retry-schedule.js'
import { createWebhookSender } from '../../../lib/webhooks/send.js'
import { signWebhook } from '../../../lib/webhooks/signing.js'
import type { Teardown } from '../../support/helpers.js'
import { startReceiver, waitFor } from '../../support/webhooks.js'

t.test('retry delays follow the schedule with at most 10 % jitter and honour Retry-After within bounds', async (t) => {
  const schedule = parseRetrySchedule('0, 5,300')
  t.same(schedule, [0, 5, 300])
  const after1 = nextRetryDelayMs(schedule, 1) ?? -1
  t.ok(after1 >= 5000 && after1 <= 5500, `second attempt after ~5 s (${after1})`)
  t.equal(nextRetryDelayMs(schedule, 3), null, 'no attempt after the last entry')
  const longer = nextRetryDelayMs(schedule, 1, 60) ?? -1
  t.ok(longer >= 60_000 && longer <= 66_000, 'Retry-After beyond the step is honoured')
  const capped = nextRetryDelayMs(schedule, 1, 100_000) ?? -1
  t.ok(capped <= 330_000, 'but never beyond the longest delay of the schedule')
  const shorter = nextRetryDelayMs(schedule, 2, 1) ?? -1
  t.ok(shorter >= 300_000, 'and never shorter than the step')
  t.equal(parseRetryAfter('120'), 120)
  t.equal(parseRetryAfter(new Date(Date.now() + 30_000).toUTCString(), Date.now()) !== undefined, true)
  t.equal(parseRetryAfter('soon'), undefined)
})

t.test('sending refuses private addresses unless allowed, and treats redirects as failures', async (t) => {
  const receiver = await startReceiver(t)
  const request = signWebhook('msg_1', 'x', '{}', ['whsec_' + Buffer.alloc(24, 1).toString('base64')])
  const guarded = createWebhookSender({ timeoutMs: 1000, allowPrivateUrls: false, connectionsPerOrigin: 2 })
  const open = createWebhookSender({ timeoutMs: 1000, allowPrivateUrls: true, connectionsPerOrigin: 2 })
  const quick = createWebhookSender({ timeoutMs: 200, allowPrivateUrls: true, connectionsPerOrigin: 2 })
  t.teardown(() => Promise.all([guarded.close(), open.close(), quick.close()]))
  const refused = await guarded.send(receiver.url, request)
  t.match(refused, { succeeded: false, responseStatus: null, error: /refused.*non-public/ })
  const byName = await guarded.send(receiver.url.replace('127.0.0.1', 'localhost'), request)
  t.match(byName, { succeeded: false, responseStatus: null, error: /refused.*non-public/ }, 'a name resolving to loopback is refused at connect time')
  t.equal(receiver.received.length, 0, 'nothing was sent')
  for (const url of ['http://169.254.169.254/latest/meta-data', 'http://[::ffff:127.0.0.1]/', 'http://10.0.0.1/']) {
    t.match(await guarded.send(url, request), { succeeded: false, error: /refused/ }, url)
  }

  receiver.respond = (_request, response) => { response.writeHead(302, { location: 'http://example.com/' }).end() }
  const redirected = await open.send(receiver.url, request)
  t.match(redirected, { succeeded: false, responseStatus: 302, congested: false, timedOut: false })

  receiver.respond = (_request, response) => { response.writeHead(503, { 'retry-after': '7' }).end() }
  t.match(await open.send(receiver.url, request), { succeeded: false, responseStatus: 503, congested: true, retryAfterSeconds: 7 })

  receiver.respond = () => {}
  const hung = await quick.send(receiver.url, request)
  t.match(hung, { succeeded: false, responseStatus: null, congested: true, timedOut: true, error: /timed out after 200 ms/ })
})

/** A receiver that counts the connections open to it right now, and the most ever open at once. */
async function socketCountingReceiver (t: Teardown, respond: (request: IncomingMessage, response: ServerResponse) => void) {
  const open = new Set<Socket>()
  let accepted = 0
  let most = 0
  const server = createServer(respond)
  // Never drops an idle kept-alive connection itself (Node's default is 5 s): only the sender can close one.
  server.keepAliveTimeout = 0
  server.on('connection', (socket: Socket) => {
    accepted++
    open.add(socket)
    most = Math.max(most, open.size)
    socket.once('close', () => open.delete(socket))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return { url: `http://127.0.0.1:${address.port}/hook`, open: () => open.size, accepted: () => accepted, most: () => most }
}

t.test('repeated timeouts, resets and aborts leave no socket open, and the sender keeps its connection limit', async (t) => {
  let mode: 'hang' | 'reset' | 'ok' = 'hang'
  const receiver = await socketCountingReceiver(t, (request, response) => {
    if (mode === 'reset') request.socket.destroy()
    else if (mode === 'ok') response.writeHead(200, { 'content-type': 'text/plain' }).end('ok, with a body the sender must read')
  })
  const request = signWebhook('msg_2', 'x', '{}', ['whsec_' + Buffer.alloc(24, 2).toString('base64')])
  // The sender's own timeout (and so undici's headersTimeout, its backstop) and its keep-alive are far longer than
  // any wait below: only a send's deadline (200 ms), its caller's abort or close() can end these connections.
  const sender = createWebhookSender({ timeoutMs: 600_000, keepAliveTimeoutMs: 600_000, allowPrivateUrls: true, connectionsPerOrigin: 2 })
  let closed = false
  t.teardown(() => closed ? undefined : sender.close())
  const sendMany = (signal?: () => AbortSignal, limitMs?: number) =>
    Promise.all(Array.from({ length: 10 }, () => sender.send(receiver.url, request, signal?.(), limitMs)))

  const timedOut = await sendMany(undefined, 200)
  t.ok(timedOut.every((outcome) => outcome.timedOut && outcome.error === 'timed out after 200 ms'), 'ten timeouts')
  await waitFor('the timed-out connections to close', () => receiver.open() === 0)
  t.ok(receiver.most() <= 2, `never more than 2 connections at once (${receiver.most()})`)

  mode = 'reset'
  const reset = await sendMany()
  t.ok(reset.every((outcome) => !outcome.succeeded && outcome.congested && !outcome.timedOut && /^request failed/.test(outcome.error ?? '')), 'ten resets')
  await waitFor('the reset connections to close', () => receiver.open() === 0)

  mode = 'hang'
  const aborts = new AbortController()
  const aborted = sendMany(() => aborts.signal)
  await waitFor('the sends to reach the receiver', () => receiver.open() === 2)
  aborts.abort()
  t.ok((await aborted).every((outcome) => outcome.error === 'aborted: worker shutting down' && !outcome.timedOut), 'ten aborts')
  await waitFor('the aborted connections to close', () => receiver.open() === 0)
  t.ok(receiver.most() <= 2, `still never more than 2 at once (${receiver.most()})`)

  mode = 'ok'
  const accepted = receiver.accepted()
  for (let n = 0; n < 10; n++) t.match(await sender.send(receiver.url, request), { succeeded: true, responseStatus: 200 })
  const opened = receiver.accepted() - accepted
  t.ok(opened >= 1 && opened <= 2, `after all that, ten sends in a row reuse the pool's kept-alive connections (${opened} opened)`)
  t.equal(receiver.open(), opened, 'which stay open for the next sends')
  closed = true
  await sender.close()
  await waitFor('close() to drop the kept-alive connection', () => receiver.open() === 0)
})
