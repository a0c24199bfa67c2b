import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { findEvent } from '../../../db/events.js'
import { eventSubscriptionStates } from '../../../db/subscriptions.js'
import { apiError } from '../../../lib/api-error.js'
import { ingestEvents, isStorableJson, nestsDeeperThan, toEventBody } from '../../../lib/events.js'
import type { IngestOutcome } from '../../../lib/group-commit.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { errorResponses } from '../../../schemas/errors.js'
import {
  BatchBody, BatchResult, EventAccepted, EventDetail, EventInput, EventParams, IdempotencyHeader
} from '../../../schemas/events.js'
import { ref } from '../../../schemas/ref.js'
import { compileBodyValidator } from '../../../schemas/validation.js'
import type { IngestLabel } from '../../../lib/metrics.js'

const validateEventInput = compileBodyValidator<EventInput>(EventInput)

type BatchItemResult = BatchResult['results'][number]

const tooDeep = (maxDepth: number) => `payload nests objects and arrays deeper than ${maxDepth} levels (PAYLOAD_MAX_DEPTH)`

function checkBatchItem (item: unknown, maxDepth: number): { input: EventInput } | { error: string } {
  if (!validateEventInput(item)) {
    const [first] = validateEventInput.errors ?? []
    return { error: first ? `${first.instancePath || 'event'} ${first.message ?? 'is invalid'}` : 'invalid event' }
  }
  // Depth first: the storability scan below recurses, and is only safe on a bounded depth.
  if (nestsDeeperThan(item.payload, maxDepth)) return { error: tooDeep(maxDepth) }
  if (!isStorableJson(item.payload)) return { error: 'payload contains \\u0000 or an unpaired surrogate, which PostgreSQL cannot store' }
  return { input: item }
}

/**
 * What a single-event answer says of its event, for triggers_events_ingested_total: 201 stored, 200 a duplicate,
 * 400/413/415 refused for its content. Other answers (401, 429, 503) never looked at the event.
 */
const SINGLE_EVENT_OUTCOMES = new Map<number, IngestLabel>([[201, 'accepted'], [200, 'duplicate'], [400, 'rejected'], [413, 'rejected'], [415, 'rejected']])

/** What an answer says of one stored event: accepted ones tell whether webhooks matched. */
function outcomeBody (outcome: IngestOutcome) {
  return outcome.status === 'accepted'
    ? { status: outcome.status, event_id: outcome.event.id, delivery_status: outcome.event.delivery_status }
    : { status: outcome.status, event_id: outcome.event.id }
}

const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/events', {
    schema: {
      operationId: 'createEvent',
      tags: ['events'],
      summary: 'Send one event; a repeated dedup_id (or Idempotency-Key) answers 200 with the original event id',
      headers: IdempotencyHeader,
      body: ref(EventInput),
      response: {
        201: ref(EventAccepted, {
          description: 'Stored (status accepted)',
          headers: { Location: { type: 'string', description: 'The event\'s URL, /api/events/{event_id}' } }
        }),
        200: ref(EventAccepted, { description: 'A duplicate of an earlier event (status duplicate, its event_id)' }),
        ...errorResponses(400, 401, 413, 415, 429, 503)
      }
    },
    // Counted from the answer, so refusals before the handler (validation, body size, media type) count too.
    onResponse: (_request, reply, done) => {
      const outcome = SINGLE_EVENT_OUTCOMES.get(reply.statusCode)
      if (outcome !== undefined) fastify.metrics.countIngested(outcome)
      done()
    }
  }, async (request, reply) => {
    const organization = organizationOf(request)
    const headerKey = request.headers['idempotency-key']
    const { dedup_id: bodyKey } = request.body
    if (headerKey !== undefined && bodyKey !== undefined && headerKey !== bodyKey) {
      throw apiError('badRequest', 'dedup_id_mismatch', 'Idempotency-Key header and body dedup_id differ; send one or make them equal')
    }
    const maxDepth = fastify.config.PAYLOAD_MAX_DEPTH
    if (nestsDeeperThan(request.body.payload, maxDepth)) throw apiError('badRequest', 'payload_too_deep', tooDeep(maxDepth))
    // Unstorable text (\u0000, lone surrogates) is left for PostgreSQL to refuse (mapped to 400), sparing a scan.
    const [outcome] = await ingestEvents(fastify.groupCommit, fastify.dedup, organization.id, [{ ...request.body, dedup_id: bodyKey ?? headerKey }])
    if (!outcome) throw new Error('ingest returned no outcome')
    const { event } = outcome
    const body = { ...outcomeBody(outcome), type: event.type, created_at: event.created_at.toISOString() }
    if (outcome.status === 'duplicate') return reply.code(200).send(body)
    return reply.code(201).header('location', `/api/events/${event.id}`).send(body)
  })

  fastify.post('/events/batch', {
    schema: {
      operationId: 'createEventBatch',
      tags: ['events'],
      summary: 'Send 1-100 events; each item is accepted, a duplicate, or rejected on its own',
      body: ref(BatchBody),
      response: { 200: ref(BatchResult, { description: 'The outcome of each item, in order' }), ...errorResponses(400, 401, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const organization = organizationOf(request)
    const results: BatchItemResult[] = []
    const valid: Array<{ index: number, input: EventInput }> = []
    request.body.events.forEach((item, index) => {
      const checked = checkBatchItem(item, fastify.config.PAYLOAD_MAX_DEPTH)
      if ('input' in checked) valid.push({ index, input: checked.input })
      else results[index] = { index, status: 'rejected', error: checked.error }
    })
    const outcomes = await ingestEvents(fastify.groupCommit, fastify.dedup, organization.id, valid.map(({ input }) => input))
    outcomes.forEach((outcome, position) => {
      const index = valid[position]?.index ?? position
      results[index] = { index, ...outcomeBody(outcome) }
    })
    const count = (status: BatchItemResult['status']) => results.filter((result) => result.status === status).length
    const answer = { results, accepted: count('accepted'), duplicates: count('duplicate'), rejected: count('rejected') }
    // A batch refused as a whole (400, 413, 415) is not counted: its events were never read one by one.
    fastify.metrics.countIngested('accepted', answer.accepted)
    fastify.metrics.countIngested('duplicate', answer.duplicates)
    fastify.metrics.countIngested('rejected', answer.rejected)
    return answer
  })

  fastify.get('/events/:id', {
    schema: {
      operationId: 'getEvent',
      tags: ['events'],
      summary: 'One event of the calling organization, with its state in each subscription it matches',
      params: EventParams,
      response: { 200: ref(EventDetail, { description: 'The event' }), ...errorResponses(400, 401, 404, 429, 503) }
    }
  }, async (request) => {
    const organizationId = organizationOf(request).id
    const row = await findEvent(fastify.pg, organizationId, request.params.id)
    if (!row) throw apiError('notFound', 'not_found', `Event ${request.params.id} not found`)
    return { ...toEventBody(row), subscriptions: await eventSubscriptionStates(fastify.pg, organizationId, row) }
  })
}

export default routes
