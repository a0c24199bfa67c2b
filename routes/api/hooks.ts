import type { FastifyInstance, FastifyRequest } from 'fastify'

/**
 * The /api routes that take no API key, each guarded some other way. Every other /api route needs a valid key:
 * this list is the whole exception.
 */
export const OPEN_ROUTES: ReadonlySet<string> = new Set([
  // Creates the first key: ADMIN_TOKEN (plugins/app/operator-tokens.ts) when set.
  'POST /api/keys/generate'
])

const isOpen = (method: string, url: string | undefined) => url !== undefined && OPEN_ROUTES.has(`${method} ${url}`)

/**
 * The /api auth boundary: each keyed route's key is resolved in onRequest, before the rate limiter's route hooks
 * count the request (so limits apply per organization), and required in preValidation; the OpenAPI document
 * says so. Open routes skip both.
 */
export function guardApi (api: FastifyInstance): void {
  api.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method]
    if (methods.some((method) => isOpen(method, route.url))) return
    route.schema = { ...route.schema, security: [{ apiKey: [] }, { bearer: [] }] }
  })
  const keyed = (request: FastifyRequest) => !isOpen(request.method, request.routeOptions.url)
  api.addHook('onRequest', async (request) => {
    if (keyed(request)) await api.resolveOrganization(request)
  })
  api.addHook('preValidation', async (request) => {
    if (keyed(request)) await api.requireOrganization(request)
  })
}
