import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { replaceKey } from '../../../db/organizations.js'
import { createApiKey } from '../../../lib/api-keys.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { tierLimit } from '../../../lib/rate-limits.js'
import { errorResponses } from '../../../schemas/errors.js'
import { KeyInfo, RotatedKey } from '../../../schemas/keys.js'
import { ref } from '../../../schemas/ref.js'

const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/keys', {
    schema: {
      operationId: 'getKey',
      tags: ['keys'],
      summary: 'The calling key\'s organization, tier and limit (never the key itself)',
      response: { 200: ref(KeyInfo, { description: 'The key\'s organization' }), ...errorResponses(401, 429, 503) }
    }
  }, async (request) => {
    const organization = organizationOf(request)
    return {
      organization_id: organization.id,
      organization_name: organization.name,
      tier: organization.tier,
      key_prefix: organization.key_prefix,
      rate_limit_per_minute: tierLimit(fastify.config, organization.tier),
      created_at: organization.created_at.toISOString()
    }
  })

  fastify.post('/keys/rotate', {
    schema: {
      operationId: 'rotateKey',
      tags: ['keys'],
      summary: 'Replace the calling key; the old key stops working immediately',
      response: { 200: ref(RotatedKey, { description: 'The new key (shown only here)' }), ...errorResponses(400, 401, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const organization = organizationOf(request)
    const apiKey = createApiKey()
    await replaceKey(fastify.pg, organization.id, apiKey.hash, apiKey.prefix)
    // Other instances drop the old key when migration 004's NOTIFY reaches them; this one must not wait for it.
    fastify.forgetOrganization(organization.id)
    return { api_key: apiKey.key, key_prefix: apiKey.prefix }
  })
}

export default routes
