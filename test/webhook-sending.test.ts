import t from 'tap'
import { nextRetryDelayMs, parseRetryAfter, parseRetrySchedule } from '../lib/webhooks/retry-schedule.js'
import { sendWebhook } from '../lib/webhooks/send.js'
import { signWebhook } from '../lib/webhooks/signing.js'
import { startReceiver } from './webhook-helpers.js'

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
  const request = signWebhook('msg_1', 'x', {}, ['whsec_' + Buffer.alloc(24, 1).toString('base64')])
  const signal = new AbortController().signal
  const refused = await sendWebhook(receiver.url, request, { timeoutMs: 1000, allowPrivateUrls: false, signal })
  t.match(refused, { succeeded: false, responseStatus: null, error: /refused.*non-public/ })
  t.equal(receiver.received.length, 0, 'nothing was sent')
  for (const url of ['http://169.254.169.254/latest/meta-data', 'http://[::ffff:127.0.0.1]/', 'http://10.0.0.1/']) {
    t.match(await sendWebhook(url, request, { timeoutMs: 1000, allowPrivateUrls: false, signal }), { succeeded: false, error: /refused/ }, url)
  }

  receiver.respond = (_request, response) => { response.writeHead(302, { location: 'http://example.com/' }).end() }
  const redirected = await sendWebhook(receiver.url, request, { timeoutMs: 1000, allowPrivateUrls: true, signal })
  t.match(redirected, { succeeded: false, responseStatus: 302 })

  receiver.respond = () => {}
  const hung = await sendWebhook(receiver.url, request, { timeoutMs: 200, allowPrivateUrls: true, signal })
  t.match(hung, { succeeded: false, responseStatus: null, error: /timed out after 200 ms/ })
})
