import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { LRUCache } from 'lru-cache'
import { createHash, timingSafeEqual } from 'node:crypto'
import { findOrganizationByKeyHash, type Organization } from '../db/organizations.js'
import { hashApiKey } from '../lib/api-keys.js'
import { apiError } from '../lib/api-error.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The organization of a valid API key, resolved before rate limiting; null without one. */
    organization: Organization | null
    /** Whether the request carried a key at all (to tell missing from invalid). */
    apiKeyPresented: boolean
  }
  interface FastifyInstance {
    /** preValidation hook for routes that need an API key. */
    requireOrganization: (request: FastifyRequest) => Promise<void>
    /** preValidation hook for admin-only routes; open when ADMIN_TOKEN is unset. */
    requireAdminToken: (request: FastifyRequest) => Promise<void>
    /** Drops an organization from this process's key cache (other processes hear it through NOTIFY). */
    forgetOrganization: (organizationId: string) => void
  }
}

const BEARER = /^Bearer\s+(\S+)\s*$/i

function presentedKey (request: FastifyRequest): string | undefined {
  const header = request.headers['x-api-key']
  if (typeof header === 'string' && header !== '') return header.trim()
  return BEARER.exec(request.headers.authorization ?? '')?.[1]
}

// Comparing digests keeps the comparison constant-time without revealing the token's length.
function sameSecret (given: string, expected: string): boolean {
  const digest = (text: string) => createHash('sha256').update(text).digest()
  return timingSafeEqual(digest(given), digest(expected))
}

/** Returns the authenticated organization; the route's preValidation hook guarantees there is one. */
export function organizationOf (request: FastifyRequest): Organization {
  if (!request.organization) throw apiError('unauthorized', 'missing_api_key', 'An API key is required')
  return request.organization
}

/** Migration 004's trigger notifies this channel with the id of every updated or deleted organization. */
const ORGANIZATIONS_CHANNEL = 'triggers_organizations'

/**
 * Organizations by key hash, so a keyed request costs no database round trip. Entries are trusted only while
 * the notification listener is connected (it hears every rotation, tier change and deletion, from any
 * instance); the TTL bounds staleness should a notification still be missed. Unknown keys are not cached:
 * a flood of bad keys must not evict good ones, and it is rate limited per IP anyway.
 */
function createKeyCache (fastify: FastifyInstance) {
  const { API_KEY_CACHE_SIZE: max, API_KEY_CACHE_TTL_SECONDS: ttlSeconds } = fastify.config
  const cache = ttlSeconds === 0 ? undefined : new LRUCache<string, Organization>({ max, ttl: ttlSeconds * 1000 })
  const forget = (organizationId: string) => {
    if (!cache) return
    const hashes = [...cache.entries()].flatMap(([hash, organization]) => organization.id === organizationId ? [hash] : [])
    for (const hash of hashes) cache.delete(hash)
  }
  fastify.notifications.listen(ORGANIZATIONS_CHANNEL, forget)
  fastify.notifications.onConnect(() => cache?.clear())

  const lookup = async (key: string): Promise<Organization | undefined> => {
    const hash = hashApiKey(key)
    const cacheKey = hash.toString('base64')
    const usable = cache !== undefined && fastify.notifications.connected
    const cached = usable ? cache.get(cacheKey) : undefined
    if (cached) return cached
    const organization = await findOrganizationByKeyHash(fastify.pg, hash)
    if (organization && usable) cache.set(cacheKey, organization)
    return organization
  }
  return { lookup, forget }
}

/**
 * Resolves the API key in onRequest, before the rate limiter runs, so limits apply per organization and
 * requests with a bad key are limited per IP. Rejection happens later, in each protected route's preValidation.
 */
export default fp(async (fastify) => {
  fastify.decorateRequest('organization', null)
  fastify.decorateRequest('apiKeyPresented', false)
  const keys = createKeyCache(fastify)
  fastify.decorate('forgetOrganization', keys.forget)

  fastify.addHook('onRequest', async (request) => {
    // Unmetered routes (health, OpenAPI) never need the organization; skipping the lookup keeps /health
    // independent of the database even when a client sends its key everywhere.
    if (request.routeOptions.config.rateLimit === false) return
    const key = presentedKey(request)
    if (key === undefined) return
    request.apiKeyPresented = true
    request.organization = await keys.lookup(key) ?? null
  })

  fastify.decorate('requireOrganization', async (request: FastifyRequest) => {
    if (request.organization) return
    throw request.apiKeyPresented
      ? apiError('unauthorized', 'invalid_api_key', 'The API key is not valid (it may have been rotated)')
      : apiError('unauthorized', 'missing_api_key', 'Send your API key in the X-API-Key header or as Authorization: Bearer <key>')
  })

  fastify.decorate('requireAdminToken', async (request: FastifyRequest) => {
    const expected = fastify.config.ADMIN_TOKEN
    if (expected === undefined) return
    const given = request.headers['x-admin-token']
    if (typeof given !== 'string' || !sameSecret(given, expected)) {
      throw apiError('unauthorized', 'invalid_admin_token', 'This server requires a valid X-Admin-Token header to create API keys')
    }
  })
}, { name: 'auth', dependencies: ['db', 'config', 'notifications'] })
