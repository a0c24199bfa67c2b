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

type OnRequestHook = (request: FastifyRequest) => Promise<void>

/** Adds `hook` after the route's own onRequest hooks, the rate limiter's among them (it adds its own in onRoute too). */
function appendOnRequest (route: { onRequest?: unknown }, hook: OnRequestHook): void {
  const existing = route.onRequest
  route.onRequest = Array.isArray(existing) ? [...existing, hook] : existing === undefined ? [hook] : [existing, hook]
}

/**
 * The /api auth boundary: each keyed route's key is resolved in onRequest, before the rate limiter's route hooks
 * count the request (so limits apply per organization), and required right after them, still in onRequest: a
 * request without a valid key is refused before its body is read (app.ts closes the connection of an answer
 * sent before the body has arrived), after it has been counted against its address. The OpenAPI document says
 * so. Open routes skip both.
 */
export function guardApi (api: FastifyInstance): void {
  const requireOrganization: OnRequestHook = async (request) => { await api.requireOrganization(request) }
  api.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method]
    if (methods.some((method) => isOpen(method, route.url))) return
    route.schema = { ...route.schema, security: [{ apiKey: [] }, { bearer: [] }] }
    appendOnRequest(route, requireOrganization)
  })
  api.addHook('onRequest', async (request) => {
    if (!isOpen(request.method, request.routeOptions.url)) await api.resolveOrganization(request)
  })
}
