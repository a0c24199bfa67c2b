import { Type } from 'typebox'
import { EventFields, EventId, NO_NUL_PATTERN, Timestamp } from './common.js'
import { DeliveryStatus } from './events.js'
import { ref } from './ref.js'

const LeaseId = Type.String({ format: 'uuid', description: 'lease_id returned by POST /api/inbox/lease' })
const EventIds = Type.Array(EventId, { minItems: 1, maxItems: 100, description: 'Only these events of the lease; all when absent' })
const LeaseSeconds = Type.Integer({ minimum: 1, maximum: 3600, default: 300, description: 'How long the events stay invisible to other consumers' })

// Request bodies with defaults stay inline in the OpenAPI document, not among its named schemas: generators
// (openapi-typescript's default options) read a named schema's defaulted properties as always present.
export const LeaseBody = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 10 }),
  lease_seconds: LeaseSeconds,
  wait_seconds: Type.Integer({ minimum: 0, maximum: 20, default: 0, description: 'Long poll: wait up to this long for events when none are available' }),
  type: Type.Optional(Type.String({ minLength: 1, maxLength: 100, pattern: NO_NUL_PATTERN }))
}, { additionalProperties: false })

export const LeasedEvent = Type.Object({
  ...EventFields,
  status: Type.Literal('pending', { description: 'Inbox state: a leased event is pending until acknowledged' }),
  delivery_status: DeliveryStatus,
  lease_count: Type.Integer({ description: 'How many times this event has been leased, this lease included' })
}, { $id: 'LeasedEvent' })

export const Lease = Type.Object({
  lease_id: Type.Union([LeaseId, Type.Null()]),
  leased_until: Type.Union([Timestamp, Type.Null()]),
  events: Type.Array(ref(LeasedEvent))
}, { $id: 'Lease' })

export const LeaseEventsBody = Type.Object({
  lease_id: LeaseId,
  event_ids: Type.Optional(EventIds)
}, { $id: 'LeaseEventsBody', additionalProperties: false })

export const LeaseAckResult = Type.Object({
  acknowledged: Type.Array(EventId),
  not_found: Type.Array(EventId, { description: 'Listed ids not held by this (unexpired) lease' })
}, { $id: 'LeaseAckResult' })

export const ReleaseResult = Type.Object({ released: Type.Array(EventId) }, { $id: 'ReleaseResult' })

export const ExtendBody = Type.Object({
  lease_id: LeaseId,
  lease_seconds: Type.Integer({ minimum: 1, maximum: 3600 })
}, { additionalProperties: false })

export const ExtendResult = Type.Object({
  lease_id: LeaseId,
  leased_until: Timestamp,
  event_ids: Type.Array(EventId)
}, { $id: 'ExtendResult' })
