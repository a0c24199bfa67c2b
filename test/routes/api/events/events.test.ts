import t from 'tap'
import { randomUUID } from 'node:crypto'
import { buildTestApp, createOrganization, sendEvent } from '../../../support/helpers.js'

t.test('an accepted event is stored and read back exactly', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const payload = {
    text: 'Grüße, 世界! 🎉👩‍👩‍👧',
    nested: { list: [1, 2.5, -3e-7, true, null, 'é'], empty: {}, deep: { a: { b: { c: 'ü' } } } },
    big: 9007199254740991,
    escaped: 'quote " backslash \\ newline \n tab \t',
    '😀 key': 'emoji key'
  }
  const response = await sendEvent(app, organization, { type: 'order.created:v1_x-y', payload, source: 'shop' })
  t.equal(response.statusCode, 201)
  const body = response.json()
  t.match(body, { event_id: /^[0-9a-f-]{36}$/, status: 'accepted', type: 'order.created:v1_x-y', created_at: String, delivery_status: 'none' })
  t.equal(response.headers.location, `/api/events/${body.event_id}`)

  const read = await app.inject({ method: 'GET', url: `/api/events/${body.event_id}`, headers: organization.headers })
  t.equal(read.statusCode, 200)
  t.same(read.json(), {
    event_id: body.event_id,
    type: 'order.created:v1_x-y',
    payload,
    dedup_id: null,
    source: 'shop',
    status: 'pending',
    delivery_status: 'none',
    created_at: body.created_at,
    acknowledged_at: null,
    subscriptions: []
  })
})

t.test('event bodies are validated strictly', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const cases: Array<[string, object]> = [
    ['missing type', { payload: {} }],
    ['missing payload', { type: 'a' }],
    ['empty type', { type: '', payload: {} }],
    ['type too long', { type: 'a'.repeat(101), payload: {} }],
    ['type with space', { type: 'order created', payload: {} }],
    ['type not a string', { type: 123, payload: {} }],
    ['payload an array', { type: 'a', payload: [1, 2] }],
    ['payload a string', { type: 'a', payload: 'text' }],
    ['payload null', { type: 'a', payload: null }],
    ['empty dedup_id', { type: 'a', payload: {}, dedup_id: '' }],
    ['dedup_id too long', { type: 'a', payload: {}, dedup_id: 'd'.repeat(256) }],
    ['unknown field', { type: 'a', payload: {}, extra: 1 }]
  ]
  for (const [name, body] of cases) {
    const response = await sendEvent(app, organization, body)
    t.equal(response.statusCode, 400, name)
    t.match(response.json(), { statusCode: 400, error: 'Bad Request', code: 'validation_failed', message: String }, name)
  }
  const count = await app.pg.query('SELECT count(*)::int AS n FROM events WHERE organization_id = $1', [organization.id])
  t.equal(count.rows[0].n, 0, 'nothing was stored')
})

t.test('malformed requests get clear error codes', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const invalidJson = await app.inject({
    method: 'POST', url: '/api/events', headers: { ...organization.headers, 'content-type': 'application/json' }, payload: '{"type": '
  })
  t.equal(invalidJson.statusCode, 400)
  t.equal(invalidJson.json().code, 'invalid_json')

  const empty = await app.inject({
    method: 'POST', url: '/api/events', headers: { ...organization.headers, 'content-type': 'application/json' }, payload: ''
  })
  t.equal(empty.statusCode, 400)
  t.equal(empty.json().code, 'validation_failed')

  const poisoned = await app.inject({
    method: 'POST', url: '/api/events', headers: { ...organization.headers, 'content-type': 'application/json' },
    payload: '{"type":"x","payload":{"__proto__":{"admin":true}}}'
  })
  t.equal(poisoned.statusCode, 400, 'prototype poisoning is refused')

  const wrongType = await app.inject({
    method: 'POST', url: '/api/events', headers: { ...organization.headers, 'content-type': 'text/plain' }, payload: 'hello'
  })
  t.equal(wrongType.statusCode, 415)
  t.equal(wrongType.json().code, 'unsupported_media_type')

  const tooLarge = await sendEvent(app, organization, { type: 'big', payload: { blob: 'x'.repeat(256 * 1024) } })
  t.equal(tooLarge.statusCode, 413)
  t.match(tooLarge.json(), { statusCode: 413, code: 'payload_too_large' })

  const nul = await sendEvent(app, organization, { type: 'nul', payload: { text: 'a\u0000b' } })
  t.equal(nul.statusCode, 400)
  t.match(nul.json(), { code: 'unsupported_character', message: /u0000/ })
  const nulKey = await sendEvent(app, organization, { type: 'nul', payload: { 'a\u0000': 1 } })
  t.equal(nulKey.statusCode, 400)
  const loneSurrogate = await sendEvent(app, organization, { type: 'surrogate', payload: { text: 'x\ud800y' } })
  t.equal(loneSurrogate.statusCode, 400)
  t.equal(loneSurrogate.json().code, 'unsupported_character')

  const unknownRoute = await app.inject({ method: 'GET', url: '/api/nothing-here', headers: organization.headers })
  t.equal(unknownRoute.statusCode, 404)
  t.equal(unknownRoute.json().code, 'not_found')
})

t.test('a repeated dedup_id answers 200 with the original event', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const other = await createOrganization(app)
  const dedupId = `order-${randomUUID()}`
  const first = await sendEvent(app, organization, { type: 'order.created', payload: { n: 1 }, dedup_id: dedupId })
  t.equal(first.statusCode, 201)
  const again = await sendEvent(app, organization, { type: 'order.created', payload: { n: 2 }, dedup_id: dedupId })
  t.equal(again.statusCode, 200)
  t.match(again.json(), { event_id: first.json().event_id, status: 'duplicate', type: 'order.created', created_at: first.json().created_at })

  const viaHeader = await sendEvent(app, organization, { type: 'order.created', payload: {} }, { headers: { 'idempotency-key': dedupId } })
  t.equal(viaHeader.statusCode, 200, 'Idempotency-Key is the same as dedup_id')
  t.equal(viaHeader.json().event_id, first.json().event_id)

  const mismatch = await sendEvent(app, organization, { type: 'a', payload: {}, dedup_id: 'x' }, { headers: { 'idempotency-key': 'y' } })
  t.equal(mismatch.statusCode, 400)
  t.equal(mismatch.json().code, 'dedup_id_mismatch')

  const otherOrg = await sendEvent(app, other, { type: 'order.created', payload: {}, dedup_id: dedupId })
  t.equal(otherOrg.statusCode, 201, 'dedup_ids are per organization')

  const stored = await app.inject({ method: 'GET', url: `/api/events/${first.json().event_id}`, headers: organization.headers })
  t.same(stored.json().payload, { n: 1 }, 'the duplicate did not overwrite the original')
})

t.test('20 identical requests racing produce exactly one 201', async (t) => {
  for (let round = 0; round < 3; round++) {
    // A fresh app per round so the dedup cache is cold and every request reaches the database.
    const app = await buildTestApp(t)
    const organization = await createOrganization(app)
    const body = { type: 'race', payload: { round }, dedup_id: `race-${randomUUID()}` }
    const responses = await Promise.all(Array.from({ length: 20 }, () => sendEvent(app, organization, body)))
    const created = responses.filter((response) => response.statusCode === 201)
    t.equal(created.length, 1, 'one request created the event')
    t.equal(responses.filter((response) => response.statusCode === 200).length, 19, 'the rest are duplicates')
    t.equal(new Set(responses.map((response) => response.json().event_id)).size, 1, 'all name the same event')
    const rows = await app.pg.query('SELECT count(*)::int AS n FROM events WHERE organization_id = $1', [organization.id])
    t.equal(rows.rows[0].n, 1)
  }
})

t.test('GET /api/events/:id is scoped to the organization', async (t) => {
  const app = await buildTestApp(t)
  const owner = await createOrganization(app)
  const stranger = await createOrganization(app)
  const { event_id: eventId } = (await sendEvent(app, owner, { type: 'private', payload: { secret: 1 } })).json()

  const foreign = await app.inject({ method: 'GET', url: `/api/events/${eventId}`, headers: stranger.headers })
  t.equal(foreign.statusCode, 404)
  t.equal(foreign.json().code, 'not_found')
  const unknown = await app.inject({ method: 'GET', url: `/api/events/${randomUUID()}`, headers: owner.headers })
  t.equal(unknown.statusCode, 404)
  const malformed = await app.inject({ method: 'GET', url: '/api/events/not-a-uuid', headers: owner.headers })
  t.equal(malformed.statusCode, 400)
  t.equal(malformed.json().code, 'validation_failed')
})

t.test('batches accept good items, report duplicates and reject bad ones alone', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const existing = `existing-${randomUUID()}`
  const original = await sendEvent(app, organization, { type: 'seed', payload: {}, dedup_id: existing })
  const repeated = `repeated-${randomUUID()}`
  const response = await app.inject({
    method: 'POST',
    url: '/api/events/batch',
    headers: organization.headers,
    payload: {
      events: [
        { type: 'ok.one', payload: { i: 0 } },
        { type: 'bad type', payload: {} },
        { type: 'ok.dup', payload: {}, dedup_id: existing },
        { type: 'ok.two', payload: { i: 3 }, dedup_id: repeated },
        { type: 'ok.two', payload: { i: 4 }, dedup_id: repeated },
        { type: 'nul', payload: { t: '\u0000' } },
        { type: 'surrogate', payload: { t: '\udc00' } },
        'not an object',
        { type: 'ok.three', payload: { i: 7 }, extra: true }
      ]
    }
  })
  t.equal(response.statusCode, 200)
  const body = response.json()
  t.equal(body.accepted, 2)
  t.equal(body.duplicates, 2)
  t.equal(body.rejected, 5)
  t.same(body.results.map((result: { status: string }) => result.status),
    ['accepted', 'rejected', 'duplicate', 'accepted', 'duplicate', 'rejected', 'rejected', 'rejected', 'rejected'])
  t.same(body.results.map((result: { index: number }) => result.index), [0, 1, 2, 3, 4, 5, 6, 7, 8])
  t.equal(body.results[2].event_id, original.json().event_id)
  t.equal(body.results[4].event_id, body.results[3].event_id, 'a dedup_id repeated inside the batch is a duplicate of the first')
  for (const index of [1, 5, 6, 7, 8]) t.type(body.results[index].error, 'string')

  const stored = await app.pg.query('SELECT count(*)::int AS n FROM events WHERE organization_id = $1', [organization.id])
  t.equal(stored.rows[0].n, 3)
})

t.test('batch size is limited to 1..100', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const event = { type: 'x', payload: {} }
  for (const size of [0, 101]) {
    const response = await app.inject({
      method: 'POST', url: '/api/events/batch', headers: organization.headers, payload: { events: Array(size).fill(event) }
    })
    t.equal(response.statusCode, 400, `${size} items`)
    t.equal(response.json().code, 'validation_failed')
  }
  const full = await app.inject({ method: 'POST', url: '/api/events/batch', headers: organization.headers, payload: { events: Array(100).fill(event) } })
  t.equal(full.statusCode, 200)
  t.equal(full.json().accepted, 100)
})
