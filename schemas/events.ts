import { Type, type Static } from 'typebox'
import { EventFields, EventId, NO_NUL_PATTERN as noNul, NullableTimestamp, Payload, Timestamp as timestamp } from './common.js'
import { errorResponses } from './errors.js'
import { ref } from './ref.js'
import { EventSubscriptionState } from './subscriptions.js'

export const EVENT_STATUSES = ['pending', 'acknowledged', 'quarantined'] as const
export const EventStatus = Type.Enum(EVENT_STATUSES, { description: 'Inbox state: what lists and leases hand out; push outcomes never change it' })
export type EventStatus = Static<typeof EventStatus>
export const DELIVERY_STATUSES = ['none', 'pending', 'delivered', 'failed'] as const
export const DeliveryStatus = Type.Enum(DELIVERY_STATUSES, {
  description: "Push state: none when no webhook matched, else from each endpoint's latest delivery (failed if any failed, pending if any is pending, delivered when all are)"
})
export type DeliveryStatus = Static<typeof DeliveryStatus>
/** An event's delivery_status as it is stored: pending when a webhook matched, else none. */
export const INITIAL_DELIVERY_STATUSES = ['none', 'pending'] as const satisfies readonly DeliveryStatus[]
export type InitialDeliveryStatus = typeof INITIAL_DELIVERY_STATUSES[number]

export const EventInput = Type.Object({
  type: Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9._:-]+$', examples: ['order.created'] }),
  payload: Payload,
  dedup_id: Type.Optional(Type.String({ minLength: 1, maxLength: 255, pattern: noNul, description: 'Same as the Idempotency-Key header' })),
  source: Type.Optional(Type.String({ minLength: 1, maxLength: 255, pattern: noNul }))
}, { $id: 'EventInput', additionalProperties: false })
export type EventInput = Static<typeof EventInput>

export const IdempotencyHeader = Type.Object({
  'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 255, pattern: noNul, description: 'Same as body dedup_id' }))
})

export const EventAccepted = Type.Object({
  event_id: EventId,
  status: Type.Enum(['accepted', 'duplicate']),
  type: Type.String(),
  created_at: timestamp,
  delivery_status: Type.Optional(Type.Enum(INITIAL_DELIVERY_STATUSES, { description: 'Accepted events only: whether webhooks matched (GET the event for its current states)' }))
}, { $id: 'EventAccepted' })
export type EventAccepted = Static<typeof EventAccepted>

export const Event = Type.Object({
  ...EventFields,
  status: EventStatus,
  delivery_status: DeliveryStatus,
  acknowledged_at: NullableTimestamp
}, { $id: 'Event' })
export type Event = Static<typeof Event>

export const EventDetail = Type.Object({
  ...Event.properties,
  subscriptions: Type.Array(ref(EventSubscriptionState), { description: 'The event\'s state in each subscription whose event_types it matches, oldest subscription first' })
}, { $id: 'EventDetail' })

export const EventParams = Type.Object({ id: EventId })

export const BatchBody = Type.Object({
  events: Type.Array(Type.Unknown({ description: 'An event as in POST /api/events; an invalid item is rejected alone' }), { minItems: 1, maxItems: 100 })
}, { $id: 'BatchBody', additionalProperties: false })

export const BatchItemResult = Type.Object({
  index: Type.Integer(),
  status: Type.Enum(['accepted', 'duplicate', 'rejected']),
  event_id: Type.Optional(EventId),
  delivery_status: Type.Optional(Type.Enum(INITIAL_DELIVERY_STATUSES, { description: 'Accepted items only: whether webhooks matched' })),
  error: Type.Optional(Type.String())
}, { $id: 'BatchItemResult' })

export const BatchResult = Type.Object({
  results: Type.Array(ref(BatchItemResult)),
  accepted: Type.Integer(),
  duplicates: Type.Integer(),
  rejected: Type.Integer()
}, { $id: 'BatchResult' })
export type BatchResult = Static<typeof BatchResult>

export const Acknowledged = Type.Object({
  event_id: EventId,
  status: Type.Literal('acknowledged'),
  acknowledged_at: timestamp
}, { $id: 'Acknowledged' })

export const BulkAckBody = Type.Object({
  event_ids: Type.Array(EventId, { minItems: 1, maxItems: 100 })
}, { $id: 'BulkAckBody', additionalProperties: false })

export const BulkAckResult = Type.Object({
  acknowledged: Type.Array(EventId),
  not_found: Type.Array(EventId)
}, { $id: 'BulkAckResult' })

export const InboxQuery = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 50 }),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'next_cursor of the previous page' })),
  type: Type.Optional(Type.String({ minLength: 1, maxLength: 100, pattern: noNul })),
  status: Type.Enum([...EVENT_STATUSES, 'all'], { default: 'pending', description: 'Inbox state to list' }),
  delivery_status: Type.Optional(DeliveryStatus),
  since: Type.Optional(Type.String({ format: 'date-time', description: 'Only events created at or after this time (years 0001 to 9999, UTC)' }))
}, { additionalProperties: false })
export type InboxQuery = Static<typeof InboxQuery>

export const InboxPage = Type.Object({
  events: Type.Array(ref(Event)),
  count: Type.Integer(),
  next_cursor: Type.String({ description: 'Always present: pass as cursor for the next page, also after an empty or last page to tail the inbox' }),
  has_more: Type.Boolean({ description: 'True when more events are listable right now after this page' })
}, { $id: 'InboxPage' })

/** The route schema shared by both spellings of "acknowledge one event" (POST /api/events/{id}/ack and /api/ack/{id}). */
export const AckOneRoute = {
  tags: ['inbox'],
  summary: 'Acknowledge one event (idempotent)',
  params: EventParams,
  response: { 200: ref(Acknowledged, { description: 'Acknowledged (now or before)' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
}
