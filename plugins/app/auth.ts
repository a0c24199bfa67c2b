import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { HttpError } from '@fastify/sensible'
import { LRUCache } from 'lru-cache'
import { findOrganizationByKeyHash, type Organization } from '../../db/organizations.js'
import { hashApiKey } from '../../lib/api-keys.js'
import { apiError } from '../../lib/api-error.js'
import { bearerTokenOf, tokenAccepted } from '../../lib/tokens.js'

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
    /** preValidation hook for routes that need an API key. */
    requireOrganization: (request: FastifyRequest) => Promise<void>
    /** preValidation hook for admin-only routes; open when ADMIN_TOKEN is unset. */
    requireAdminToken: (request: FastifyRequest) => Promise<void>
    /** preValidation hook for /stats/*; open when STATS_TOKEN is unset. */
    requireStatsToken: (request: FastifyRequest) => Promise<void>
    /** preValidation hook for /metrics; open when METRICS_TOKEN is unset. */
    requireMetricsToken: (request: FastifyRequest) => Promise<void>
    /** Drops an organization from this process's key cache (other processes hear it through NOTIFY). */
    forgetOrganization: (organizationId: string) => void
  }
}

const bearerToken = (request: FastifyRequest) => bearerTokenOf(request.headers.authorization)

function presentedKey (request: FastifyRequest): string | undefined {
  const header = request.headers['x-api-key']
  if (typeof header === 'string' && header !== '') return header.trim()
  return bearerToken(request)
}

/** A preValidation hook that requires `expected` (when configured) as read by `given`. */
function requireToken (expected: string | undefined, given: (request: FastifyRequest) => unknown, refusal: () => HttpError) {
  return async (request: FastifyRequest): Promise<void> => {
    if (!tokenAccepted(expected, given(request))) throw refusal()
  }
}

/** Returns the authenticated organization; the route's preValidation hook guarantees there is one. */
export function organizationOf (request: FastifyRequest): Organization {
  if (!request.organization) throw apiError('unauthorized', 'missing_api_key', 'An API key is required')
  return request.organization
}

/** Migration 004's trigger notifies this channel with the id of every updated or deleted organization. */
const ORGANIZATIONS_CHANNEL = 'triggers_organizations'

/**
 * Orders lookups against invalidations, so a lookup that read an organization before it changed (a rotation
 * committing while the lookup was in flight) never caches what it read. Each invalidation advances the clock;
 * a lookup notes the time it started and may cache only if its organization, and the cache as a whole, were
 * not invalidated since. Per-organization times are kept only while lookups are in flight.
 */
function createInvalidationClock () {
  let now = 0
  let clearedAt = 0
  let inFlight = 0
  const changedAt = new Map<string, number>()
  return {
    start: (): number => { inFlight++; return now },
    finish: (): void => { if (--inFlight === 0) changedAt.clear() },
    /** Nothing invalidated the organization (or everything) after `started`. */
    unchangedSince: (started: number, organizationId: string): boolean =>
      clearedAt <= started && (changedAt.get(organizationId) ?? 0) <= started,
    /** Nothing at all was invalidated after `started`. */
    quietSince: (started: number): boolean => now === started,
    changed: (organizationId: string): void => { changedAt.set(organizationId, ++now) },
    clearedAll: (): void => { clearedAt = ++now; changedAt.clear() }
  }
}

/**
 * Organizations by key hash, so a keyed request costs no database round trip. Entries are trusted only while
 * the notification listener is connected (it hears every rotation, tier change and deletion, from any
 * instance); the TTL bounds staleness should a notification still be missed. Unknown keys are remembered for a
 * few seconds in a cache of their own (a flood of bad keys evicts only other bad keys), so repeating one costs
 * no query either.
 */
function createKeyCache (fastify: FastifyInstance) {
  const { API_KEY_CACHE_SIZE: max, API_KEY_CACHE_TTL_SECONDS: ttlSeconds, API_KEY_NEGATIVE_CACHE_SECONDS: unknownSeconds } = fastify.config
  const known = ttlSeconds === 0 ? undefined : new LRUCache<string, Organization>({ max, ttl: ttlSeconds * 1000 })
  const unknown = unknownSeconds === 0 ? undefined : new LRUCache<string, true>({ max, ttl: unknownSeconds * 1000 })
  const clock = createInvalidationClock()
  const forget = (organizationId: string) => {
    clock.changed(organizationId)
    if (!known) return
    const hashes = [...known.entries()].flatMap(([hash, organization]) => organization.id === organizationId ? [hash] : [])
    for (const hash of hashes) known.delete(hash)
  }
  fastify.notifications.listen(ORGANIZATIONS_CHANNEL, forget)
  fastify.notifications.onConnect(() => {
    clock.clearedAll()
    known?.clear()
  })

  /** The organization (or null for a key known to be unknown) from memory; undefined when only the database can tell. */
  const remembered = (cacheKey: string): Organization | null | undefined => {
    const organization = fastify.notifications.connected ? known?.get(cacheKey) : undefined
    if (organization) return organization
    return unknown?.has(cacheKey) === true ? null : undefined
  }

  const lookup = async (hash: Buffer, cacheKey: string): Promise<Organization | undefined> => {
    const started = clock.start()
    try {
      const organization = await findOrganizationByKeyHash(fastify.pg, hash)
      if (!organization) {
        if (clock.quietSince(started)) unknown?.set(cacheKey, true)
      } else if (fastify.notifications.connected && clock.unchangedSince(started, organization.id)) {
        known?.set(cacheKey, organization)
      }
      return organization
    } finally {
      clock.finish()
    }
  }
  return { remembered, lookup, forget }
}

/**
 * Resolves API keys before the rate limiter runs, so limits apply per organization and requests with a bad key
 * are limited per IP. A key that memory cannot answer is looked up only while the client's address has budget
 * left, so bad keys cost at most one query each within RATE_LIMIT_ANONYMOUS. Rejection happens later, in each
 * protected route's preValidation.
 */
export default fp(async (fastify) => {
  fastify.decorateRequest('organization', null)
  fastify.decorateRequest('apiKeyPresented', false)
  const keys = createKeyCache(fastify)
  fastify.decorate('forgetOrganization', keys.forget)

  fastify.decorate('resolveOrganization', async (request: FastifyRequest) => {
    // An unknown route answers 404 whatever the key: looking it up would only cost a query.
    if (request.is404) return
    const key = presentedKey(request)
    if (key === undefined) return
    request.apiKeyPresented = true
    const hash = hashApiKey(key)
    const cacheKey = hash.toString('base64')
    const remembered = keys.remembered(cacheKey)
    if (remembered !== undefined) {
      request.organization = remembered
      return
    }
    await fastify.refuseSpentAddress(request)
    request.organization = await keys.lookup(hash, cacheKey) ?? null
  })

  fastify.decorate('requireOrganization', async (request: FastifyRequest) => {
    if (request.organization) return
    throw request.apiKeyPresented
      ? apiError('unauthorized', 'invalid_api_key', 'The API key is not valid (it may have been rotated)')
      : apiError('unauthorized', 'missing_api_key', 'Send your API key in the X-API-Key header or as Authorization: Bearer <key>')
  })

  fastify.decorate('requireAdminToken', requireToken(fastify.config.ADMIN_TOKEN, (request) => request.headers['x-admin-token'], () =>
    apiError('unauthorized', 'invalid_admin_token', 'This server requires a valid X-Admin-Token header to create API keys')))

  fastify.decorate('requireStatsToken', requireToken(fastify.config.STATS_TOKEN, bearerToken, () =>
    apiError('unauthorized', 'invalid_stats_token', 'This server requires Authorization: Bearer <STATS_TOKEN> for its statistics')))

  fastify.decorate('requireMetricsToken', requireToken(fastify.config.METRICS_TOKEN, bearerToken, () =>
    apiError('unauthorized', 'invalid_metrics_token', 'This server requires Authorization: Bearer <METRICS_TOKEN> for its metrics')))
}, { name: 'auth', dependencies: ['db', 'config', 'notifications', 'rate-limit'] })
