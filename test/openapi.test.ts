import t from 'tap'
import { buildTestApp } from './helpers.js'

const ROUTES: Array<[string, string]> = [
  ['get', '/health'], ['get', '/health/ready'], ['get', '/stats/cache'], ['get', '/stats/ingest'],
  ['post', '/api/keys/generate'], ['get', '/api/keys'], ['post', '/api/keys/rotate'],
  ['post', '/api/events'], ['post', '/api/events/batch'], ['get', '/api/events/{id}'],
  ['get', '/api/inbox'], ['post', '/api/events/{id}/ack'], ['post', '/api/ack/{id}'], ['post', '/api/ack'],
  ['post', '/api/inbox/lease'], ['post', '/api/inbox/ack'], ['post', '/api/inbox/release'], ['post', '/api/inbox/extend'],
  ['get', '/api/inbox/stream'], ['post', '/api/inbox/quarantine/{id}/requeue'],
  ['post', '/api/webhooks'], ['get', '/api/webhooks'], ['get', '/api/webhooks/{id}'], ['patch', '/api/webhooks/{id}'],
  ['post', '/api/webhooks/{id}/rotate-secret'], ['get', '/api/webhooks/{id}/deliveries'], ['post', '/api/webhooks/{id}/test'],
  ['post', '/api/events/{id}/redeliver']
]

interface Operation {
  requestBody?: { content: Record<string, { schema: object }> }
  responses: Record<string, { content?: Record<string, { schema: { properties?: Record<string, unknown> } }> }>
  security?: unknown[]
}

t.test('/openapi.json describes every route with its schemas and the error shape', async (t) => {
  const app = await buildTestApp(t)
  const response = await app.inject({ method: 'GET', url: '/openapi.json' })
  t.equal(response.statusCode, 200)
  const document = response.json<{ openapi: string, paths: Record<string, Record<string, Operation>> }>()
  t.match(document.openapi, /^3\./)
  for (const [method, path] of ROUTES) {
    const operation = document.paths[path]?.[method]
    if (!operation) {
      t.fail(`${method.toUpperCase()} ${path} is missing`)
      continue
    }
    const success = Object.keys(operation.responses).find((status) => status.startsWith('2'))
    t.ok(success && operation.responses[success]?.content, `${method} ${path} has a success schema`)
    if (path.startsWith('/api/')) {
      const error = operation.responses['429']?.content?.['application/json']?.schema
      t.same(Object.keys(error?.properties ?? {}).sort(), ['code', 'error', 'message', 'statusCode'], `${method} ${path} documents the error body`)
    }
    if (path.startsWith('/api/') && path !== '/api/keys/generate') t.ok(operation.security?.length, `${method} ${path} needs a key`)
  }
  t.ok(document.paths['/api/events']?.post?.requestBody?.content['application/json'], 'request bodies are documented')
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
  const { createOrganization, sendEvent } = await import('./helpers.js')
  const organization = await createOrganization(app)
  const body = { type: 'cache', payload: {}, dedup_id: 'cache-check' }
  await sendEvent(app, organization, body)
  await sendEvent(app, organization, body)
  const stats = (await app.inject({ method: 'GET', url: '/stats/cache' })).json()
  t.same(stats, { size: 1, max_size: 1234, hits: 1, misses: 1 })
})
