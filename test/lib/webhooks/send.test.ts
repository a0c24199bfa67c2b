import t from 'tap'
import { nextRetryDelayMs, parseRetryAfter, parseRetrySchedule } from '../../../lib/webhooks/retry-schedule.js'
import { createWebhookSender } from '../../../lib/webhooks/send.js'
import { signWebhook } from '../../../lib/webhooks/signing.js'
import { startReceiver } from '../../support/webhooks.js'

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
