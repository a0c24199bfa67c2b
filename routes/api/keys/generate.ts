import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { insertOrganization } from '../../../db/organizations.js'
import { apiError } from '../../../lib/api-error.js'
import { createApiKey } from '../../../lib/api-keys.js'
import { errorResponses } from '../../../schemas/errors.js'
import { ApiKey, GenerateKeyBody } from '../../../schemas/keys.js'
import { ref } from '../../../schemas/ref.js'

/**
 * The one /api route that needs no API key (it creates the first one); guarded by ADMIN_TOKEN when set. Without
 * the token only free keys can be made, so an open server hands out nothing worth more than the free budget.
 */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  // X-Admin-Token is checked in onRequest, before the body is read: a refusal is sent at once and its connection
  // closed (app.ts), however slowly the client sends the body. It goes after the route's other onRequest hooks,
  // the rate limiter's among them (its onRoute hook, registered before this plugin's, adds it), so a refused
  // attempt is still counted against its address.
  fastify.addHook('onRoute', (route) => {
    const existing = route.onRequest
    const hooks = existing === undefined ? [] : Array.isArray(existing) ? existing : [existing]
    route.onRequest = [...hooks, fastify.requireAdminToken]
  })

  fastify.post('/keys/generate', {
    schema: {
      operationId: 'generateKey',
      tags: ['keys'],
      summary: 'Create an organization and its API key (the key is shown only here)',
      // No API key: open when ADMIN_TOKEN is unset (the empty requirement), else X-Admin-Token.
      security: [{}, { adminToken: [] }],
      body: ref(GenerateKeyBody),
      response: { 201: ref(ApiKey, { description: 'Created' }), ...errorResponses(400, 401, 403, 413, 415, 429, 503) }
    }
  }, async (request, reply) => {
    const { organization_name: name, tier = 'free' } = request.body
    if (tier !== 'free' && fastify.config.ADMIN_TOKEN === undefined) {
      throw apiError('forbidden', 'tier_requires_admin_token', `Only free keys can be created on a server without ADMIN_TOKEN; ${tier} needs an admin token`)
    }
    const apiKey = createApiKey()
    const organization = await insertOrganization(fastify.pg, name, tier, apiKey.hash, apiKey.prefix)
    fastify.keysIssued({ id: organization.id, key_hash: apiKey.hash, previous_key_hash: null, previous_key_expires_at: null })
    return reply.code(201).send({
      api_key: apiKey.key,
      key_prefix: organization.key_prefix,
      organization_id: organization.id,
      organization_name: organization.name,
      tier: organization.tier,
      created_at: organization.created_at.toISOString()
    })
  })
}

export default routes
