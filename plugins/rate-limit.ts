import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import type { FastifyRequest } from 'fastify'
import { Redis } from 'ioredis'
import type { Config } from './config.js'
import type { Tier } from '../schemas/keys.js'
import { errorBody } from './errors.js'

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

/**
 * Per-organization limits by tier (per-IP without a valid key), in Redis when REDIS_URL is set so that all
 * instances share one budget. Routes opt out with `config: { rateLimit: false }`.
 */
export default fp(async (fastify) => {
  const { config } = fastify
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

  await fastify.register(rateLimit, {
    global: true,
    timeWindow: ONE_MINUTE_MS,
    redis,
    nameSpace: config.REDIS_KEY_PREFIX,
    // An unreachable Redis must not take the API down with it.
    skipOnError: true,
    keyGenerator: (request) => request.organization ? `org:${request.organization.id}` : `ip:${request.ip}`,
    allowList: (request) => requestLimit(config, request) === null,
    max: (request) => requestLimit(config, request) ?? Number.MAX_SAFE_INTEGER,
    errorResponseBuilder: (_request, context) =>
      errorBody(429, 'rate_limited', `Rate limit of ${context.max} requests per minute exceeded; retry in ${context.after}`)
  })
}, { name: 'rate-limit', dependencies: ['config', 'auth'] })
