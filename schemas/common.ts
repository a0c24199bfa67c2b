import { Type } from 'typebox'

/** The pieces every resource's schemas share, declared once. */

export const Uuid = Type.String({ format: 'uuid' })
export const EventId = Type.String({ format: 'uuid', description: 'Event id' })
export const Timestamp = Type.String({ format: 'date-time' })
export const NullableTimestamp = Type.Union([Timestamp, Type.Null()])
export const NullableString = Type.Union([Type.String(), Type.Null()])
// PostgreSQL text cannot hold U+0000, so it is refused at validation time.
export const NO_NUL_PATTERN = '^[^\\u0000]*$'

const EventTypePattern = Type.String({ minLength: 1, maxLength: 101, pattern: '^[A-Za-z0-9._:-]*\\*?$', description: 'An event type, or a prefix ending in *' })
/** Which event types a webhook or subscription gets. */
export const EventTypes = Type.Array(EventTypePattern, { maxItems: 100, description: 'Empty or absent: every type' })

export const Payload = Type.Record(Type.String(), Type.Unknown(), { description: 'Any JSON object' })

/** What every event answer (GET, list, lease) says of the event itself, before the consumer's state. */
export const EventFields = {
  event_id: EventId,
  type: Type.String(),
  payload: Payload,
  dedup_id: NullableString,
  source: NullableString,
  created_at: Timestamp
}

/** A cursor where a stream resumes: an `id:` it sent, a subscription's position or a next_cursor of GET /api/inbox. */
export const StreamCursor = Type.String({ minLength: 1, maxLength: 100, description: 'A cursor: an `id:` of this stream, a subscription\'s position or a next_cursor of GET /api/inbox' })

/** Where a Server-Sent Events stream resumes: the Last-Event-ID header an EventSource sends on reconnect, or `?after`. */
export const StreamResumeQuery = Type.Object({ after: Type.Optional(StreamCursor) }, { additionalProperties: false })
export const StreamResumeHeaders = Type.Object({ 'last-event-id': Type.Optional(StreamCursor) })
