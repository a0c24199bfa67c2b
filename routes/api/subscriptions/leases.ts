import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { randomUUID } from 'node:crypto'
import { acknowledgePending, extendPending, findSubscription, releasePending, type SubscriptionRow } from '../../../db/subscriptions.js'
import { apiError } from '../../../lib/api-error.js'
import { normalizeIds, toLeaseBody } from '../../../lib/events.js'
import { createLeasePolls } from '../../../lib/inbox/long-poll.js'
import { compactWhenFree, leaseFromSubscription, subscriptionNotFound } from '../../../lib/subscriptions.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { errorResponses } from '../../../schemas/errors.js'
import { ExtendBody, ExtendResult, Lease, LeaseAckResult, LeaseBody, LeaseEventsBody, ReleaseResult } from '../../../schemas/leases.js'
import { ref } from '../../../schemas/ref.js'
import { SubscriptionParams } from '../../../schemas/subscriptions.js'

const requestedIds = (ids: string[] | undefined) => ids === undefined ? null : normalizeIds(ids)

/**
 * Leases on a pull subscription: the inbox's lease, ack, release and extend, on the subscription's own state. Long
 * polls are capped per organization and process at INBOX_LONG_POLLS_PER_ORGANIZATION, counted apart from the
 * inbox's, and woken by the same arrivals.
 */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { INBOX_LONG_POLLS_PER_ORGANIZATION: maxLongPolls } = fastify.config
  const leaseWaiting = createLeasePolls(fastify.wakeUps, maxLongPolls)

  const subscriptionOf = async (organizationId: string, id: string): Promise<SubscriptionRow> => {
    const found = await findSubscription(fastify.pg, organizationId, id)
    if (!found) throw subscriptionNotFound(id)
    return found
  }

  fastify.post('/subscriptions/:id/lease', {
    config: { longLived: true },
    schema: {
      tags: ['subscriptions'],
      operationId: 'leaseSubscription',
      summary: 'Lease the subscription\'s next events in log order; with wait_seconds, wait for some to arrive',
      params: SubscriptionParams,
      body: LeaseBody,
      response: { 200: ref(Lease, { description: 'The events leased (none: lease_id null)' }), ...errorResponses(400, 401, 404, 409, 413, 415, 429, 503) }
    }
  }, async (request, reply) => {
    const organizationId = organizationOf(request).id
    const { limit, lease_seconds: leaseSeconds, wait_seconds: waitSeconds, type } = request.body
    const leaseId = randomUUID()
    const found = await leaseWaiting(request, reply, organizationId, waitSeconds, () =>
      leaseFromSubscription(fastify.pg.pool, organizationId, request.params.id, { leaseId, limit, leaseSeconds, type: type ?? null }))
    return toLeaseBody(leaseId, found)
  })

  fastify.post('/subscriptions/:id/ack', {
    schema: {
      tags: ['subscriptions'],
      operationId: 'ackSubscriptionLease',
      summary: 'Acknowledge the events of a lease (all, or those listed) while the lease holds them',
      params: SubscriptionParams,
      body: ref(LeaseEventsBody),
      response: { 200: ref(LeaseAckResult, { description: 'Which events were acknowledged' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const organizationId = organizationOf(request).id
    const { id } = request.params
    const requested = requestedIds(request.body.event_ids)
    const acknowledged = await acknowledgePending(fastify.pg, organizationId, id, request.body.lease_id, requested)
    // Nothing acked: a 404 if that is why; the common case, an ack that acks, needs no lookup.
    if (acknowledged.length === 0) await subscriptionOf(organizationId, id)
    // The floor moves past what was acked now, unless a lease holds the row (it moves it anyway); GET compacts too.
    // The acks are committed: a failed compaction must not answer the client as if they were not.
    if (acknowledged.length > 0) {
      await compactWhenFree(fastify.pg.pool, organizationId, id)
        .catch((error: unknown) => request.log.warn({ err: error }, 'compaction after an ack failed; the next lease compacts'))
    }
    const done = new Set(acknowledged)
    return { acknowledged, not_found: (requested ?? []).filter((id) => !done.has(id)) }
  })

  fastify.post('/subscriptions/:id/release', {
    schema: {
      tags: ['subscriptions'],
      operationId: 'releaseSubscriptionLease',
      summary: 'Return the events of a lease (all, or those listed) to the subscription now',
      params: SubscriptionParams,
      body: ref(LeaseEventsBody),
      response: { 200: ref(ReleaseResult, { description: 'Which events were released' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const organizationId = organizationOf(request).id
    const subscription = await subscriptionOf(organizationId, request.params.id)
    const released = await releasePending(fastify.pg, subscription.id, request.body.lease_id, requestedIds(request.body.event_ids), subscription.max_attempts)
    if (released.some((row) => row.state === 'pending')) fastify.wakeUps.announceEvents(organizationId, released.length)
    return { released: released.map((row) => row.event_id) }
  })

  fastify.post('/subscriptions/:id/extend', {
    schema: {
      tags: ['subscriptions'],
      operationId: 'extendSubscriptionLease',
      summary: 'Extend an unexpired lease to lease_seconds from now',
      params: SubscriptionParams,
      body: ExtendBody,
      response: { 200: ref(ExtendResult, { description: 'The lease\'s new expiry' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const subscription = await subscriptionOf(organizationOf(request).id, request.params.id)
    const { lease_id: leaseId, lease_seconds: leaseSeconds } = request.body
    const { ids, leasedUntil } = await extendPending(fastify.pg, subscription.id, leaseId, leaseSeconds)
    if (leasedUntil === null) throw apiError('notFound', 'lease_not_found', 'No unexpired lease with this lease_id holds any event of this subscription')
    return { lease_id: leaseId, leased_until: leasedUntil.toISOString(), event_ids: ids }
  })
}

export default routes
