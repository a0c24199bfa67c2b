import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'

/** OpenAPI 3 document built from the route schemas, served as /openapi.json and browsable at /docs. */
export default fp(async (fastify) => {
  await fastify.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Triggers API',
        description: 'Send events, deduplicated and stored durably; consumers list and acknowledge them. ' +
          'Every error body is {statusCode, error, code, message}.',
        version: '0.1.0'
      },
      components: {
        securitySchemes: {
          apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
          bearer: { type: 'http', scheme: 'bearer', description: 'The same API key as a Bearer token' }
        }
      },
      tags: [
        { name: 'health', description: 'Liveness, readiness and cache statistics' },
        { name: 'keys', description: 'API keys and organizations' },
        { name: 'events', description: 'Sending and reading events' },
        { name: 'inbox', description: 'Pulling, leasing and acknowledging events' },
        { name: 'webhooks', description: 'Push delivery to your endpoints, signed per Standard Webhooks' }
      ]
    }
  })
  await fastify.register(swaggerUi, { routePrefix: '/docs' })
  fastify.get('/openapi.json', { schema: { hide: true }, config: { rateLimit: false } }, async () => fastify.swagger())
}, { name: 'docs' })
