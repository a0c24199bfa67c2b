import type { InjectOptions } from 'fastify'
import t from 'tap'
import { buildTestApp, createOrganization, sendEvent } from '../../support/helpers.js'
import { createWebhook } from '../../support/webhooks.js'

const URN = 'urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e'
const MAX_BIGINT = '9223372036854775807'
const base64url = (text: string) => Buffer.from(text).toString('base64url')

interface Row {
  parameter: string
  value: string
  request: (ids: { event: string, webhook: string }) => InjectOptions
  /** The code of the 400; validation_failed answers name the parameter in their message instead. */
  code: string
}

/**
 * Every route parameter that reaches PostgreSQL, with values the schemas once let through and PostgreSQL refused
 * (a 500, or a misleading code): numbers beyond bigint, instants timestamptz cannot hold, `urn:uuid:` ids, NUL.
 */
const TABLE: Row[] = [
  ...['9999999999999999999', '9223372036854775808'].map((value): Row => ({
    parameter: 'deliveries cursor', value, code: 'invalid_cursor',
    request: ({ webhook }) => ({ method: 'GET', url: `/api/webhooks/${webhook}/deliveries?cursor=${value}` })
  })),
  ...[base64url('99999999999999999999.1'), base64url('1.9223372036854775808'), '!!!'].map((value): Row => ({
    parameter: 'inbox cursor', value, code: 'invalid_cursor',
    request: () => ({ method: 'GET', url: `/api/inbox?cursor=${value}` })
  })),
  ...['0000-01-01T00:00:00Z', '0001-01-01T00:00:00+01:00', '9999-12-31T23:59:59-10:00', '2016-12-31T23:59:60Z'].map((value): Row => ({
    parameter: 'inbox since', value, code: 'invalid_since',
    request: () => ({ method: 'GET', url: `/api/inbox?since=${encodeURIComponent(value)}` })
  })),
  ...[
    ['GET', '/api/events/:id'], ['POST', '/api/events/:id/ack'], ['POST', '/api/ack/:id'], ['POST', '/api/events/:id/redeliver'],
    ['POST', '/api/inbox/quarantine/:id/requeue'], ['GET', '/api/webhooks/:id'], ['PATCH', '/api/webhooks/:id'],
    ['DELETE', '/api/webhooks/:id'], ['POST', '/api/webhooks/:id/rotate-secret'], ['GET', '/api/webhooks/:id/deliveries'],
    ['POST', '/api/webhooks/:id/test']
  ].map(([method, path]): Row => ({
    parameter: `${method} ${path} id`, value: URN, code: 'validation_failed',
    request: () => ({ method: method as InjectOptions['method'], url: (path as string).replace(':id', URN), ...(method === 'PATCH' ? { payload: { enabled: true } } : {}) })
  })),
  ...([
    ['/api/ack', { event_ids: [URN] }],
    ['/api/inbox/ack', { lease_id: URN }],
    ['/api/inbox/release', { lease_id: URN, event_ids: [URN] }],
    ['/api/inbox/extend', { lease_id: URN, lease_seconds: 10 }]
  ] as const).map(([url, payload]): Row => ({
    parameter: `POST ${url} body ids`, value: URN, code: 'validation_failed',
    request: () => ({ method: 'POST', url, payload })
  })),
  {
    parameter: 'redeliver webhook_id', value: URN, code: 'validation_failed',
    request: ({ event }) => ({ method: 'POST', url: `/api/events/${event}/redeliver`, payload: { webhook_id: URN } })
  },
  { parameter: 'inbox type', value: '\\u0000', code: 'validation_failed', request: () => ({ method: 'GET', url: '/api/inbox?type=a%00b' }) },
  { parameter: 'lease type', value: '\\u0000', code: 'validation_failed', request: () => ({ method: 'POST', url: '/api/inbox/lease', payload: { type: 'a\u0000b' } }) }
]

t.test('hostile parameter values answer 400 with a code, or a message, naming the parameter; never 500', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const webhook = await createWebhook(t, app, organization, { url: 'http://127.0.0.1:9/hook' })
  const event = (await sendEvent(app, organization, { type: 'sweep.test', payload: {} })).json<{ event_id: string }>().event_id
  for (const row of TABLE) {
    const options = row.request({ event, webhook: webhook.id })
    const response = await app.inject({ ...options, headers: { ...organization.headers, ...options.headers } })
    const label = `${row.parameter} = ${row.value}`
    t.equal(response.statusCode, 400, label)
    const body = response.json<{ code: string, message: string }>()
    t.equal(body.code, row.code, label)
    if (row.code === 'validation_failed') t.match(body.message, /(params|querystring|body)\/?\S*/, `${label}: the message names the parameter`)
  }
})

t.test('the largest values PostgreSQL holds are still accepted', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const webhook = await createWebhook(t, app, organization, { url: 'http://127.0.0.1:9/hook' })
  const get = (url: string) => app.inject({ method: 'GET', url, headers: organization.headers })
  t.equal((await get(`/api/webhooks/${webhook.id}/deliveries?cursor=${MAX_BIGINT}`)).statusCode, 200, 'the largest bigint cursor')
  for (const since of ['0001-01-01T00:00:00Z', '9999-12-31T23:59:59Z', '2020-01-01T00:00:00+16:00']) {
    t.equal((await get(`/api/inbox?since=${encodeURIComponent(since)}`)).statusCode, 200, `since ${since}`)
  }
  t.equal((await get(`/api/webhooks/${webhook.id.toUpperCase()}`)).statusCode, 200, 'an id in capitals')
})
