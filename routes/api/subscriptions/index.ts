import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import {
  countPending, deleteSubscription, findSubscription, insertSubscriptionWithinLimit, listSubscriptions, seekSubscription, updateSubscription
} from '../../../db/subscriptions.js'
import { cancelReplays } from '../../../db/subscription-replays.js'
import { inTransaction } from '../../../db/transaction.js'
import { apiError } from '../../../lib/api-error.js'
import { currentSubscription, parseStart, subscriptionNotFound, toSubscriptionBody } from '../../../lib/subscriptions.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { errorResponses } from '../../../schemas/errors.js'
import { ref } from '../../../schemas/ref.js'
import {
  CreateSubscriptionBody, SeekBody, Subscription, SubscriptionList, SubscriptionParams, UpdateSubscriptionBody
} from '../../../schemas/subscriptions.js'

/** Pull subscriptions: independent consumers over the organization's events, each with its own position. */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { EVENT_RETENTION_DAYS: retentionDays, SUBSCRIPTIONS_PER_ORGANIZATION: max } = fastify.config

  const withPending = async (row: Parameters<typeof toSubscriptionBody>[0]) =>
    toSubscriptionBody(row, (await countPending(fastify.pg, [row.id])).get(row.id))

  fastify.post('/subscriptions', {
    schema: {
      tags: ['subscriptions'],
      operationId: 'createSubscription',
      summary: 'Create a pull subscription starting now, at the beginning of what is retained, at a time or at a cursor',
      body: CreateSubscriptionBody,
      response: {
        201: ref(Subscription, { description: 'The subscription, at its start position' }),
        ...errorResponses(400, 401, 409, 413, 415, 429, 503)
      }
    }
  }, async (request, reply) => {
    const organizationId = organizationOf(request).id
    const { name, event_types: eventTypes, start, max_in_flight: maxInFlight, max_attempts: maxAttempts, rate_limit_per_second: rateLimit, retry_schedule: retrySchedule } = request.body
    const startPosition = parseStart(start, retentionDays)
    const fields = {
      name: name ?? null, event_types: eventTypes ?? [], max_in_flight: maxInFlight, max_attempts: maxAttempts, rate_limit_per_second: rateLimit ?? null, retry_schedule: retrySchedule ?? []
    }
    const row = await inTransaction(fastify.pg.pool, (client) => insertSubscriptionWithinLimit(client, organizationId, fields, startPosition, max))
    if (!row) throw apiError('conflict', 'subscription_limit_reached', `An organization may have at most ${max} subscriptions; delete one first`)
    return reply.code(201).header('location', `/api/subscriptions/${row.id}`).send(toSubscriptionBody(row, undefined))
  })

  fastify.get('/subscriptions', {
    schema: {
      tags: ['subscriptions'],
      operationId: 'listSubscriptions',
      summary: 'All subscriptions, oldest first',
      response: { 200: ref(SubscriptionList, { description: 'The subscriptions' }), ...errorResponses(401, 429, 503) }
    }
  }, async (request) => {
    const rows = await listSubscriptions(fastify.pg, organizationOf(request).id)
    const pending = await countPending(fastify.pg, rows.map((row) => row.id))
    return { subscriptions: rows.map((row) => toSubscriptionBody(row, pending.get(row.id))) }
  })

  fastify.get('/subscriptions/:id', {
    schema: {
      tags: ['subscriptions'],
      operationId: 'getSubscription',
      summary: 'One subscription, with its current position and pending counts',
      params: SubscriptionParams,
      response: { 200: ref(Subscription, { description: 'The subscription' }), ...errorResponses(400, 401, 404, 429, 503) }
    }
  }, async (request) => {
    const row = await currentSubscription(fastify.pg.pool, organizationOf(request).id, request.params.id)
    if (!row) throw subscriptionNotFound(request.params.id)
    return await withPending(row)
  })

  fastify.patch('/subscriptions/:id', {
    schema: {
      tags: ['subscriptions'],
      operationId: 'updateSubscription',
      summary: 'Change a subscription\'s settings; {"paused": true} pauses it and false resumes it where it was',
      params: SubscriptionParams,
      body: ref(UpdateSubscriptionBody),
      response: { 200: ref(Subscription, { description: 'The subscription' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const organizationId = organizationOf(request).id
    const row = await updateSubscription(fastify.pg, organizationId, request.params.id, request.body)
    if (!row) throw subscriptionNotFound(request.params.id)
    // Resumed, or allowed more at once: long polls waiting on it look again.
    fastify.wakeUps.announceEvents(organizationId, 1)
    return await withPending(row)
  })

  fastify.delete('/subscriptions/:id', {
    schema: {
      tags: ['subscriptions'],
      operationId: 'deleteSubscription',
      summary: 'Delete a subscription and its state',
      params: SubscriptionParams,
      response: { 204: Type.Null({ description: 'Deleted' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request, reply) => {
    if (!await deleteSubscription(fastify.pg, organizationOf(request).id, request.params.id)) throw subscriptionNotFound(request.params.id)
    return reply.code(204).send(null)
  })

  fastify.post('/subscriptions/:id/seek', {
    schema: {
      tags: ['subscriptions'],
      operationId: 'seekSubscription',
      summary: 'Move a subscription to a time, a cursor, the beginning or now: events after it are leased again (its replays are cancelled)',
      params: SubscriptionParams,
      body: ref(SeekBody),
      response: { 200: ref(Subscription, { description: 'The subscription at its new position' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const organizationId = organizationOf(request).id
    const to = parseStart(request.body.to, retentionDays)
    const row = await inTransaction(fastify.pg.pool, async (client) => {
      const found = await findSubscription(client, organizationId, request.params.id, 'FOR UPDATE')
      if (!found) return undefined
      // The seek hands out everything after its position anew: the replays' own reading would only repeat it.
      await cancelReplays(client, found.id, null)
      return await seekSubscription(client, found, to)
    })
    if (!row) throw subscriptionNotFound(request.params.id)
    fastify.wakeUps.announceEvents(organizationId, 1)
    return await withPending(row)
  })
}

export default routes
