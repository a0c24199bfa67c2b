import { Type, type Static } from 'typebox'
import { EventFields, EventId, EventTypes, Timestamp, Uuid } from './common.js'
import { ref } from './ref.js'

const Name = Type.String({ minLength: 1, maxLength: 200, pattern: '^[^\\u0000]*$' })
const MaxInFlight = Type.Integer({ minimum: 1, maximum: 10000, description: 'Events leased and not yet acked at once, across all leases' })
const MaxAttempts = Type.Integer({ minimum: 1, maximum: 1000, description: 'Leases of an event without an ack before it is dead-lettered' })
const RateLimit = Type.Integer({ minimum: 1, maximum: 100000, description: 'Events handed out per second at most, across leases (a bucket of one second\'s worth, empty when the subscription is made)' })
const RetrySchedule = Type.Array(Type.Integer({ minimum: 0, maximum: 86400 }), {
  maxItems: 20,
  description: 'Seconds an event waits before it is handed out again after its n-th lease ended without an ack (ran out or released); the last entry repeats; empty: at once'
})
const POSITIONS = '"now", "beginning", an RFC 3339 date-time (not before the oldest retained day), or a cursor (a next_cursor of GET /api/inbox, or a subscription\'s position)'
const positionOptions = { minLength: 1, maxLength: 100 }

export const SubscriptionParams = Type.Object({ id: Uuid })

// Request bodies with defaults stay inline in the OpenAPI document (see schemas/leases.ts).
export const CreateSubscriptionBody = Type.Object({
  kind: Type.Literal('pull', { description: 'pull: consumers lease and ack (webhook subscriptions are /api/webhooks for now)' }),
  name: Type.Optional(Name),
  event_types: Type.Optional(EventTypes),
  start: Type.String({ ...positionOptions, default: 'now', description: `Where the subscription starts: ${POSITIONS}` }),
  max_in_flight: Type.Integer({ ...MaxInFlight, default: 1000 }),
  max_attempts: Type.Integer({ ...MaxAttempts, default: 5 }),
  rate_limit_per_second: Type.Optional(RateLimit),
  retry_schedule: Type.Optional(RetrySchedule)
}, { additionalProperties: false })
export type CreateSubscriptionBody = Static<typeof CreateSubscriptionBody>

export const UpdateSubscriptionBody = Type.Object({
  name: Type.Optional(Type.Union([Name, Type.Null()])),
  event_types: Type.Optional(EventTypes),
  max_in_flight: Type.Optional(MaxInFlight),
  max_attempts: Type.Optional(MaxAttempts),
  rate_limit_per_second: Type.Optional(Type.Union([RateLimit, Type.Null()], { description: 'null removes the cap' })),
  retry_schedule: Type.Optional(RetrySchedule),
  paused: Type.Optional(Type.Boolean({ description: 'A paused subscription leases nothing and keeps its position' }))
}, { $id: 'UpdateSubscriptionBody', additionalProperties: false, minProperties: 1 })

export const PendingCounts = Type.Object({
  in_flight: Type.Integer({ description: 'Leased and not yet acked' }),
  available: Type.Integer({ description: 'Read from the log and not leased now (new, released, or whose lease expired), ready to be leased' }),
  retrying: Type.Integer({ description: 'Released or whose lease expired, waiting out the retry schedule' }),
  dead: Type.Integer({ description: 'Dead-lettered' })
}, { $id: 'PendingCounts' })

export const Subscription = Type.Object({
  id: Uuid,
  kind: Type.Literal('pull'),
  name: Type.Union([Type.String(), Type.Null()]),
  event_types: Type.Array(Type.String()),
  max_in_flight: Type.Integer(),
  max_attempts: Type.Integer(),
  rate_limit_per_second: Type.Union([Type.Integer(), Type.Null()], { description: 'Events handed out per second at most; null: no cap' }),
  retry_schedule: Type.Array(Type.Integer(), { description: 'Seconds before an event is handed out again after its n-th unacked lease (the last repeats)' }),
  paused: Type.Boolean(),
  position: Type.String({ description: 'The ack floor as a cursor: every matching event up to it is acked or dead-lettered' }),
  position_expired: Type.Boolean({ description: 'Events after the position that the subscription had not acked were dropped by retention: it goes on from the oldest retained event. A seek clears it' }),
  position_expired_at: Type.Union([Timestamp, Type.Null()], { description: 'When retention dropped them' }),
  pending: ref(PendingCounts),
  created_at: Timestamp,
  updated_at: Timestamp
}, { $id: 'Subscription' })

export const SubscriptionList = Type.Object({ subscriptions: Type.Array(ref(Subscription)) }, { $id: 'SubscriptionList' })

export const SeekBody = Type.Object({
  to: Type.String({ ...positionOptions, description: `Where to move the subscription: ${POSITIONS}` })
}, { $id: 'SeekBody', additionalProperties: false })

export const DeadLettersQuery = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 50 })
}, { additionalProperties: false })

export const DeadLetter = Type.Object({
  event_id: EventId,
  type: EventFields.type,
  payload: EventFields.payload,
  created_at: Timestamp,
  lease_count: Type.Integer({ description: 'Leases the event had without an ack' }),
  dead_at: Timestamp
}, { $id: 'DeadLetter' })

export const DeadLetterList = Type.Object({ events: Type.Array(ref(DeadLetter)) }, { $id: 'DeadLetterList' })

export const RedriveBody = Type.Object({
  event_ids: Type.Optional(Type.Array(EventId, { minItems: 1, maxItems: 1000, description: 'Only these dead letters; all when absent' }))
}, { $id: 'RedriveBody', additionalProperties: false })

export const RedriveResult = Type.Object({ redriven: Type.Integer({ description: 'Dead letters made available again' }) }, { $id: 'RedriveResult' })

export const ReplayParams = Type.Object({ id: Uuid, replay_id: Uuid })

export const ReplayBody = Type.Object({
  from: Type.String({ minLength: 1, maxLength: 100, description: 'RFC 3339 date-time: the range starts here (inclusive), not before the oldest retained day' }),
  to: Type.String({ minLength: 1, maxLength: 100, description: 'RFC 3339 date-time: the range ends here (exclusive); a time after now means now' })
}, { $id: 'ReplayBody', additionalProperties: false })

export const Replay = Type.Object({
  replay_id: Uuid,
  subscription_id: Uuid,
  from: Timestamp,
  to: Timestamp,
  total: Type.Integer({ description: 'Events of the range that match the subscription\'s types' }),
  done: Type.Integer({ description: 'Events of the range handed to the subscription again and since acked or dead-lettered' }),
  status: Type.Union([Type.Literal('running'), Type.Literal('finished'), Type.Literal('cancelled')], {
    description: 'running until every event of the range has been handed out and acked or dead-lettered; cancelled stops reading the range (what was handed out stays)'
  }),
  created_at: Timestamp
}, { $id: 'Replay' })

export const ReplayList = Type.Object({ replays: Type.Array(ref(Replay)) }, { $id: 'ReplayList' })

export const EventSubscriptionState = Type.Object({
  subscription_id: Uuid,
  name: Type.Union([Type.String(), Type.Null()]),
  state: Type.Union([Type.Literal('waiting'), Type.Literal('available'), Type.Literal('in_flight'), Type.Literal('done'), Type.Literal('dead')], {
    description: 'waiting: not handed out yet; available: read, not leased now (new, released, expired or waiting out its retry schedule); in_flight: leased now; done: acked, or at or before the subscription\'s position; dead: dead-lettered'
  }),
  lease_count: Type.Integer({ description: 'Leases of the event in this subscription so far (0 once its row is gone)' })
}, { $id: 'EventSubscriptionState' })
