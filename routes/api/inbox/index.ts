import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { listEvents, quarantineExhausted, type InboxFilter, type InboxPosition } from '../../../db/events.js'
import { apiError } from '../../../lib/api-error.js'
import { toEventBody } from '../../../lib/events.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { errorResponses } from '../../../schemas/errors.js'
import { InboxPage, InboxQuery } from '../../../schemas/events.js'
import { ref } from '../../../schemas/ref.js'

// Cursors are opaque to clients; inside they are the last event's position "<txid>.<seq>", base64url-encoded.
const encodeCursor = (position: InboxPosition) => Buffer.from(`${position.txid}.${position.seq}`).toString('base64url')

const START: InboxPosition = { txid: '0', seq: '0' }
const MAX_TXID = 2n ** 64n - 1n
const MAX_SEQ = 2n ** 63n - 1n

/**
 * A cursor that does not parse or is out of range is the client's error. A bare seq is a cursor from before
 * cursors held the transaction id: every event of that time has txid 0, so it keeps its place.
 */
function decodeCursor (cursor: string | undefined): InboxPosition {
  if (cursor === undefined) return START
  const match = /^(?:(\d{1,20})\.)?(\d{1,19})$/.exec(Buffer.from(cursor, 'base64url').toString())
  const txid = match?.[1] ?? '0'
  const seq = match?.[2]
  if (seq === undefined || BigInt(txid) > MAX_TXID || BigInt(seq) > MAX_SEQ) {
    throw apiError('badRequest', 'invalid_cursor', 'cursor is not a next_cursor value from this API')
  }
  return { txid: BigInt(txid).toString(), seq: BigInt(seq).toString() }
}

// The instants PostgreSQL's timestamptz and JavaScript's ISO strings both hold (PostgreSQL has no year 0000).
const EARLIEST_SINCE = Date.parse('0001-01-01T00:00:00Z')
const LATEST_SINCE = Date.parse('9999-12-31T23:59:59.999Z')

/**
 * `since` as the UTC instant it names. The date-time format lets through what PostgreSQL refuses (year 0000,
 * offsets beyond 15:59, years past 9999 once the offset is applied): those are the client's error, not a 500.
 */
function parseSince (since: string | undefined): string | null {
  if (since === undefined) return null
  const time = Date.parse(since)
  if (Number.isNaN(time) || time < EARLIEST_SINCE || time > LATEST_SINCE) {
    throw apiError('badRequest', 'invalid_since', 'since must be an RFC 3339 date-time between 0001-01-01 and 9999-12-31 (UTC)')
  }
  return new Date(time).toISOString()
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
