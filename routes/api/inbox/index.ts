import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { listEvents, quarantineExhausted, type InboxFilter } from '../../../db/events.js'
import { apiError } from '../../../lib/api-error.js'
import { decodeCursor, encodeCursor, parseInstant } from '../../../lib/positions.js'
import { toEventBody } from '../../../lib/events.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { errorResponses } from '../../../schemas/errors.js'
import { InboxPage, InboxQuery } from '../../../schemas/events.js'
import { ref } from '../../../schemas/ref.js'

/** `since` as the UTC instant it names; what PostgreSQL cannot hold is the client's error, not a 500. */
function parseSince (since: string | undefined): string | null {
  if (since === undefined) return null
  const time = parseInstant(since)
  if (time === undefined) {
    throw apiError('badRequest', 'invalid_since', 'since must be an RFC 3339 date-time between 0001-01-01 and 9999-12-31 (UTC)')
  }
  return time.toISOString()
}

function inboxFilter (query: InboxQuery): InboxFilter {
  return {
    status: query.status === 'all' ? null : query.status,
    deliveryStatus: query.delivery_status ?? null,
    type: query.type ?? null,
    since: parseSince(query.since),
    after: decodeCursor(query.cursor),
    limit: query.limit
  }
}

const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/inbox', {
    schema: {
      operationId: 'listInbox',
      tags: ['inbox'],
      summary: 'List events in commit order; page (or tail) with next_cursor, which never skips an event',
      querystring: InboxQuery,
      response: { 200: ref(InboxPage, { description: 'A page of events' }), ...errorResponses(400, 401, 429, 503) }
    }
  }, async (request) => {
    const filter = inboxFilter(request.query)
    const organizationId = organizationOf(request).id
    // Expired last leases become visible as quarantined before anything that could show them is listed.
    if (filter.status !== 'acknowledged') await quarantineExhausted(fastify.pg, organizationId, fastify.config.INBOX_MAX_LEASES)
    const rows = await listEvents(fastify.pg, organizationId, filter)
    const page = rows.slice(0, filter.limit)
    return {
      events: page.map(toEventBody),
      count: page.length,
      // Always a place to resume from: after the last event listed, or where this page started.
      next_cursor: encodeCursor(page.at(-1) ?? filter.after),
      has_more: rows.length > filter.limit
    }
  })
}

export default routes
