import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { errorResponses } from '../../schemas/errors.js'

// Open when METRICS_TOKEN is unset (the empty requirement), else its bearer token.
const metricsSecurity: Array<Record<string, string[]>> = [{}, { metricsToken: [] }]

/**
 * Prometheus metrics of this process. Scrapers carry no API key and must not be refused when busy, so the
 * route is outside /api and unmetered; with METRICS_TOKEN set it needs `Authorization: Bearer <METRICS_TOKEN>`.
 */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  // This plugin is encapsulated: the hook guards /metrics only.
  fastify.addHook('preValidation', fastify.requireMetricsToken)

  fastify.get('/metrics', {
    config: { rateLimit: false, shed: false },
    schema: {
      operationId: 'getMetrics',
      tags: ['health'],
      summary: 'Metrics of this process in the Prometheus text format (listed in docs/operations.md)',
      security: metricsSecurity,
      response: {
        200: {
          description: 'Prometheus text exposition format 0.0.4',
          content: { 'text/plain': { schema: Type.String() } }
        },
        ...errorResponses(401)
      }
    }
  }, async (_request, reply) => {
    const text = await fastify.metrics.scrape()
    return reply.type(fastify.metrics.contentType).send(text)
  })
}

export default routes
