import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { errorBody } from '../../lib/api-error.js'
import { ANONYMOUS_TIER } from '../../lib/metrics.js'
import { rateLimitKey, requestLimit, tooManyRequests } from '../../lib/rate-limits.js'
import { closeRedis, connectRedis } from '../../lib/redis.js'

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

/**
 * @fastify/rate-limit with our budgets (lib/rate-limits.ts): per organization by tier, per address without a valid
 * key, in Redis when REDIS_URL is set so that all instances share one budget. Registered before auth, which peeks
 * at the address budget before looking a key up. Routes opt out with `config: { rateLimit: false }`.
 */
export default fp(async (fastify) => {
  const { config } = fastify
  const redis = config.REDIS_URL === undefined
    ? undefined
    : await connectRedis(config.REDIS_URL, (error) => fastify.log.warn({ err: error }, 'redis error; rate limits are not enforced until it is back'))
  if (redis) fastify.addHook('onClose', async () => { await closeRedis(redis) })
  await fastify.register(rateLimit, {
    global: true,
    timeWindow: ONE_MINUTE_MS,
    redis,
    nameSpace: config.REDIS_KEY_PREFIX,
    // An unreachable Redis must not take the API down with it.
    skipOnError: true,
    keyGenerator: (request) => rateLimitKey(config, request),
    allowList: (request) => requestLimit(config, request.organization) === null,
    max: (request) => requestLimit(config, request.organization) ?? Number.MAX_SAFE_INTEGER,
    onExceeded: (request) => { fastify.metrics.countRateLimited(request.organization?.tier ?? ANONYMOUS_TIER) },
    errorResponseBuilder: (_request, context) =>
      errorBody(429, 'rate_limited', `Rate limit of ${context.max} requests per minute exceeded; retry in ${context.after}`)
  })
  limitAddresses(fastify)
}, { name: 'rate-limit', dependencies: ['config', 'metrics'] })
