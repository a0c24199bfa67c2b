import { Type } from 'typebox'
import { DeliveryStatus, noNul, Payload } from './events.js'
import { ref } from './ref.js'

const EventId = Type.String({ format: 'uuid' })
const LeaseId = Type.String({ format: 'uuid', description: 'lease_id returned by POST /api/inbox/lease' })
const EventIds = Type.Array(EventId, { minItems: 1, maxItems: 100, description: 'Only these events of the lease; all when absent' })
const LeaseSeconds = Type.Integer({ minimum: 1, maximum: 3600, default: 300, description: 'How long the events stay invisible to other consumers' })

export const LeaseBody = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 10 }),
  lease_seconds: LeaseSeconds,
  wait_seconds: Type.Integer({ minimum: 0, maximum: 20, default: 0, description: 'Long poll: wait up to this long for events when none are available' }),
  type: Type.Optional(Type.String({ minLength: 1, maxLength: 100, pattern: noNul }))
}, { $id: 'LeaseBody', additionalProperties: false })

export const LeasedEvent = Type.Object({
  event_id: EventId,
  type: Type.String(),
  payload: Payload,
  dedup_id: Type.Union([Type.String(), Type.Null()]),
  source: Type.Union([Type.String(), Type.Null()]),
  created_at: Type.String({ format: 'date-time' }),
  status: Type.Literal('pending', { description: 'Inbox state: a leased event is pending until acknowledged' }),
  delivery_status: DeliveryStatus,
  lease_count: Type.Integer({ description: 'How many times this event has been leased, this lease included' })
}, { $id: 'LeasedEvent' })

export const Lease = Type.Object({
  lease_id: Type.Union([LeaseId, Type.Null()]),
  leased_until: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
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
}, { $id: 'ExtendBody', additionalProperties: false })

export const ExtendResult = Type.Object({
  lease_id: LeaseId,
  leased_until: Type.String({ format: 'date-time' }),
  event_ids: Type.Array(EventId)
}, { $id: 'ExtendResult' })
