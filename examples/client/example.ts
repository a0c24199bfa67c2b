/**
 * A typed client of the Triggers API: openapi-fetch with the types that openapi-typescript generated from the
 * live document (examples/client/generate.sh). Paths, parameters, bodies and answers are all checked by tsc,
 * so a change to the API that breaks this client fails `.ci/openapi.sh`.
 *
 * Run against a server (after generate.sh):
 *   npx tsc -p examples/client && node examples/client/dist/example.js [BASE_URL]
 * ADMIN_TOKEN is sent as X-Admin-Token when set (servers that have one require it to create keys).
 */
import createClient from 'openapi-fetch'
import type { components, paths } from './schema.js'

type ApiError = components['schemas']['Error']

const baseUrl = process.argv[2] ?? 'http://127.0.0.1:3000'

/** Every error answer has the same body; the caller says what it was doing. */
function fail (doing: string, error: ApiError): never {
  throw new Error(`${doing}: ${error.statusCode} ${error.code}: ${error.message}`)
}

// A key for a new organization. The route takes no API key; X-Admin-Token is its optional security scheme.
const keyless = createClient<paths>({ baseUrl })
const adminToken = process.env.ADMIN_TOKEN
const created = await keyless.POST('/api/keys/generate', {
  body: { organization_name: 'typed-client-example' },
  headers: adminToken === undefined ? {} : { 'X-Admin-Token': adminToken }
})
if (created.error) fail('creating a key', created.error)
const { api_key: apiKey, organization_id: organizationId, tier } = created.data
console.log(`organization ${organizationId} (${tier})`)

// Every other call carries the key.
const api = createClient<paths>({ baseUrl, headers: { 'X-API-Key': apiKey } })

// Send an event; the Idempotency-Key header is a typed parameter. 201 carries Location, a duplicate answers 200.
const sent = await api.POST('/api/events', {
  params: { header: { 'idempotency-key': 'example-order-42' } },
  body: { type: 'order.created', payload: { order_id: 42, total: 99.5 }, source: 'typed-client' }
})
if (sent.error) fail('sending an event', sent.error)
console.log(`event ${sent.data.event_id} ${sent.data.status} (Location: ${sent.response.headers.get('location') ?? 'none'})`)

// List pending events: `limit` and `status` have defaults, so they may be left out.
const inbox = await api.GET('/api/inbox', { params: { query: { type: 'order.created' } } })
if (inbox.error) fail('listing the inbox', inbox.error)
const pending = inbox.data.events
console.log(`${inbox.data.count} pending: ${pending.map((event) => `${event.type} ${event.event_id}`).join(', ')}`)

// Acknowledge them all at once; unknown ids would come back in not_found.
const acknowledged = await api.POST('/api/ack', { body: { event_ids: pending.map((event) => event.event_id) } })
if (acknowledged.error) fail('acknowledging', acknowledged.error)
console.log(`acknowledged ${acknowledged.data.acknowledged.length}, not found ${acknowledged.data.not_found.length}`)

// The typed path parameter: the event is now acknowledged.
const event = await api.GET('/api/events/{id}', { params: { path: { id: sent.data.event_id } } })
if (event.error) fail('reading the event', event.error)
console.log(`event ${event.data.event_id} is ${event.data.status} since ${event.data.acknowledged_at ?? 'never'}`)
if (event.data.status !== 'acknowledged') throw new Error(`expected the event to be acknowledged, not ${event.data.status}`)

// A lease body leaves out what has a default (limit, lease_seconds, wait_seconds): nothing is left to lease now.
const lease = await api.POST('/api/inbox/lease', { body: { type: 'order.created' } })
if (lease.error) fail('leasing', lease.error)
console.log(`leased ${lease.data.events.length} events (lease ${lease.data.lease_id ?? 'none'})`)
