import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { adjustForGenerators, documentRateLimitHeaders, DOCUMENT_BASE } from '../../lib/openapi.js'

/**
 * @fastify/swagger and its UI: the OpenAPI 3 document built from the route schemas (with lib/openapi.ts's
 * corrections), served as /openapi.json and browsable at /docs. Named schemas (schemas/components.ts, added with
 * addSchema) appear in components.schemas under their `$id`.
 */
export default fp(async (fastify) => {
  await fastify.register(swagger, {
    openapi: DOCUMENT_BASE,
    // Named schemas keep their $id as their name, instead of def-0, def-1, ...
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => typeof json.$id === 'string' ? json.$id : `def-${i}` },
    transform: documentRateLimitHeaders,
    transformObject: (document) => {
      const built = 'openapiObject' in document ? document.openapiObject : document.swaggerObject
      adjustForGenerators(built)
      return built
    }
  })
  await fastify.register(swaggerUi, { routePrefix: '/docs' })
  fastify.get('/openapi.json', { schema: { hide: true }, config: { rateLimit: false } }, async () => fastify.swagger())
}, { name: 'docs' })
