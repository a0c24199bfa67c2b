import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { randomUUID } from 'node:crypto'
import {
  acknowledgeLeased, extendLease, leaseEvents, quarantineExhausted, releaseLeased
} from '../../../db/events.js'
import { apiError } from '../../../lib/api-error.js'
import { normalizeIds, toLeaseBody } from '../../../lib/events.js'
import { createLeasePolls } from '../../../lib/inbox/long-poll.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { errorResponses } from '../../../schemas/errors.js'
import { ExtendBody, ExtendResult, Lease, LeaseAckResult, LeaseBody, LeaseEventsBody, ReleaseResult } from '../../../schemas/leases.js'
import { ref } from '../../../schemas/ref.js'

const requestedIds = (ids: string[] | undefined) => ids === undefined ? null : normalizeIds(ids)

/**
 * Leasing (visibility timeouts) for concurrent consumers, written here because it is our domain: claims use
 * FOR UPDATE SKIP LOCKED; long polls wait on LISTEN/NOTIFY without holding a pool client, and each organization
 * may have INBOX_LONG_POLLS_PER_ORGANIZATION of them waiting on this process.
 */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { INBOX_MAX_LEASES: maxLeases, INBOX_LONG_POLLS_PER_ORGANIZATION: maxLongPolls } = fastify.config
  const leaseWaiting = createLeasePolls(fastify.wakeUps, maxLongPolls)

  fastify.post('/inbox/lease', {
    // A long poll waits for up to 20 s: it is not counted among the requests in progress (OVERLOAD_MAX_IN_FLIGHT).
    config: { longLived: true },
    schema: {
      tags: ['inbox'],
      operationId: 'leaseEvents',
      summary: 'Lease the oldest available events; with wait_seconds, wait for some to arrive',
      body: LeaseBody,
      response: { 200: ref(Lease, { description: 'The events leased (none: lease_id null)' }), ...errorResponses(400, 401, 413, 415, 429, 503) }
    }
  }, async (request, reply) => {
    const organization = organizationOf(request)
    const { limit, lease_seconds: leaseSeconds, wait_seconds: waitSeconds, type } = request.body
    const leaseRequest = { leaseId: randomUUID(), limit, leaseSeconds, type: type ?? null, maxLeases }
    const found = await leaseWaiting(request, reply, organization.id, waitSeconds, async () => {
      await quarantineExhausted(fastify.pg, organization.id, maxLeases)
      return await leaseEvents(fastify.pg, organization.id, leaseRequest)
    })
    return toLeaseBody(leaseRequest.leaseId, found)
  })

  fastify.post('/inbox/ack', {
    schema: {
      tags: ['inbox'],
      operationId: 'ackLease',
      summary: 'Acknowledge the events of a lease (all, or those listed) while the lease holds them',
      body: ref(LeaseEventsBody),
      response: { 200: ref(LeaseAckResult, { description: 'Which events were acknowledged' }), ...errorResponses(400, 401, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const requested = requestedIds(request.body.event_ids)
    const acknowledged = await acknowledgeLeased(fastify.pg, organizationOf(request).id, request.body.lease_id, requested)
    const done = new Set(acknowledged)
    return { acknowledged, not_found: (requested ?? []).filter((id) => !done.has(id)) }
  })

  fastify.post('/inbox/release', {
    schema: {
      tags: ['inbox'],
      operationId: 'releaseLease',
      summary: 'Return the events of a lease (all, or those listed) to the queue now',
      body: ref(LeaseEventsBody),
      response: { 200: ref(ReleaseResult, { description: 'Which events were released' }), ...errorResponses(400, 401, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const organization = organizationOf(request)
    const released = await releaseLeased(fastify.pg, organization.id, request.body.lease_id, requestedIds(request.body.event_ids), maxLeases)
    const available = released.filter((row) => row.status === 'pending').length
    if (available > 0) fastify.wakeUps.announceEvents(organization.id, available)
    return { released: released.map((row) => row.id) }
  })

  fastify.post('/inbox/extend', {
    schema: {
      tags: ['inbox'],
      operationId: 'extendLease',
      summary: 'Extend an unexpired lease to lease_seconds from now',
      body: ExtendBody,
      response: { 200: ref(ExtendResult, { description: 'The lease\'s new expiry' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const { lease_id: leaseId, lease_seconds: leaseSeconds } = request.body
    const { ids, leasedUntil } = await extendLease(fastify.pg, organizationOf(request).id, leaseId, leaseSeconds)
    if (leasedUntil === null) throw apiError('notFound', 'lease_not_found', 'No unexpired lease with this lease_id holds any event')
    return { lease_id: leaseId, leased_until: leasedUntil.toISOString(), event_ids: ids }
  })
}

export default routes
