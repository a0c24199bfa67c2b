import { Type, type Static } from 'typebox'
import { EventTypes, Uuid as Id, Timestamp as timestamp } from './common.js'
import { ref } from './ref.js'

const Url = Type.String({ minLength: 1, maxLength: 2048, description: 'Absolute http(s) URL' })
const Description = Type.String({ maxLength: 1000 })

export const WebhookParams = Type.Object({ id: Id })

export const CreateWebhookBody = Type.Object({
  url: Url,
  event_types: Type.Optional(EventTypes),
  description: Type.Optional(Description)
}, { $id: 'CreateWebhookBody', additionalProperties: false })

export const UpdateWebhookBody = Type.Object({
  url: Type.Optional(Url),
  event_types: Type.Optional(EventTypes),
  description: Type.Optional(Type.Union([Description, Type.Null()])),
  enabled: Type.Optional(Type.Boolean())
}, { $id: 'UpdateWebhookBody', additionalProperties: false, minProperties: 1 })

export const Webhook = Type.Object({
  id: Id,
  url: Type.String(),
  event_types: Type.Array(Type.String()),
  description: Type.Union([Type.String(), Type.Null()]),
  enabled: Type.Boolean(),
  disabled_reason: Type.Union([Type.String(), Type.Null()]),
  secret: Type.String({ description: 'Full only when created or rotated; masked otherwise' }),
  created_at: timestamp,
  updated_at: timestamp
}, { $id: 'Webhook' })

export const WebhookList = Type.Object({ webhooks: Type.Array(ref(Webhook)) }, { $id: 'WebhookList' })

const ATTEMPT_STATUSES = ['succeeded', 'failed'] as const
/** The outcome of one attempt to deliver an event to an endpoint. */
export const AttemptStatus = Type.Enum(ATTEMPT_STATUSES)
export type AttemptStatus = Static<typeof AttemptStatus>

export const DeliveriesQuery = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 50 }),
  cursor: Type.Optional(Type.String({ pattern: '^[0-9]{1,19}$', description: 'next_cursor of the previous page' })),
  status: Type.Optional(AttemptStatus)
}, { additionalProperties: false })

export const Delivery = Type.Object({
  event_id: Id,
  attempt: Type.Integer(),
  status: AttemptStatus,
  response_status: Type.Union([Type.Integer(), Type.Null()]),
  error: Type.Union([Type.String(), Type.Null()]),
  duration_ms: Type.Integer(),
  attempted_at: timestamp,
  next_attempt_at: Type.Union([timestamp, Type.Null()], { description: 'When the next attempt is due; null when none follows' })
}, { $id: 'Delivery', description: 'One attempt to deliver an event to an endpoint' })

export const DeliveryPage = Type.Object({
  deliveries: Type.Array(ref(Delivery)),
  next_cursor: Type.Union([Type.String(), Type.Null()])
}, { $id: 'DeliveryPage' })

export const RedeliverBody = Type.Object({
  webhook_id: Type.Optional(Id)
}, { $id: 'RedeliverBody', additionalProperties: false })

export const RedeliverResult = Type.Object({ queued: Type.Integer({ description: 'Deliveries queued' }) }, { $id: 'RedeliverResult' })

export const WebhookTestResult = Type.Object({
  success: Type.Boolean(),
  response_status: Type.Union([Type.Integer(), Type.Null()]),
  error: Type.Union([Type.String(), Type.Null()]),
  duration_ms: Type.Integer()
}, { $id: 'WebhookTestResult' })
