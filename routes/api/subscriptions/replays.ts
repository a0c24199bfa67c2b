import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { cancelReplays, findReplay, listReplays } from '../../../db/subscription-replays.js'
import { findSubscription } from '../../../db/subscriptions.js'
import { parseReplayRange, replayNotFound, startReplay, subscriptionNotFound, toReplayBody } from '../../../lib/subscriptions.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { errorResponses } from '../../../schemas/errors.js'
import { ref } from '../../../schemas/ref.js'
import { Replay, ReplayBody, ReplayList, ReplayParams, SubscriptionParams } from '../../../schemas/subscriptions.js'

/**
 * Replays: a time range of the log handed to a subscription again, without moving its position, at its rate cap.
 * At most SUBSCRIPTION_REPLAYS_READING of a subscription's replays read at once, each of at most
 * SUBSCRIPTION_REPLAY_MAX_EVENTS events.
 */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { EVENT_RETENTION_DAYS: retentionDays, SUBSCRIPTION_REPLAYS_READING: maxReading, SUBSCRIPTION_REPLAY_MAX_EVENTS: maxEvents } = fastify.config

  const subscriptionOf = async (organizationId: string, id: string) => {
    const found = await findSubscription(fastify.pg, organizationId, id)
    if (!found) throw subscriptionNotFound(id)
    return found
  }

  fastify.post('/subscriptions/:id/replay', {
    schema: {
      tags: ['subscriptions'],
      operationId: 'replaySubscription',
      summary: 'Hand the events of a time range to the subscription again, without moving its position',
      params: SubscriptionParams,
      body: ref(ReplayBody),
      response: {
        202: ref(Replay, { description: 'The replay, started: its events are leased like any others, oldest first' }),
        ...errorResponses(400, 401, 404, 409, 413, 415, 429, 503)
      }
    }
  }, async (request, reply) => {
    const organizationId = organizationOf(request).id
    const range = parseReplayRange(request.body.from, request.body.to, retentionDays)
    const replay = await startReplay(fastify.pg.pool, organizationId, request.params.id, range, { maxReading, maxEvents })
    // Long polls waiting on the subscription look again: it has events to hand out.
    if (replay.total > 0) fastify.wakeUps.announceEvents(organizationId, replay.total)
    return reply.code(202).header('location', `/api/subscriptions/${request.params.id}/replays/${replay.id}`).send(toReplayBody(replay))
  })

  fastify.get('/subscriptions/:id/replays', {
    schema: {
      tags: ['subscriptions'],
      operationId: 'listReplays',
      summary: 'The subscription\'s replays, oldest first, with their progress',
      params: SubscriptionParams,
      response: { 200: ref(ReplayList, { description: 'Replays' }), ...errorResponses(400, 401, 404, 429, 503) }
    }
  }, async (request) => {
    const subscription = await subscriptionOf(organizationOf(request).id, request.params.id)
    return { replays: (await listReplays(fastify.pg, subscription.id)).map(toReplayBody) }
  })

  fastify.get('/subscriptions/:id/replays/:replay_id', {
    schema: {
      tags: ['subscriptions'],
      operationId: 'getReplay',
      summary: 'One replay\'s progress: how many of the range are done, and whether it is still running',
      params: ReplayParams,
      response: { 200: ref(Replay, { description: 'The replay' }), ...errorResponses(400, 401, 404, 429, 503) }
    }
  }, async (request) => {
    const subscription = await subscriptionOf(organizationOf(request).id, request.params.id)
    const replay = await findReplay(fastify.pg, subscription.id, request.params.replay_id)
    if (!replay) throw replayNotFound(request.params.replay_id)
    return toReplayBody(replay)
  })

  fastify.delete('/subscriptions/:id/replays/:replay_id', {
    schema: {
      tags: ['subscriptions'],
      operationId: 'cancelReplay',
      summary: 'Cancel a replay: it reads no more of its range (events it already handed out stay with the subscription)',
      params: ReplayParams,
      response: { 200: ref(Replay, { description: 'The replay, cancelled (or as it was, when it had already ended)' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const subscription = await subscriptionOf(organizationOf(request).id, request.params.id)
    await cancelReplays(fastify.pg, subscription.id, request.params.replay_id)
    const replay = await findReplay(fastify.pg, subscription.id, request.params.replay_id)
    if (!replay) throw replayNotFound(request.params.replay_id)
    return toReplayBody(replay)
  })
}

export default routes
