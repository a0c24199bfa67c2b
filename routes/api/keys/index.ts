import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { rotateKey } from '../../../db/organizations.js'
import { apiError } from '../../../lib/api-error.js'
import { createApiKey, hashApiKey, presentedApiKey } from '../../../lib/api-keys.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { tierLimit } from '../../../lib/rate-limits.js'
import { errorResponses } from '../../../schemas/errors.js'
import { KeyInfo, RotatedKey, RotateKeyBody } from '../../../schemas/keys.js'
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
    // The body is optional: none means no grace period.
    preValidation: async (request) => { request.body ??= { expires_in_seconds: 0 } },
    schema: {
      operationId: 'rotateKey',
      tags: ['keys'],
      summary: 'Replace the calling key; the old key stops working now, or after expires_in_seconds',
      body: RotateKeyBody,
      response: { 200: ref(RotatedKey, { description: 'The new key (shown only here)' }), ...errorResponses(400, 401, 409, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const organization = organizationOf(request)
    // The organization was found by this key, so it is there; the rotation happens only while it is current.
    const presented = presentedApiKey(request.headers) ?? ''
    const apiKey = createApiKey()
    const graceSeconds = request.body.expires_in_seconds
    const presentedHash = hashApiKey(presented)
    const rotation = await rotateKey(fastify.pg, { organizationId: organization.id, presentedHash, keyHash: apiKey.hash, keyPrefix: apiKey.prefix, graceSeconds })
    if (!rotation) {
      throw apiError('conflict', 'key_already_rotated',
        'This key is no longer the current one: another rotation replaced it meanwhile, or it is an old key in its grace period. Use the newest key')
    }
    const previousExpiresAt = rotation.previous_key_expires_at
    // Other instances hear of it when migration 004's NOTIFY reaches them; this one must not wait for it.
    fastify.keysIssued({
      id: organization.id,
      key_hash: apiKey.hash,
      previous_key_hash: previousExpiresAt === null ? null : presentedHash,
      previous_key_expires_at: previousExpiresAt
    })
    return { api_key: apiKey.key, key_prefix: apiKey.prefix, previous_key_expires_at: previousExpiresAt?.toISOString() ?? null }
  })
}

export default routes
