import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { listDeadLetters } from '../../../db/subscriptions.js'
import { normalizeIds } from '../../../lib/events.js'
import { currentSubscription, redriveSubscription, subscriptionNotFound } from '../../../lib/subscriptions.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { errorResponses } from '../../../schemas/errors.js'
import { ref } from '../../../schemas/ref.js'
import { DeadLetterList, DeadLettersQuery, RedriveBody, RedriveResult, SubscriptionParams } from '../../../schemas/subscriptions.js'

/** A subscription's dead letters (events leased max_attempts times without an ack), listed and redriven in bulk. */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/subscriptions/:id/dead-letters', {
    schema: {
      tags: ['subscriptions'],
      operationId: 'listDeadLetters',
      summary: 'The subscription\'s dead letters, oldest position first',
      params: SubscriptionParams,
      querystring: DeadLettersQuery,
      response: { 200: ref(DeadLetterList, { description: 'Dead letters' }), ...errorResponses(400, 401, 404, 429, 503) }
    }
  }, async (request) => {
    // Compacted first: events whose last lease has just expired are listed too.
    const subscription = await currentSubscription(fastify.pg.pool, organizationOf(request).id, request.params.id)
    if (!subscription) throw subscriptionNotFound(request.params.id)
    const rows = await listDeadLetters(fastify.pg, subscription.id, request.query.limit)
    return {
      events: rows.map((row) => ({
        event_id: row.event_id,
        type: row.type,
        payload: row.payload,
        created_at: row.created_at.toISOString(),
        lease_count: row.attempts,
        dead_at: row.dead_at.toISOString()
      }))
    }
  })

  fastify.post('/subscriptions/:id/dead-letters/redrive', {
    schema: {
      tags: ['subscriptions'],
      operationId: 'redriveDeadLetters',
      summary: 'Make dead letters (all, or those listed) available again with a fresh attempt budget',
      params: SubscriptionParams,
      body: ref(RedriveBody),
      response: { 200: ref(RedriveResult, { description: 'How many were redriven' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const organizationId = organizationOf(request).id
    const ids = request.body.event_ids === undefined ? null : normalizeIds(request.body.event_ids)
    const redriven = await redriveSubscription(fastify.pg.pool, organizationId, request.params.id, ids)
    if (redriven === undefined) throw subscriptionNotFound(request.params.id)
    if (redriven > 0) fastify.wakeUps.announceEvents(organizationId, redriven)
    return { redriven }
  })
}

export default routes
