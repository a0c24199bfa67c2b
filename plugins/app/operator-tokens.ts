import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import type { HttpError } from '@fastify/sensible'
import { apiError } from '../../lib/api-error.js'
import { bearerTokenOf, tokenAccepted } from '../../lib/tokens.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Hook for admin-only routes (key generation runs it in onRequest, before the body); open when ADMIN_TOKEN is unset. */
    requireAdminToken: (request: FastifyRequest) => Promise<void>
    /** preValidation hook for /stats/*; open when STATS_TOKEN is unset. */
    requireStatsToken: (request: FastifyRequest) => Promise<void>
    /** preValidation hook for /metrics; open when METRICS_TOKEN is unset. */
    requireMetricsToken: (request: FastifyRequest) => Promise<void>
  }
}

/** A request hook (onRequest or preValidation) that requires `expected` (when configured) as read by `given`. */
function requireToken (expected: string | undefined, given: (request: FastifyRequest) => unknown, refusal: () => HttpError) {
  return async (request: FastifyRequest): Promise<void> => {
    if (!tokenAccepted(expected, given(request))) throw refusal()
  }
}

const bearerToken = (request: FastifyRequest) => bearerTokenOf(request.headers.authorization)

/** The operator's tokens (ADMIN_TOKEN, STATS_TOKEN, METRICS_TOKEN), each guarding its own routes. */
export default fp(async (fastify) => {
  const { ADMIN_TOKEN, STATS_TOKEN, METRICS_TOKEN } = fastify.config
  fastify.decorate('requireAdminToken', requireToken(ADMIN_TOKEN, (request) => request.headers['x-admin-token'], () =>
    apiError('unauthorized', 'invalid_admin_token', 'This server requires a valid X-Admin-Token header to create API keys')))
  fastify.decorate('requireStatsToken', requireToken(STATS_TOKEN, bearerToken, () =>
    apiError('unauthorized', 'invalid_stats_token', 'This server requires Authorization: Bearer <STATS_TOKEN> for its statistics')))
  fastify.decorate('requireMetricsToken', requireToken(METRICS_TOKEN, bearerToken, () =>
    apiError('unauthorized', 'invalid_metrics_token', 'This server requires Authorization: Bearer <METRICS_TOKEN> for its metrics')))
}, { name: 'operator-tokens', dependencies: ['config'] })
