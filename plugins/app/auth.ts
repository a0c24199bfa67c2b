import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import type { Organization, WorkingKeys } from '../../db/organizations.js'
import { apiError } from '../../lib/api-error.js'
import { hashApiKey, presentedApiKey } from '../../lib/api-keys.js'
import { createKeyCache } from '../../lib/key-cache.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The organization of a valid API key, resolved before rate limiting; null without one. */
    organization: Organization | null
    /** Whether the request carried a key at all (to tell missing from invalid). */
    apiKeyPresented: boolean
  }
  interface FastifyInstance {
    /** onRequest hook for routes that take an API key: resolves it (memory first) into request.organization. */
    resolveOrganization: (request: FastifyRequest) => Promise<void>
    /** onRequest hook for routes that need an API key, run after the rate limiter has counted the request. */
    requireOrganization: (request: FastifyRequest) => Promise<void>
    /** Keys this process issued (generate, rotate): valid at once here; other processes hear of them through NOTIFY. */
    keysIssued: (keys: WorkingKeys) => void
  }
}

/** Returns the authenticated organization; the route's onRequest hook guarantees there is one. */
export function organizationOf (request: FastifyRequest): Organization {
  if (!request.organization) throw apiError('unauthorized', 'missing_api_key', 'An API key is required')
  return request.organization
}

/**
 * API keys (lib/key-cache.ts), resolved before the rate limiter runs, so limits apply per organization and
 * requests with a bad key are limited per address. A key that memory cannot answer is looked up only while the
 * client's address has budget left, so bad keys cost at most one query each within RATE_LIMIT_ANONYMOUS; a key
 * among the valid ones (lib/key-cache.ts) is looked up regardless, so a client whose address spent its budget on
 * bad keys (its own old key after a rotation, or a stranger behind the same NAT) is not locked out.
 * Rejection follows the rate limiter's count, still before the body is read (routes/api/hooks.ts).
 */
export default fp(async (fastify) => {
  fastify.decorateRequest('organization', null)
  fastify.decorateRequest('apiKeyPresented', false)
  const keys = createKeyCache(fastify.pg, fastify.wakeUps, fastify.config, fastify.log)
  fastify.decorate('keysIssued', keys.issued)

  fastify.decorate('resolveOrganization', async (request: FastifyRequest) => {
    // An unknown route answers 404 whatever the key: looking it up would only cost a query.
    if (request.is404) return
    const key = presentedApiKey(request.headers)
    if (key === undefined) return
    request.apiKeyPresented = true
    const hash = hashApiKey(key)
    const cacheKey = hash.toString('base64')
    const remembered = keys.remembered(cacheKey)
    if (remembered !== undefined) {
      request.organization = remembered
      return
    }
    // The budget protects lookups from guessing: a key known to be valid is looked up whatever its address spent.
    if (!keys.isValid(cacheKey)) await fastify.refuseSpentAddress(request)
    request.organization = await keys.lookup(hash, cacheKey) ?? null
  })

  fastify.decorate('requireOrganization', async (request: FastifyRequest) => {
    if (request.organization) return
    throw request.apiKeyPresented
      ? apiError('unauthorized', 'invalid_api_key', 'The API key is not valid (it may have been rotated)')
      : apiError('unauthorized', 'missing_api_key', 'Send your API key in the X-API-Key header or as Authorization: Bearer <key>')
  })
}, { name: 'auth', dependencies: ['postgres', 'config', 'wake-ups', 'rate-limit'] })
