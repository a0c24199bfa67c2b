import t from 'tap'
import { randomUUID } from 'node:crypto'
import { buildTestApp, createOrganization, sendEvent } from '../../../support/helpers.js'
import { createWebhook, startReceiver } from '../../../support/webhooks.js'

t.test('endpoints are created with a secret shown once, listed, changed and deleted', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const created = await app.inject({
    method: 'POST', url: '/api/webhooks', headers: organization.headers,
    payload: { url: 'http://127.0.0.1:9/hook', event_types: ['order.*', 'user.created'], description: 'orders' }
  })
  t.equal(created.statusCode, 201)
  const webhook = created.json()
  t.match(webhook, { id: /^[0-9a-f-]{36}$/, url: 'http://127.0.0.1:9/hook', event_types: ['order.*', 'user.created'], enabled: true, disabled_reason: null })
  t.match(webhook.secret, /^whsec_[A-Za-z0-9+/=]{32,}$/)
  t.ok(Buffer.from(webhook.secret.slice(6), 'base64').length >= 24)

  const listed = await app.inject({ method: 'GET', url: '/api/webhooks', headers: organization.headers })
  t.equal(listed.json().webhooks.length, 1)
  t.notOk(listed.body.includes(webhook.secret), 'the secret is masked in lists')
  const one = await app.inject({ method: 'GET', url: `/api/webhooks/${webhook.id}`, headers: organization.headers })
  t.notOk(one.body.includes(webhook.secret), 'and in reads')

  const patched = await app.inject({
    method: 'PATCH', url: `/api/webhooks/${webhook.id}`, headers: organization.headers, payload: { enabled: false, description: null, event_types: [] }
  })
  t.equal(patched.statusCode, 200)
  t.match(patched.json(), { enabled: false, description: null, event_types: [] })

  const rotated = await app.inject({ method: 'POST', url: `/api/webhooks/${webhook.id}/rotate-secret`, headers: organization.headers })
  t.equal(rotated.statusCode, 200)
  t.not(rotated.json().secret, webhook.secret)
  t.match(rotated.json().secret, /^whsec_/)

  const deleted = await app.inject({ method: 'DELETE', url: `/api/webhooks/${webhook.id}`, headers: organization.headers })
  t.equal(deleted.statusCode, 204)
  const gone = await app.inject({ method: 'GET', url: `/api/webhooks/${webhook.id}`, headers: organization.headers })
  t.equal(gone.statusCode, 404)
})

t.test('bad URLs and private addresses are refused', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const refused = ['http://127.0.0.1/hook', 'http://localhost:8080/x', 'http://10.1.2.3/', 'http://192.168.0.10/', 'http://169.254.169.254/latest/meta-data',
    'http://[::1]/', 'http://0.0.0.0/', 'ftp://example.com/', 'not a url', '/relative', 'http://user:pass@example.com/']
  for (const url of refused) {
    const response = await app.inject({ method: 'POST', url: '/api/webhooks', headers: organization.headers, payload: { url } })
    t.equal(response.statusCode, 400, url)
    t.ok(['invalid_webhook_url', 'validation_failed'].includes(response.json().code), url)
  }
  for (const payload of [{}, { url: 'http://example.com', event_types: ['bad type'] }, { url: 'http://example.com', extra: 1 }]) {
    const response = await app.inject({ method: 'POST', url: '/api/webhooks', headers: organization.headers, payload })
    t.equal(response.statusCode, 400, JSON.stringify(payload))
  }
})

t.test('deliveries are queued with the event, only for matching enabled endpoints', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const all = await createWebhook(t, app, organization, { url: 'http://127.0.0.1:9/all' })
  const orders = await createWebhook(t, app, organization, { url: 'http://127.0.0.1:9/orders', event_types: ['order.*'] })
  const exact = await createWebhook(t, app, organization, { url: 'http://127.0.0.1:9/exact', event_types: ['user.created'] })
  const disabled = await createWebhook(t, app, organization, { url: 'http://127.0.0.1:9/off' })
  await app.inject({ method: 'PATCH', url: `/api/webhooks/${disabled.id}`, headers: organization.headers, payload: { enabled: false } })

  const targets = async (type: string) => {
    const { event_id: eventId } = (await sendEvent(app, organization, { type, payload: {} })).json()
    const { rows } = await app.pg.query<{ webhook_id: string }>('SELECT webhook_id FROM deliveries WHERE event_id = $1', [eventId])
    return rows.map((row) => row.webhook_id).sort()
  }
  t.same(await targets('order.created'), [all.id, orders.id].sort())
  t.same(await targets('user.created'), [all.id, exact.id].sort())
  t.same(await targets('user.deleted'), [all.id])
  t.same(await targets('orders'), [all.id], 'order.* needs the dot')
})

t.test('redeliver queues the event again; another organization gets 404 everywhere', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const owner = await createOrganization(app)
  const stranger = await createOrganization(app)
  const first = await createWebhook(t, app, owner, { url: 'http://127.0.0.1:9/a' })
  const second = await createWebhook(t, app, owner, { url: 'http://127.0.0.1:9/b' })
  const { event_id: eventId } = (await sendEvent(app, owner, { type: 'x', payload: {} })).json()

  const all = await app.inject({ method: 'POST', url: `/api/events/${eventId}/redeliver`, headers: owner.headers })
  t.equal(all.statusCode, 202)
  t.same(all.json(), { queued: 2 })
  const one = await app.inject({ method: 'POST', url: `/api/events/${eventId}/redeliver`, headers: owner.headers, payload: { webhook_id: second.id } })
  t.same(one.json(), { queued: 1 })
  const { rows } = await app.pg.query('SELECT count(*)::int AS n FROM deliveries WHERE event_id = $1', [eventId])
  t.equal(rows[0].n, 5)

  const foreignEvent = await app.inject({ method: 'POST', url: `/api/events/${eventId}/redeliver`, headers: stranger.headers })
  t.equal(foreignEvent.statusCode, 404)
  for (const [method, url] of [['GET', ''], ['PATCH', ''], ['DELETE', ''], ['POST', '/rotate-secret'], ['GET', '/deliveries'], ['POST', '/test']] as const) {
    const response = await app.inject({
      method, url: `/api/webhooks/${first.id}${url}`, headers: stranger.headers, ...(method === 'PATCH' ? { payload: { enabled: false } } : {})
    })
    t.equal(response.statusCode, 404, `${method} ${url}`)
  }
  t.equal((await app.inject({ method: 'GET', url: '/api/webhooks', headers: stranger.headers })).json().webhooks.length, 0)
  t.equal((await app.inject({ method: 'GET', url: `/api/webhooks/${randomUUID()}`, headers: owner.headers })).statusCode, 404)
})

t.test('POST /api/webhooks/:id/test sends a signed webhook.test now', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  const webhook = await createWebhook(t, app, organization, { url: receiver.url })
  const ok = await app.inject({ method: 'POST', url: `/api/webhooks/${webhook.id}/test`, headers: organization.headers })
  t.match(ok.json(), { success: true, response_status: 200, error: null, duration_ms: Number })
  t.equal(JSON.parse(receiver.received[0]?.body ?? '{}').type, 'webhook.test')

  receiver.respond = (_request, response) => { response.writeHead(500).end() }
  const failing = await app.inject({ method: 'POST', url: `/api/webhooks/${webhook.id}/test`, headers: organization.headers })
  t.match(failing.json(), { success: false, response_status: 500, error: /500/ })
})
