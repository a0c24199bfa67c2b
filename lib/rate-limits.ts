import { normalizeIP } from '@fastify/rate-limit'
import type { FastifyRequest } from 'fastify'
import type { Organization } from '../db/organizations.js'
import type { Tier } from '../schemas/keys.js'
import { apiError } from './api-error.js'
import type { Config } from './config.js'

export type RateLimitSettings = Pick<Config,
  'RATE_LIMIT_FREE' | 'RATE_LIMIT_STARTER' | 'RATE_LIMIT_PROFESSIONAL' | 'RATE_LIMIT_ENTERPRISE' | 'RATE_LIMIT_ANONYMOUS' | 'RATE_LIMIT_IPV6_PREFIX'>

/** Requests per minute for a tier; null when the tier is unlimited (configured as 0). */
export function tierLimit (config: RateLimitSettings, tier: Tier): number | null {
  const limits: Record<Tier, number> = {
    free: config.RATE_LIMIT_FREE,
    starter: config.RATE_LIMIT_STARTER,
    professional: config.RATE_LIMIT_PROFESSIONAL,
    enterprise: config.RATE_LIMIT_ENTERPRISE
  }
  return limits[tier] === 0 ? null : limits[tier]
}

/** A request's budget per minute: its organization's tier, or RATE_LIMIT_ANONYMOUS without a valid key; null = unlimited. */
export function requestLimit (config: RateLimitSettings, organization: Organization | null): number | null {
  if (organization) return tierLimit(config, organization.tier)
  return config.RATE_LIMIT_ANONYMOUS === 0 ? null : config.RATE_LIMIT_ANONYMOUS
}

/** Where a request is counted: its organization, else its address, IPv6 grouped by RATE_LIMIT_IPV6_PREFIX (one /64 is one subscriber). */
export function rateLimitKey (config: RateLimitSettings, request: Pick<FastifyRequest, 'organization' | 'ip'>): string {
  return request.organization ? `org:${request.organization.id}` : `ip:${normalizeIP(request.ip, config.RATE_LIMIT_IPV6_PREFIX)}`
}

/** The 429 of a spent budget, with the headers the limiter's own answers carry. */
export function tooManyRequests (max: number, retryAfterSeconds: number) {
  const seconds = String(retryAfterSeconds)
  return Object.assign(
    apiError('tooManyRequests', 'rate_limited', `Rate limit of ${max} requests per minute exceeded; retry in ${seconds} seconds`),
    { headers: { 'retry-after': seconds, 'x-ratelimit-limit': String(max), 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': seconds } })
}
