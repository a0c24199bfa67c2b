import fp from 'fastify-plugin'
import rateLimit, { normalizeIP } from '@fastify/rate-limit'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { Redis } from 'ioredis'
import { apiError } from '../../lib/api-error.js'
import { ANONYMOUS_TIER } from '../../lib/metrics.js'
import type { Config } from '../../lib/config.js'
import type { Tier } from '../../schemas/keys.js'
import { errorBody } from '../app/errors.js'

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Throws 429 when the client's address has spent its RATE_LIMIT_ANONYMOUS budget, without counting this
     * request (the limiter counts it later); for work that must not be done for a client already over budget.
     */
    refuseSpentAddress: (request: FastifyRequest) => Promise<void>
  }
}

const ONE_MINUTE_MS = 60_000

/** Requests per minute for a tier; null when the tier is unlimited (configured as 0). */
export function tierLimit (config: Config, tier: Tier): number | null {
  const limits: Record<Tier, number> = {
    free: config.RATE_LIMIT_FREE,
    starter: config.RATE_LIMIT_STARTER,
    professional: config.RATE_LIMIT_PROFESSIONAL,
    enterprise: config.RATE_LIMIT_ENTERPRISE
  }
  return limits[tier] === 0 ? null : limits[tier]
}

function requestLimit (config: Config, request: FastifyRequest): number | null {
  if (request.organization) return tierLimit(config, request.organization.tier)
  return config.RATE_LIMIT_ANONYMOUS === 0 ? null : config.RATE_LIMIT_ANONYMOUS
}

/** Where a request without a valid key is counted: its address, IPv6 grouped by RATE_LIMIT_IPV6_PREFIX (one /64 is one subscriber). */
const addressKey = (config: Config, request: FastifyRequest) => `ip:${normalizeIP(request.ip, config.RATE_LIMIT_IPV6_PREFIX)}`

function tooManyRequests (max: number, retryAfterSeconds: number) {
  const seconds = String(retryAfterSeconds)
  return Object.assign(
    apiError('tooManyRequests', 'rate_limited', `Rate limit of ${max} requests per minute exceeded; retry in ${seconds} seconds`),
    { headers: { 'retry-after': seconds, 'x-ratelimit-limit': String(max), 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': seconds } })
}

/**
 * Per-address limiting outside the route hooks, on the same counters: a peek before a key lookup, and the
 * count of unknown routes (the 404 handler has no route of its own for the limiter to hook).
 */
function limitAddresses (fastify: FastifyInstance): void {
  const limiter = fastify.createRateLimit()
  const refuseOver = async (request: FastifyRequest, increment: boolean) => {
    const state = await limiter(request, { increment })
    if (state.isAllowed) return
    if (increment ? !state.isExceeded : state.remaining > 0) return
    fastify.metrics.countRateLimited(ANONYMOUS_TIER)
    throw tooManyRequests(state.max, state.ttlInSeconds)
  }
  fastify.decorate('refuseSpentAddress', (request: FastifyRequest) => refuseOver(request, false))
  fastify.addHook('onRequest', async (request) => {
    if (request.is404) await refuseOver(request, true)
  })
}

async function connectRedis (fastify: FastifyInstance, config: Config): Promise<Redis | undefined> {
  const redis = config.REDIS_URL === undefined
    ? undefined
    : new Redis(config.REDIS_URL, { connectTimeout: 1000, maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: true })
  if (redis) {
    redis.on('error', (error) => fastify.log.warn({ err: error }, 'redis error; rate limits are not enforced until it is back'))
    await redis.connect().catch((error: unknown) => {
      redis.disconnect()
      throw new Error(`Cannot reach Redis at REDIS_URL: ${error instanceof Error ? error.message : String(error)}`)
    })
    // quit() fails when Redis is unreachable; closing must still succeed, so fall back to dropping the socket.
    fastify.addHook('onClose', async () => { await redis.quit().catch(() => redis.disconnect()) })
  }
  return redis
}

/**
 * Per-organization limits by tier (per address without a valid key), in Redis when REDIS_URL is set so that all
 * instances share one budget. Registered before auth, which peeks at the address budget before looking a key
 * up. Routes opt out with `config: { rateLimit: false }`.
 */
export default fp(async (fastify) => {
  const { config } = fastify
  const redis = await connectRedis(fastify, config)
  await fastify.register(rateLimit, {
    global: true,
    timeWindow: ONE_MINUTE_MS,
    redis,
    nameSpace: config.REDIS_KEY_PREFIX,
    // An unreachable Redis must not take the API down with it.
    skipOnError: true,
    keyGenerator: (request) => request.organization ? `org:${request.organization.id}` : addressKey(config, request),
    allowList: (request) => requestLimit(config, request) === null,
    max: (request) => requestLimit(config, request) ?? Number.MAX_SAFE_INTEGER,
    onExceeded: (request) => { fastify.metrics.countRateLimited(request.organization?.tier ?? ANONYMOUS_TIER) },
    errorResponseBuilder: (_request, context) =>
      errorBody(429, 'rate_limited', `Rate limit of ${context.max} requests per minute exceeded; retry in ${context.after}`)
  })
  limitAddresses(fastify)
}, { name: 'rate-limit', dependencies: ['config', 'metrics'] })
