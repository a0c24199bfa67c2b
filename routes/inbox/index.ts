import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { acknowledgeEvents, listEvents, quarantineExhausted } from '../../db/events.js'
import { apiError } from '../../lib/api-error.js'
import { normalizeIds, toEventBody } from '../../lib/events.js'
import { organizationOf } from '../../plugins/auth.js'
import { errorResponses } from '../../schemas/errors.js'
import { Acknowledged, BulkAckBody, BulkAckResult, EventParams, InboxPage, InboxQuery } from '../../schemas/events.js'

// Cursors are opaque to clients; inside they are the last event's position, base64url-encoded.
const encodeCursor = (seq: string) => Buffer.from(seq).toString('base64url')

function decodeCursor (cursor: string | undefined): string {
  if (cursor === undefined) return '0'
  const seq = Buffer.from(cursor, 'base64url').toString()
  if (!/^\d{1,19}$/.test(seq)) throw apiError('badRequest', 'invalid_cursor', 'cursor is not a next_cursor value from this API')
  return seq
}

function inboxFilter (query: InboxQuery) {
  return {
    status: query.status === 'all' ? null : query.status,
    type: query.type ?? null,
    since: query.since ?? null,
    afterSeq: decodeCursor(query.cursor),
    limit: query.limit
  }
}

const ackOneSchema = {
  tags: ['inbox'],
  summary: 'Acknowledge one event (idempotent)',
  params: EventParams,
  response: { 200: Acknowledged, ...errorResponses(400, 401, 404) }
}

const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/inbox', {
    schema: {
      tags: ['inbox'],
      summary: 'List events oldest first; page with next_cursor',
      querystring: InboxQuery,
      response: { 200: InboxPage, ...errorResponses(400, 401) }
    }
  }, async (request) => {
    const filter = inboxFilter(request.query)
    const organizationId = organizationOf(request).id
    // Expired last leases become visible as quarantined before anything that could show them is listed.
    if (filter.status !== 'acknowledged') await quarantineExhausted(fastify.pg, organizationId, fastify.config.INBOX_MAX_LEASES)
    const rows = await listEvents(fastify.pg, organizationId, filter)
    const page = rows.slice(0, filter.limit)
    const last = page.at(-1)
    return {
      events: page.map(toEventBody),
      count: page.length,
      next_cursor: rows.length > filter.limit && last ? encodeCursor(last.seq) : null
    }
  })

  const acknowledgeOne = async (request: FastifyRequest<{ Params: { id: string } }>) => {
    const [row] = await acknowledgeEvents(fastify.pg, organizationOf(request).id, [request.params.id])
    if (!row) throw apiError('notFound', 'not_found', `Event ${request.params.id} not found`)
    return { event_id: row.id, status: 'acknowledged' as const, acknowledged_at: row.acknowledged_at.toISOString() }
  }
  fastify.post('/events/:id/ack', { schema: ackOneSchema }, acknowledgeOne)
  fastify.post('/ack/:id', { schema: ackOneSchema }, acknowledgeOne)

  fastify.post('/ack', {
    schema: {
      tags: ['inbox'],
      summary: 'Acknowledge up to 100 events; unknown or foreign ids are listed in not_found',
      body: BulkAckBody,
      response: { 200: BulkAckResult, ...errorResponses(400, 401) }
    }
  }, async (request) => {
    const ids = normalizeIds(request.body.event_ids)
    const rows = await acknowledgeEvents(fastify.pg, organizationOf(request).id, ids)
    const acknowledged = new Set(rows.map((row) => row.id))
    return {
      acknowledged: ids.filter((id) => acknowledged.has(id)),
      not_found: ids.filter((id) => !acknowledged.has(id))
    }
  })
}

export default routes
