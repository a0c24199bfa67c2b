import type { InjectOptions } from 'fastify'
import { STATUS_CODES } from 'node:http'
import t from 'tap'
import { buildTestApp, createOrganization, sendEvent } from '../../support/helpers.js'
import { createSubscription, request, type Subscription } from '../../support/subscriptions.js'
import { createWebhook } from '../../support/webhooks.js'

const URN = 'urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e'
const MAX_BIGINT = '9223372036854775807'
const base64url = (text: string) => Buffer.from(text).toString('base64url')

interface Ids {
  event: string
  webhook: string
  subscription: string
}

interface Row {
  parameter: string
  value: string
  request: (ids: Ids) => InjectOptions
  /** The code of the 400; validation_failed answers name the parameter in their message instead. */
  code: string
  /** Where a validation_failed message must point (e.g. `params/id`); any params, querystring or body part when absent. */
  names?: string
}

type Method = NonNullable<InjectOptions['method']>
const VALID_ID = '0f8fad5b-d9cb-469f-a165-70867728950e'
/** Ids the uuid format refuses: forms PostgreSQL's uuid reads (`urn:uuid:`, braces, no hyphens), and others, up to the router's 100 characters. */
const NOT_UUIDS = [
  URN, `{${VALID_ID}}`, VALID_ID.replaceAll('-', ''), VALID_ID.slice(0, -1), `${VALID_ID}0`, 'not-a-uuid', '0', '-1',
  '9223372036854775808', '%00', `${VALID_ID}%00`, 'x'.repeat(100)
]
/** Date-times that name no instant PostgreSQL's timestamptz holds, or none at all: year 0000, years past 9999 (also once an offset beyond 15:59 is applied), impossible fields. */
const NOT_INSTANTS = [
  '0000-01-01T00:00:00Z', '0001-01-01T00:00:00+01:00', '0001-01-01T00:00:00+16:00', '9999-12-31T23:59:59-10:00',
  '9999-12-31T23:59:59-16:00', '10000-01-01T00:00:00Z', '+010000-01-01T00:00:00Z', '-000001-01-01T00:00:00Z',
  '2016-12-31T23:59:60Z', '2020-01-01T00:00:00+24:00', '2020-01-01T00:00:00+99:99', '2020-13-01T00:00:00Z', '2020-01-01T25:00:00Z'
]
/** Cursors past the largest position (a txid beyond 2^64 - 1, a seq beyond bigint), and things that are not cursors. */
const NOT_CURSORS = [
  base64url('99999999999999999999.1'), base64url('18446744073709551616.1'), base64url('1.9223372036854775808'),
  base64url('99999999999999999999'), '9999999999999999999', '!!!', base64url('-1.1')
]
const WITH_NUL = ['\u0000', 'now\u0000', 'beginning\u0000', '\u0000now', '0001\u0000-01-01T00:00:00Z']
/** Values a start, seek target or replay bound must refuse in code (each is within the 100 characters the schema allows). */
const NOT_POSITIONS = [...NOT_INSTANTS, ...NOT_CURSORS, ...WITH_NUL]
const TOO_LONG = 'x'.repeat(101)
const shown = (value: string) => value.replaceAll('\u0000', '\\u0000')
/** A range that every check but the one under test accepts: the last minute. */
const lastMinute = () => ({ from: new Date(Date.now() - 60_000).toISOString(), to: new Date().toISOString() })

/** The /api/subscriptions routes with an :id, each with a body it accepts; the replay ones with a :replay_id too. */
const SUBSCRIPTION_ROUTES: Array<[Method, string, object?]> = [
  ['GET', '/api/subscriptions/:id'], ['PATCH', '/api/subscriptions/:id', { paused: false }], ['DELETE', '/api/subscriptions/:id'],
  ['POST', '/api/subscriptions/:id/lease', {}], ['POST', '/api/subscriptions/:id/ack', { lease_id: VALID_ID }],
  ['POST', '/api/subscriptions/:id/release', { lease_id: VALID_ID }],
  ['POST', '/api/subscriptions/:id/extend', { lease_id: VALID_ID, lease_seconds: 10 }],
  ['POST', '/api/subscriptions/:id/seek', { to: 'now' }], ['POST', '/api/subscriptions/:id/replay', lastMinute()],
  ['GET', '/api/subscriptions/:id/replays'], ['GET', '/api/subscriptions/:id/replays/:replay_id'],
  ['DELETE', '/api/subscriptions/:id/replays/:replay_id'], ['GET', '/api/subscriptions/:id/dead-letters'],
  ['POST', '/api/subscriptions/:id/dead-letters/redrive', {}]
]

const subscriptionRequest = (method: Method, path: string, payload?: object) => (id: string, replayId = VALID_ID): InjectOptions => ({
  method, url: path.replace(':id', id).replace(':replay_id', replayId), ...(payload === undefined ? {} : { payload })
})

/** The subscription requests that take a position or a range bound: the code of their refusal, and the body field. */
const POSITION_FIELDS: Array<{ parameter: string, code: string, field: string, request: (subscription: string, value: string) => InjectOptions }> = [
  {
    parameter: 'POST /api/subscriptions start', code: 'invalid_start', field: 'start',
    request: (_subscription, value) => ({ method: 'POST', url: '/api/subscriptions', payload: { kind: 'pull', start: value } })
  },
  {
    parameter: 'POST /api/subscriptions/:id/seek to', code: 'invalid_start', field: 'to',
    request: (subscription, value) => ({ method: 'POST', url: `/api/subscriptions/${subscription}/seek`, payload: { to: value } })
  },
  {
    parameter: 'POST /api/subscriptions/:id/replay from', code: 'invalid_range', field: 'from',
    request: (subscription, value) => ({ method: 'POST', url: `/api/subscriptions/${subscription}/replay`, payload: { ...lastMinute(), from: value } })
  },
  {
    parameter: 'POST /api/subscriptions/:id/replay to', code: 'invalid_range', field: 'to',
    request: (subscription, value) => ({ method: 'POST', url: `/api/subscriptions/${subscription}/replay`, payload: { ...lastMinute(), to: value } })
  }
]

const SUBSCRIPTION_ROWS: Row[] = [
  ...SUBSCRIPTION_ROUTES.flatMap(([method, path, payload]) => NOT_UUIDS.map((value): Row => ({
    parameter: `${method} ${path} id`, value, code: 'validation_failed', names: 'params/id',
    request: () => subscriptionRequest(method, path, payload)(value)
  }))),
  ...SUBSCRIPTION_ROUTES.filter(([, path]) => path.includes(':replay_id')).flatMap(([method, path]) => NOT_UUIDS.map((value): Row => ({
    parameter: `${method} ${path} replay_id`, value, code: 'validation_failed', names: 'params/replay_id',
    request: ({ subscription }) => subscriptionRequest(method, path)(subscription, value)
  }))),
  ...(['ack', 'release'] as const).flatMap((action): Row[] => [
    {
      parameter: `POST /api/subscriptions/:id/${action} lease_id`, value: URN, code: 'validation_failed', names: 'body/lease_id',
      request: ({ subscription }) => ({ method: 'POST', url: `/api/subscriptions/${subscription}/${action}`, payload: { lease_id: URN } })
    },
    {
      parameter: `POST /api/subscriptions/:id/${action} event_ids`, value: URN, code: 'validation_failed', names: 'body/event_ids/0',
      request: ({ subscription }) => ({ method: 'POST', url: `/api/subscriptions/${subscription}/${action}`, payload: { lease_id: VALID_ID, event_ids: [URN] } })
    }
  ]),
  {
    parameter: 'POST /api/subscriptions/:id/extend lease_id', value: URN, code: 'validation_failed', names: 'body/lease_id',
    request: ({ subscription }) => ({ method: 'POST', url: `/api/subscriptions/${subscription}/extend`, payload: { lease_id: URN, lease_seconds: 10 } })
  },
  {
    parameter: 'POST /api/subscriptions/:id/dead-letters/redrive event_ids', value: URN, code: 'validation_failed', names: 'body/event_ids/0',
    request: ({ subscription }) => ({ method: 'POST', url: `/api/subscriptions/${subscription}/dead-letters/redrive`, payload: { event_ids: [URN] } })
  },
  // Positions: parsed in code (lib/positions.ts), so each is refused with the code of its parameter.
  ...POSITION_FIELDS.flatMap(({ parameter, code, request }) => NOT_POSITIONS.map((value): Row => ({
    parameter, value: shown(value), code, request: ({ subscription }) => request(subscription, value)
  }))),
  ...POSITION_FIELDS.map(({ parameter, field, request }): Row => ({
    parameter, value: `${TOO_LONG.length} characters`, code: 'validation_failed', names: `body/${field}`, request: ({ subscription }) => request(subscription, TOO_LONG)
  })),
  // Text that reaches PostgreSQL: no NUL (text cannot hold it), nothing over its bound.
  ...([
    ['name', 'a\u0000b', 'body/name'], ['name', 'x'.repeat(201), 'body/name'],
    ['event_types', ['a\u0000b'], 'body/event_types/0'], ['event_types', ['a'.repeat(102)], 'body/event_types/0'],
    ['event_types', Array.from({ length: 101 }, (_, index) => `type.${index}`), 'body/event_types']
  ] as const).flatMap(([field, value, names]): Row[] => [
    {
      parameter: `POST /api/subscriptions ${field}`, value: shown(JSON.stringify(value)).slice(0, 60), code: 'validation_failed', names,
      request: () => ({ method: 'POST', url: '/api/subscriptions', payload: { kind: 'pull', [field]: value } })
    },
    {
      parameter: `PATCH /api/subscriptions/:id ${field}`, value: shown(JSON.stringify(value)).slice(0, 60), code: 'validation_failed', names,
      request: ({ subscription }) => ({ method: 'PATCH', url: `/api/subscriptions/${subscription}`, payload: { [field]: value } })
    }
  ]),
  ...['a\u0000b', 'x'.repeat(101)].map((value): Row => ({
    parameter: 'POST /api/subscriptions/:id/lease type', value: shown(value).slice(0, 60), code: 'validation_failed', names: 'body/type',
    request: ({ subscription }) => ({ method: 'POST', url: `/api/subscriptions/${subscription}/lease`, payload: { type: value } })
  })),
  // Numbers beyond int8 (and beyond their bounds) in bodies and the query string.
  ...([
    ['POST', '', { kind: 'pull', max_in_flight: 9223372036854775808 }, 'body/max_in_flight'],
    ['POST', '', { kind: 'pull', max_attempts: 1e30 }, 'body/max_attempts'],
    ['POST', '', { kind: 'pull', rate_limit_per_second: 9223372036854775808 }, 'body/rate_limit_per_second'],
    ['PATCH', '/:id', { max_in_flight: 9223372036854775808 }, 'body/max_in_flight'],
    ['PATCH', '/:id', { rate_limit_per_second: 1e30 }, 'body/rate_limit_per_second'],
    ['POST', '/:id/lease', { limit: 9223372036854775808 }, 'body/limit'],
    ['POST', '/:id/lease', { lease_seconds: 9223372036854775808 }, 'body/lease_seconds'],
    ['POST', '/:id/lease', { wait_seconds: 1e30 }, 'body/wait_seconds'],
    ['POST', '/:id/extend', { lease_id: VALID_ID, lease_seconds: 9223372036854775808 }, 'body/lease_seconds']
  ] as const).map(([method, path, payload, names]): Row => ({
    parameter: `${method} /api/subscriptions${path} ${names.slice('body/'.length)}`, value: JSON.stringify(payload), code: 'validation_failed', names,
    request: ({ subscription }) => ({ method, url: `/api/subscriptions${path.replace(':id', subscription)}`, payload })
  })),
  ...['9999999999999999999', '1e400', '-1', '%00'].map((value): Row => ({
    parameter: 'GET /api/subscriptions/:id/dead-letters limit', value, code: 'validation_failed', names: 'querystring/limit',
    request: ({ subscription }) => ({ method: 'GET', url: `/api/subscriptions/${subscription}/dead-letters?limit=${value}` })
  }))
]

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
  { parameter: 'lease type', value: '\\u0000', code: 'validation_failed', request: () => ({ method: 'POST', url: '/api/inbox/lease', payload: { type: 'a\u0000b' } }) },
  ...SUBSCRIPTION_ROWS
]

t.test('hostile parameter values answer 400 with a code, or a message, naming the parameter; never 500', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const webhook = await createWebhook(t, app, organization, { url: 'http://127.0.0.1:9/hook' })
  const event = (await sendEvent(app, organization, { type: 'sweep.test', payload: {} })).json<{ event_id: string }>().event_id
  const subscription = (await createSubscription(app, organization)).id
  for (const row of TABLE) {
    const options = row.request({ event, webhook: webhook.id, subscription })
    const response = await app.inject({ ...options, headers: { ...organization.headers, ...options.headers } })
    const label = `${row.parameter} = ${row.value}`
    t.equal(response.statusCode, 400, label)
    const body = response.json<{ code: string, message: string }>()
    t.equal(body.code, row.code, label)
    if (row.code === 'validation_failed') t.match(body.message, row.names ?? /(params|querystring|body)\/?\S*/, `${label}: the message names the parameter`)
  }
})

t.test('ids the router cannot take (over 100 characters, broken percent-encoding) are refused by it with the API error body, never 500', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const subscription = (await createSubscription(app, organization)).id
  const cases: Array<[string, number, string]> = [
    ['x'.repeat(101), 414, 'path_parameter_too_long'], [VALID_ID.repeat(300), 414, 'path_parameter_too_long'],
    ['%zz', 400, 'invalid_url'], ['%E0%A4%A', 400, 'invalid_url']
  ]
  for (const [method, path, payload] of SUBSCRIPTION_ROUTES) {
    for (const [value, status, code] of cases) {
      const requests = [subscriptionRequest(method, path, payload)(value)]
      if (path.includes(':replay_id')) requests.push(subscriptionRequest(method, path, payload)(subscription, value))
      for (const options of requests) {
        const requestId = `router-${status}-${code}`
        const response = await app.inject({ ...options, headers: { ...organization.headers, 'x-request-id': requestId } })
        const label = `${options.method} ${String(options.url).slice(0, 80)}`
        t.equal(response.statusCode, status, label)
        t.same(response.json(), { statusCode: status, error: STATUS_CODES[status], code, message: response.json<{ message: string }>().message }, label)
        t.ok(response.json<{ message: string }>().message.length < 100, `${label}: the message does not repeat the path`)
        t.equal(response.headers['x-request-id'], requestId, `${label}: the request id is answered`)
      }
    }
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

t.test('subscription positions at the edges PostgreSQL holds are accepted: offsets beyond 15:59 naming a held instant, the largest cursor', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  // RFC 3339 allows offsets to 23:59; PostgreSQL's stop at 15:59, so the instant, not the text, is what it is given.
  const at = (time: number, offset: '+16:00' | '-16:00' | '+23:59') => {
    const minutes = (offset.startsWith('-') ? -1 : 1) * (Number(offset.slice(1, 3)) * 60 + Number(offset.slice(4)))
    return new Date(time + minutes * 60_000).toISOString().replace('Z', offset)
  }
  const now = Date.now()
  const created = await request(app, organization, 'POST', '/api/subscriptions', { kind: 'pull', start: at(now - 60_000, '+16:00') })
  t.equal(created.statusCode, 201, `start ${at(now - 60_000, '+16:00')}`)
  const id = created.json<Subscription>().id
  t.equal((await request(app, organization, 'POST', `/api/subscriptions/${id}/seek`, { to: at(now, '-16:00') })).statusCode, 200, 'seek to -16:00')
  const replay = await request(app, organization, 'POST', `/api/subscriptions/${id}/replay`, { from: at(now - 60_000, '+23:59'), to: at(now, '-16:00') })
  t.equal(replay.statusCode, 202, 'a replay between +23:59 and -16:00')
  const replayId = replay.json<{ replay_id: string }>().replay_id
  t.equal((await request(app, organization, 'GET', `/api/subscriptions/${id.toUpperCase()}/replays/${replayId.toUpperCase()}`)).statusCode, 200, 'ids in capitals')

  const largest = base64url('18446744073709551615.9223372036854775807')
  const atEnd = await request(app, organization, 'POST', '/api/subscriptions', { kind: 'pull', start: largest })
  t.equal(atEnd.statusCode, 201, 'start at the largest cursor (txid 2^64 - 1, seq 2^63 - 1)')
  const endId = atEnd.json<Subscription>().id
  t.equal(atEnd.json<Subscription>().position, largest, 'and it is there')
  t.equal((await request(app, organization, 'POST', `/api/subscriptions/${endId}/lease`, {})).statusCode, 200, 'a lease there finds nothing, without error')
  t.equal((await request(app, organization, 'GET', `/api/subscriptions/${endId}/dead-letters?limit=100`)).statusCode, 200, 'the largest dead-letters limit')
  t.equal((await request(app, organization, 'POST', `/api/subscriptions/${id}/seek`, { to: largest })).statusCode, 200, 'seek to the largest cursor')
})
