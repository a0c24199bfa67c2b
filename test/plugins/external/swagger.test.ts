import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { randomUUID } from 'node:crypto'
import { buildTestApp, createOrganization, sendEvent, TEST_ADMIN_TOKEN } from '../../support/helpers.js'

/** Every operation with its operationId: clients generated from the document name their methods after these. */
const OPERATIONS: Array<[string, string, string]> = [
  ['get', '/health', 'getHealth'], ['get', '/health/ready', 'getReadiness'],
  ['get', '/stats/cache', 'getCacheStats'], ['get', '/stats/ingest', 'getIngestStats'], ['get', '/metrics', 'getMetrics'],
  ['post', '/api/keys/generate', 'generateKey'], ['get', '/api/keys', 'getKey'], ['post', '/api/keys/rotate', 'rotateKey'],
  ['post', '/api/events', 'createEvent'], ['post', '/api/events/batch', 'createEventBatch'], ['get', '/api/events/{id}', 'getEvent'],
  ['get', '/api/inbox', 'listInbox'], ['post', '/api/events/{id}/ack', 'ackEvent'], ['post', '/api/ack/{id}', 'ackEventShort'],
  ['post', '/api/ack', 'ackEvents'], ['post', '/api/inbox/lease', 'leaseEvents'], ['post', '/api/inbox/ack', 'ackLease'],
  ['post', '/api/inbox/release', 'releaseLease'], ['post', '/api/inbox/extend', 'extendLease'],
  ['get', '/api/inbox/stream', 'streamInbox'], ['post', '/api/inbox/quarantine/{id}/requeue', 'requeueEvent'],
  ['post', '/api/webhooks', 'createWebhook'], ['get', '/api/webhooks', 'listWebhooks'], ['get', '/api/webhooks/{id}', 'getWebhook'],
  ['patch', '/api/webhooks/{id}', 'updateWebhook'], ['delete', '/api/webhooks/{id}', 'deleteWebhook'],
  ['post', '/api/webhooks/{id}/rotate-secret', 'rotateWebhookSecret'], ['get', '/api/webhooks/{id}/deliveries', 'listWebhookDeliveries'],
  ['post', '/api/webhooks/{id}/test', 'testWebhook'], ['post', '/api/events/{id}/redeliver', 'redeliverEvent']
]

/** Routes that take no API key, with the security requirements the document must give them. */
const KEYLESS: Record<string, unknown[]> = {
  '/health': [],
  '/health/ready': [],
  '/stats/cache': [{}, { statsToken: [] }],
  '/stats/ingest': [{}, { statsToken: [] }],
  '/metrics': [{}, { metricsToken: [] }],
  '/api/keys/generate': [{}, { adminToken: [] }]
}

const BODY_METHODS = new Set(['post', 'put', 'patch', 'delete'])

interface Media { schema?: { $ref?: string, type?: string } }
interface Answer { description: string, headers?: Record<string, unknown>, content?: Record<string, Media> }
interface Operation {
  operationId?: string
  security?: unknown[]
  requestBody?: { content: Record<string, Media> }
  responses: Record<string, Answer>
}
interface Document {
  openapi: string
  servers?: Array<{ url: string }>
  info: { license?: { name: string } }
  paths: Record<string, Record<string, Operation>>
  components: { schemas?: Record<string, unknown>, securitySchemes?: Record<string, unknown> }
}

async function fetchDocument (app: FastifyInstance): Promise<Document> {
  const response = await app.inject({ method: 'GET', url: '/openapi.json' })
  if (response.statusCode !== 200) throw new Error(`/openapi.json answered ${response.statusCode}`)
  return response.json<Document>()
}

function operationsOf (document: Document): Array<{ method: string, path: string, operation: Operation }> {
  return Object.entries(document.paths).flatMap(([path, item]) =>
    Object.entries(item).map(([method, operation]) => ({ method, path, operation })))
}

/** Every `$ref` anywhere in `node`, with where it was found. */
function collectRefs (node: unknown, at: string, found: Array<[string, string]>): Array<[string, string]> {
  if (Array.isArray(node)) node.forEach((item, index) => collectRefs(item, `${at}/${index}`, found))
  else if (typeof node === 'object' && node !== null) {
    for (const [key, value] of Object.entries(node)) {
      if (key === '$ref' && typeof value === 'string') found.push([at, value])
      else collectRefs(value, `${at}/${key}`, found)
    }
  }
  return found
}

function resolvePointer (document: unknown, ref: string): unknown {
  if (!ref.startsWith('#/')) return undefined
  return ref.slice(2).split('/').map((token) => token.replaceAll('~1', '/').replaceAll('~0', '~')).reduce<unknown>(
    (node, token) => typeof node === 'object' && node !== null ? (node as Record<string, unknown>)[token] : undefined, document)
}

/** A concrete URL for a documented path: each path parameter becomes a fresh UUID. */
const concreteUrl = (path: string) => path.replace(/\{[^}]+\}/g, () => randomUUID())

t.test('every operation is documented once, with its stable operationId, a summary and a tag', async (t) => {
  const app = await buildTestApp(t)
  const document = await fetchDocument(app)
  t.match(document.openapi, /^3\./)
  const operations = operationsOf(document)
  for (const [method, path, operationId] of OPERATIONS) {
    const operation = document.paths[path]?.[method]
    t.equal(operation?.operationId, operationId, `${method} ${path} is ${operationId}`)
  }
  const ids = operations.map(({ operation }) => operation.operationId)
  t.equal(new Set(ids).size, ids.length, 'operationIds are unique')
  for (const { method, path, operation } of operations) {
    t.match(operation.operationId, /^[a-z][A-Za-z]+$/, `${method} ${path}: camelCase operationId`)
    t.ok(operation.responses && Object.keys(operation.responses).some((status) => status.startsWith('2')), `${method} ${path}: a success answer`)
  }
  t.ok(document.servers?.length, 'servers is not empty')
  t.ok(document.info.license?.name, 'info.license names the license')
})

t.test('keyless routes say so with their own security; every other route needs the API key', async (t) => {
  const app = await buildTestApp(t)
  const document = await fetchDocument(app)
  const schemes = Object.keys(document.components.securitySchemes ?? {}).sort()
  t.same(schemes, ['adminToken', 'apiKey', 'bearer', 'metricsToken', 'statsToken'])
  for (const { method, path, operation } of operationsOf(document)) {
    const expected = KEYLESS[path] ?? [{ apiKey: [] }, { bearer: [] }]
    t.same(operation.security, expected, `${method} ${path}`)
  }
})

t.test('named schemas are in components.schemas and every $ref resolves', async (t) => {
  const app = await buildTestApp(t)
  const document = await fetchDocument(app)
  const names = Object.keys(document.components.schemas ?? {})
  for (const name of ['Error', 'Event', 'EventInput', 'InboxPage', 'Lease', 'LeasedEvent', 'ApiKey', 'Webhook', 'Delivery', 'DeliveryPage']) {
    t.ok(names.includes(name), `components.schemas.${name}`)
  }
  t.notOk(names.some((name) => /^def-\d+$/.test(name)), 'no anonymous def-N schema')
  const refs = collectRefs(document, '#', [])
  t.ok(refs.length > 50, 'schemas are referenced, not repeated inline')
  for (const [at, ref] of refs) t.ok(resolvePointer(document, ref), `${at}: ${ref} resolves`)
  t.equal(document.paths['/api/events']?.post?.requestBody?.content['application/json']?.schema?.$ref, '#/components/schemas/EventInput')
  t.equal(document.paths['/api/inbox']?.get?.responses['200']?.content?.['application/json']?.schema?.$ref, '#/components/schemas/InboxPage')
})

t.test('the answers and headers each route can give are documented', async (t) => {
  const app = await buildTestApp(t)
  const document = await fetchDocument(app)
  const headersOf = (operation: Operation, status: string) => Object.keys(operation.responses[status]?.headers ?? {})
  for (const { method, path, operation } of operationsOf(document)) {
    const label = `${method} ${path}`
    const statuses = Object.keys(operation.responses)
    for (const status of statuses.filter((code) => /^[45]/.test(code))) {
      const body = status === '503' && path === '/health/ready' ? 'NotReady' : 'Error'
      t.equal(operation.responses[status]?.content?.['application/json']?.schema?.$ref, `#/components/schemas/${body}`, `${label} ${status}: the error body`)
    }
    if (path === '/health') {
      t.same(statuses, ['200'], 'liveness answers 200 only (unmetered, no key, no database)')
      continue
    }
    if (path === '/metrics') {
      t.same(statuses, ['200', '401', '500'], 'metrics: unmetered, 401 without METRICS_TOKEN when one is set')
      t.same(Object.keys(operation.responses['200']?.content ?? {}), ['text/plain'])
      continue
    }
    t.ok(statuses.includes('429'), `${label}: 429`)
    t.ok(headersOf(operation, '429').includes('Retry-After'), `${label}: 429 with Retry-After`)
    const success = statuses.filter((status) => status.startsWith('2'))
    for (const status of success) t.ok(headersOf(operation, status).includes('X-RateLimit-Remaining'), `${label} ${status}: rate-limit headers`)
    if (path.startsWith('/api/') || path === '/health/ready') t.ok(statuses.includes('503'), `${label}: 503`)
    if (path.startsWith('/api/') || path.startsWith('/stats/')) t.ok(statuses.includes('401'), `${label}: 401`)
    if (BODY_METHODS.has(method)) {
      for (const status of ['400', '413', '415']) t.ok(statuses.includes(status), `${label}: ${status} (reads a body)`)
    }
  }
  // The two creations that answer with the new resource's URL (a new API key has none of its own).
  for (const path of ['/api/events', '/api/webhooks']) {
    t.ok(headersOf(document.paths[path]?.post as Operation, '201').includes('Location'), `${path}: 201 with Location`)
  }
  for (const path of ['/api/events', '/api/events/batch']) {
    t.ok(headersOf(document.paths[path]?.post as Operation, '503').includes('Retry-After'), `${path}: 503 overloaded with Retry-After`)
  }
  t.ok(document.paths['/api/webhooks']?.post?.responses['409'], 'webhook cap: 409')
  t.ok(document.paths['/api/keys/generate']?.post?.responses['403'], 'tier without admin token: 403')
})

t.test('what a request may leave out (a default fills it in) is optional, and enums say their type', async (t) => {
  const app = await buildTestApp(t)
  const document = await fetchDocument(app)
  const parameters = (document.paths['/api/inbox']?.get as Operation & { parameters: Array<{ name: string, required: boolean }> }).parameters
  t.same(parameters.filter((parameter) => parameter.required).map((parameter) => parameter.name), [], 'no query parameter of the inbox is required')
  const schemas = document.components.schemas as Record<string, { required?: string[], properties: Record<string, { enum?: unknown[], type?: string }> }>
  const leaseBody = (document.paths['/api/inbox/lease']?.post as Operation & { requestBody: { content: Record<string, { schema: { required?: string[], properties?: object, $ref?: string } }> } }).requestBody.content['application/json']?.schema
  t.equal(leaseBody?.$ref, undefined, 'a body with defaults is inline, where generators keep defaulted properties optional')
  t.ok(leaseBody?.properties, 'and its properties are there')
  t.same(leaseBody?.required, undefined, 'limit, lease_seconds and wait_seconds have defaults')
  const operations = Object.values(document.paths).flatMap((item) => Object.values(item ?? {})) as Array<{ requestBody?: { content?: Record<string, { schema?: { $ref?: string } }> } }>
  const namedBodies = operations.flatMap((operation) => {
    const ref = operation.requestBody?.content?.['application/json']?.schema?.$ref
    return ref === undefined ? [] : [ref.split('/').at(-1) ?? '']
  })
  const defaulted = namedBodies.filter((name) => Object.values(schemas[name]?.properties ?? {}).some((property) => 'default' in property))
  t.same(defaulted, [], 'no named request body has a property with a default')
  t.same(schemas.EventInput?.required, ['type', 'payload'])
  t.equal(schemas.Event?.properties.status?.type, 'string', 'a string enum has type string')
  t.same(schemas.Event?.properties.status?.enum, ['pending', 'acknowledged', 'quarantined'])
  // The validators still fill the defaults in: a lease without them gets 10 events for 300 s.
  const organization = await createOrganization(app)
  const lease = await app.inject({ method: 'POST', url: '/api/inbox/lease', headers: organization.headers, payload: {} })
  t.equal(lease.statusCode, 200)
})

t.test('the event stream is documented as text/event-stream, its errors as JSON', async (t) => {
  const app = await buildTestApp(t)
  const document = await fetchDocument(app)
  const stream = document.paths['/api/inbox/stream']?.get
  t.same(Object.keys(stream?.responses['200']?.content ?? {}), ['text/event-stream'])
  t.equal(stream?.responses['200']?.content?.['text/event-stream']?.schema?.type, 'string')
  t.ok(stream?.responses['401']?.content?.['application/json'])
  t.ok(stream?.responses['429']?.content?.['application/json'], 'too many open streams')
})

t.test('what routes answer to a wrong body, no key and a spent budget is what the document lists', async (t) => {
  const app = await buildTestApp(t)
  const document = await fetchDocument(app)
  // Unmetered and keyless: liveness and metrics answer whatever the budget.
  const operations = operationsOf(document).filter(({ path }) => path !== '/health' && path !== '/metrics')
  const documents = (operation: Operation, status: number) => Object.hasOwn(operation.responses, String(status))
  // Keyed routes refuse a request without a key before its body is read, and key generation one without the
  // admin token: bodies are judged with both.
  const keyHeaders = { ...(await createOrganization(app)).headers, 'x-admin-token': TEST_ADMIN_TOKEN }
  for (const { method, path, operation } of operations) {
    const url = concreteUrl(path)
    const verb = method.toUpperCase() as 'GET' | 'POST' | 'PATCH' | 'DELETE'
    if (BODY_METHODS.has(method)) {
      const wrongType = await app.inject({ method: verb, url, headers: { ...keyHeaders, 'content-type': 'text/plain' }, payload: 'hello' })
      t.equal(wrongType.statusCode, 415, `${method} ${path}: a text/plain body`)
      t.ok(documents(operation, 415), `${method} ${path}: 415 documented`)
      const tooLarge = await app.inject({ method: verb, url, headers: { ...keyHeaders, 'content-type': 'application/json' }, payload: JSON.stringify({ pad: 'x'.repeat(300 * 1024) }) })
      t.equal(tooLarge.statusCode, 413, `${method} ${path}: a 300 KiB body`)
      t.ok(documents(operation, 413), `${method} ${path}: 413 documented`)
    }
    if (path.startsWith('/api/') && path !== '/api/keys/generate') {
      const noKey = await app.inject({ method: verb, url, ...(BODY_METHODS.has(method) ? { payload: {} } : {}) })
      t.equal(noKey.statusCode, 401, `${method} ${path}: no key`)
      t.ok(documents(operation, 401), `${method} ${path}: 401 documented`)
    }
  }
  // An address with a budget of one request, spent: every metered route refuses with Retry-After, as documented.
  const limited = await buildTestApp(t, { RATE_LIMIT_ANONYMOUS: '1' })
  t.equal((await limited.inject({ method: 'GET', url: '/stats/cache' })).statusCode, 200, 'the one request allowed')
  for (const { method, path, operation } of operations) {
    const answer = await limited.inject({ method: method.toUpperCase() as 'GET', url: concreteUrl(path) })
    t.equal(answer.statusCode, 429, `${method} ${path}: over budget`)
    t.ok(answer.headers['retry-after'], `${method} ${path}: Retry-After sent`)
    t.ok(documents(operation, 429), `${method} ${path}: 429 documented`)
  }
  t.equal((await limited.inject({ method: 'GET', url: '/health' })).statusCode, 200, 'liveness is unmetered')
})

t.test('a created event answers 201 with the documented Location and rate-limit headers', async (t) => {
  const app = await buildTestApp(t, { RATE_LIMIT_FREE: '100' })
  const organization = await createOrganization(app)
  const created = await sendEvent(app, organization, { type: 'openapi.location', payload: {} })
  t.equal(created.statusCode, 201)
  t.equal(created.headers.location, `/api/events/${created.json<{ event_id: string }>().event_id}`)
  t.equal(created.headers['x-ratelimit-limit'], '100')
  t.ok(created.headers['x-ratelimit-remaining'])
  const fetched = await app.inject({ method: 'GET', url: created.headers.location as string, headers: organization.headers })
  t.equal(fetched.statusCode, 200, 'Location leads to the event')
})

t.test('/docs serves Swagger UI', async (t) => {
  const app = await buildTestApp(t)
  const response = await app.inject({ method: 'GET', url: '/docs/' })
  t.equal(response.statusCode, 200)
  t.match(response.headers['content-type'], /text\/html/)
  t.match(response.body, /swagger/i)
})

t.test('/stats/cache reports dedup cache hits and misses', async (t) => {
  const app = await buildTestApp(t, { DEDUP_CACHE_SIZE: '1234' })
  const organization = await createOrganization(app)
  const body = { type: 'cache', payload: {}, dedup_id: 'cache-check' }
  await sendEvent(app, organization, body)
  await sendEvent(app, organization, body)
  const stats = (await app.inject({ method: 'GET', url: '/stats/cache' })).json()
  t.same(stats, { size: 1, max_size: 1234, hits: 1, misses: 1 })
})
